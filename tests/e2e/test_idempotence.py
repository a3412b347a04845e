"""The idempotent producer, driven over a raw socket with hand-numbered batches.

Real clients hide the sequence numbers; here the test picks them, so it can replay an
acknowledged batch (the broker must answer with the original offset and append nothing),
skip sequence numbers (OUT_OF_ORDER_SEQUENCE_NUMBER, 45) and write with a fenced epoch
(INVALID_PRODUCER_EPOCH, 47), and check that a replay is still caught after a crash.
"""

from __future__ import annotations

from collections.abc import Callable

from client.protocol.messages.init_producer_id import InitProducerIdRequest
from client.protocol.messages.list_offsets import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from client.protocol.messages.produce import PartitionProduceResponse
from tests.e2e.conftest import (
    RawClient,
    create_topic,
    partition_response,
    produce_request,
    simple_batch,
    wait_partition_served,
)
from tests.harness import BrokerProcess

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


def _init_producer_id(raw: RawClient, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
    request = InitProducerIdRequest(
        transactional_id=None,
        transaction_timeout_ms=60_000,
        producer_id=producer_id,
        producer_epoch=epoch,
    )
    response = raw.request(request, 4)
    assert response.error_code == 0, response
    return response.producer_id, response.producer_epoch


def _batch(producer_id: int, epoch: int, sequence: int, count: int) -> bytes:
    return simple_batch(
        count, producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence
    )


def _send(raw: RawClient, topic: str, batch: bytes) -> PartitionProduceResponse:
    return partition_response(raw.request(produce_request(topic, 0, batch), 9))


def _log_end(raw: RawClient, topic: str) -> int:
    request = ListOffsetsRequest(
        replica_id=-1,
        topics=(
            ListOffsetsTopic(
                name=topic, partitions=(ListOffsetsPartition(partition_index=0, timestamp=-1),)
            ),
        ),
    )
    part = raw.request(request, 7).topics[0].partitions[0]
    assert part.error_code == 0
    return int(part.offset)


def test_init_producer_id_hands_out_distinct_ids(broker: BrokerProcess) -> None:
    with RawClient(broker.kafka_address) as raw:
        ids = [_init_producer_id(raw) for _ in range(5)]
    assert len({pid for pid, _ in ids}) == 5
    assert all(pid >= 0 and epoch == 0 for pid, epoch in ids)


def test_replayed_batches_get_their_original_offsets(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    topic = fresh_topic("idem")
    with RawClient(broker.kafka_address) as raw:
        create_topic(raw, topic)
        pid, epoch = _init_producer_id(raw)
        batches = [_batch(pid, epoch, seq, 3) for seq in range(0, 18, 3)]  # six batches
        offsets = []
        for batch in batches:
            part = _send(raw, topic, batch)
            assert part.error_code == 0, part
            offsets.append(part.base_offset)
        assert offsets == list(range(0, 18, 3))
        end = _log_end(raw, topic)
        assert end == 18
        # Each of the last five batches, resent, is acknowledged with its original offset.
        for batch, offset in reversed(list(zip(batches[1:], offsets[1:]))):
            part = _send(raw, topic, batch)
            assert (part.error_code, part.base_offset) == (0, offset)
        assert _log_end(raw, topic) == end  # nothing appended twice
        # And the producer carries on where it left off.
        part = _send(raw, topic, _batch(pid, epoch, 18, 1))
        assert (part.error_code, part.base_offset) == (0, 18)


def test_sequence_gap_is_out_of_order(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    topic = fresh_topic("idem-gap")
    with RawClient(broker.kafka_address) as raw:
        create_topic(raw, topic)
        pid, epoch = _init_producer_id(raw)
        assert _send(raw, topic, _batch(pid, epoch, 0, 5)).error_code == 0
        gap = _send(raw, topic, _batch(pid, epoch, 7, 2))
        assert gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert _log_end(raw, topic) == 5
        # The same connection goes on with the right sequence.
        part = _send(raw, topic, _batch(pid, epoch, 5, 2))
        assert (part.error_code, part.base_offset) == (0, 5)


def test_stale_epoch_is_fenced(broker: BrokerProcess, fresh_topic: Callable[[str], str]) -> None:
    topic = fresh_topic("idem-epoch")
    with RawClient(broker.kafka_address) as raw:
        create_topic(raw, topic)
        pid, epoch = _init_producer_id(raw)
        assert _send(raw, topic, _batch(pid, epoch, 0, 2)).error_code == 0
        # KIP-360: the producer bumps its epoch and starts its sequences again at 0.
        pid_again, new_epoch = _init_producer_id(raw, pid, epoch)
        assert (pid_again, new_epoch) == (pid, epoch + 1)
        part = _send(raw, topic, _batch(pid, new_epoch, 0, 2))
        assert (part.error_code, part.base_offset) == (0, 2)
        stale = _send(raw, topic, _batch(pid, epoch, 2, 2))
        assert stale.error_code == INVALID_PRODUCER_EPOCH
        assert _log_end(raw, topic) == 4


def test_replay_after_crash_and_restart_gets_original_offset(
    own_broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    topic = fresh_topic("idem-crash")
    with RawClient(own_broker.kafka_address) as raw:
        create_topic(raw, topic)
        pid, epoch = _init_producer_id(raw)
        batches = [_batch(pid, epoch, seq, 4) for seq in range(0, 12, 4)]
        for i, batch in enumerate(batches):
            part = _send(raw, topic, batch)
            assert (part.error_code, part.base_offset) == (0, 4 * i)
    own_broker.kill()
    own_broker.restart()
    with RawClient(own_broker.kafka_address, deadline_s=10.0) as raw:
        wait_partition_served(raw, topic)
        for batch, offset in [(batches[-1], 8), (batches[0], 0)]:
            part = _send(raw, topic, batch)
            assert (part.error_code, part.base_offset) == (0, offset), part
        assert _log_end(raw, topic) == 12
        assert (
            _send(raw, topic, _batch(pid, epoch, 20, 1)).error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
        )
        part = _send(raw, topic, _batch(pid, epoch, 12, 1))
        assert (part.error_code, part.base_offset) == (0, 12)


def test_retry_racing_its_original_gets_the_same_offset(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    """A retry pipelined right behind its original (still in flight, not yet committed)
    is not appended again and is answered with the original's offset, as Kafka does.
    Answering it with an error instead makes librdkafka treat the batch as possibly
    persisted and desynchronise its sequence numbers (a chaos run found this)."""
    topic = fresh_topic("race")
    with RawClient(broker.kafka_address) as raw:
        create_topic(raw, topic)
        wait_partition_served(raw, topic)
        producer_id, epoch = _init_producer_id(raw)
        start = _log_end(raw, topic)
        for round_ in range(20):
            batch = _batch(producer_id, epoch, round_ * 3, 3)
            first = raw.send(produce_request(topic, 0, batch), 9)
            second = raw.send(produce_request(topic, 0, batch), 9)
            answers = [partition_response(raw.recv().response) for _ in (first, second)]
            assert [a.error_code for a in answers] == [0, 0], answers
            assert answers[0].base_offset == answers[1].base_offset == start + round_ * 3
        assert _log_end(raw, topic) == start + 60
