"""The accumulator: linger, batch limits, bounded memory, fair drain, ordered retries."""

from __future__ import annotations

from client.accumulator import Accumulator, Headers, ProducerBatch
from client.protocol.records import RecordBatchBuilder, decode_batch
from client.structs import TopicPartition

T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)
T2 = TopicPartition("u", 0)
LEADERS = {T0: 1, T1: 2, T2: 1}


class FakeBuilder:
    """Holds `capacity` records; the real size arithmetic is the records module's business."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.values: list[bytes | None] = []

    def append(
        self, key: bytes | None, value: bytes | None, headers: Headers, timestamp_ms: int
    ) -> bool:
        if len(self.values) >= self.capacity:
            return False
        self.values.append(value)
        return True


def acc(capacity: int = 3, **kw: int) -> Accumulator:
    kw.setdefault("batch_bytes_max", 100)
    kw.setdefault("linger_ms", 10)
    kw.setdefault("buffer_bytes_max", 1000)
    return Accumulator(lambda tp, n: FakeBuilder(capacity), **kw)  # type: ignore[arg-type]


def put(a: Accumulator, tp: TopicPartition, v: bytes, now: int = 0) -> tuple[ProducerBatch, int]:
    r = a.append(tp, None, v, (), 0, now, len(v))
    assert r is not None
    return r


def test_records_fill_a_batch_then_open_the_next() -> None:
    a = acc(capacity=2)
    b1, i1 = put(a, T0, b"a")
    b2, i2 = put(a, T0, b"b")
    b3, i3 = put(a, T0, b"c")
    assert b1 is b2 and (i1, i2) == (0, 1)
    assert b3 is not b1 and i3 == 0 and b1.full
    assert a.incomplete == 2 and a.buffered_bytes == 200


def test_linger_decides_readiness_of_a_partial_batch() -> None:
    a = acc()
    put(a, T0, b"x", now=100)
    check = a.ready(105, LEADERS.__getitem__)
    assert check.nodes == frozenset() and check.next_check_ms == 5
    assert a.ready(110, LEADERS.__getitem__).nodes == {1}


def test_full_batch_and_flush_are_ready_at_once() -> None:
    a = acc(capacity=1)
    put(a, T0, b"x")
    put(a, T0, b"y")  # first batch is now full
    assert a.ready(0, LEADERS.__getitem__).nodes == {1}
    b = acc()
    put(b, T1, b"x")
    b.flushing += 1
    assert b.ready(0, LEADERS.__getitem__).nodes == {2}


def test_unknown_leader_is_reported_by_topic() -> None:
    a = acc()
    put(a, T0, b"x")
    check = a.ready(1000, lambda tp: -1)
    assert check.nodes == frozenset() and check.unknown_leaders == {"t"}


def test_drain_groups_by_leader_and_respects_request_size() -> None:
    a = acc(capacity=1, linger_ms=0)
    put(a, T0, b"a")
    put(a, T1, b"b")
    put(a, T2, b"c")
    out = a.drain({1, 2}, request_bytes_max=150, now_ms=0, leader_for=LEADERS.__getitem__)
    assert {tp for b in out[1] for tp in [b.tp]} in ({T0}, {T2})  # 2 x 100 bytes > 150
    assert [b.tp for b in out[2]] == [T1]
    rest = a.drain({1}, request_bytes_max=150, now_ms=0, leader_for=LEADERS.__getitem__)
    assert len(rest[1]) == 1 and rest[1][0].tp != out[1][0].tp


def test_one_batch_in_flight_per_partition_keeps_order() -> None:
    a = acc(capacity=1, linger_ms=0)
    first, _ = put(a, T0, b"a")
    second, _ = put(a, T0, b"b")
    out = a.drain({1}, 10**6, 0, LEADERS.__getitem__)
    assert out[1] == [first]
    assert a.drain({1}, 10**6, 0, LEADERS.__getitem__) == {}
    a.complete(first)
    assert a.drain({1}, 10**6, 0, LEADERS.__getitem__)[1] == [second]


def test_retry_goes_first_after_backoff_and_in_flight_return() -> None:
    a = acc(capacity=1, linger_ms=0, retry_backoff_ms=50, in_flight_per_partition_max=5)
    a.assign_sequences = True
    batches = [put(a, T0, v)[0] for v in (b"a", b"b", b"c")]
    sent = []
    for _ in range(3):
        sent += a.drain({1}, 10**6, 0, LEADERS.__getitem__).get(1, [])
    assert sent == batches and [b.base_sequence for b in sent] == [0, 1, 2]
    a.requeue(batches[0], now_ms=10)  # first failed, two still in flight
    assert a.ready(100, LEADERS.__getitem__).nodes == frozenset()  # halted
    a.requeue(batches[1], now_ms=12)
    a.complete(batches[2])  # would be OUT_OF_ORDER in reality; treat as done for the test
    assert a.ready(30, LEADERS.__getitem__).next_check_ms == 30  # backoff until 60
    again = a.drain({1}, 10**6, 60, LEADERS.__getitem__)[1]
    assert again == [batches[0]] and again[0].attempts == 2 and again[0].base_sequence == 0
    # Still halted: the second retry waits for the first to return.
    assert a.drain({1}, 10**6, 100, LEADERS.__getitem__) == {}
    a.complete(batches[0])
    assert a.drain({1}, 10**6, 100, LEADERS.__getitem__)[1] == [batches[1]]


def test_buffer_is_bounded_and_freed_on_completion() -> None:
    a = acc(capacity=1, buffer_bytes_max=200, linger_ms=0)
    put(a, T0, b"a")
    put(a, T1, b"b")
    assert a.append(T2, None, b"c", (), 0, 0, 1) is None
    assert not a.has_room(1)
    b = a.drain({1}, 10**6, 0, LEADERS.__getitem__)[1][0]
    a.complete(b)
    assert a.has_room(1) and a.buffered_bytes == 100
    assert a.append(T2, None, b"c", (), 0, 0, 1) is not None


def test_oversized_record_reserves_its_own_size() -> None:
    a = acc(capacity=1, buffer_bytes_max=1000)
    batch, _ = put(a, T0, b"x" * 500)
    assert batch.bytes_reserved == 500 and a.buffered_bytes == 500


def test_a_lone_record_larger_than_the_buffer_is_still_accepted_when_idle() -> None:
    a = acc(capacity=1, buffer_bytes_max=100)
    assert a.append(T0, None, b"x" * 5000, (), 0, 0, 5000) is not None


def test_expire_and_abort_release_memory() -> None:
    a = acc(capacity=1)
    put(a, T0, b"a", now=0)
    put(a, T1, b"b", now=50)
    assert [b.tp for b in a.expire(now_ms=60, delivery_timeout_ms=30)] == [T0]
    assert [b.tp for b in a.abort_undrained()] == [T1]
    assert a.buffered_bytes == 0 and a.incomplete == 0


def test_reset_sequences_after_new_producer_epoch() -> None:
    a = acc(capacity=1, linger_ms=0, assign_sequences=True)
    b, _ = put(a, T0, b"a")
    a.drain({1}, 10**6, 0, LEADERS.__getitem__)
    a.requeue(b, 0)
    a.reset_sequences(T0)
    assert b.base_sequence == -1
    a.drain({1}, 10**6, 1000, LEADERS.__getitem__)
    assert b.base_sequence == 0


def test_with_the_real_record_batch_builder() -> None:
    a = Accumulator(
        lambda tp, n: RecordBatchBuilder(batch_bytes_max=n), batch_bytes_max=200, linger_ms=0
    )
    for i in range(20):
        assert a.append(T0, b"k", b"v%d" % i, (), 1000 + i, 0, 10) is not None
    batches = []
    while (out := a.drain({1}, 10**6, 0, LEADERS.__getitem__)).get(1):
        batches += out[1]
        for b in out[1]:
            a.complete(b)
    assert len(batches) > 1
    values = [
        r.value
        for b in batches
        for r in decode_batch(b.builder.build()).records  # type: ignore[attr-defined]
    ]
    assert values == [b"v%d" % i for i in range(20)]
