"""The producer against the in-process fake cluster: routing, batching, retries, idempotence."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from client.errors import KafkaError, KafkaTimeoutError, RecordTooLargeError
from client.partitioner import partition_for_key
from client.producer import Producer
from client.protocol import records
from tests.client.fake_broker import FakeCluster


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    c = FakeCluster(nodes=2)
    await c.start()
    c.create_topic("t", 4)
    yield c
    await c.close()


async def test_send_and_wait_returns_offsets(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, linger_ms=0) as p:
        md1 = await p.send_and_wait("t", b"a", partition=1)
        md2 = await p.send_and_wait("t", b"b", partition=1)
    assert (md1.topic, md1.partition, md1.offset) == ("t", 1, 0)
    assert md2.offset == 1
    assert cluster.values("t", 1) == [b"a", b"b"]


async def test_keyed_records_follow_murmur2(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap) as p:
        futures = [await p.send("t", b"v%d" % i, key=b"k%d" % i) for i in range(40)]
        mds = [await f for f in futures]
    for i, md in enumerate(mds):
        assert md.partition == partition_for_key(b"k%d" % i, 4)
        assert cluster.values("t", md.partition)[md.offset] == b"v%d" % i


async def test_many_records_are_batched_in_order(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, linger_ms=50, batch_bytes_max=4096) as p:
        futures = [await p.send("t", b"%05d" % i, partition=2) for i in range(2000)]
        await p.flush()
        assert all(f.done() for f in futures)
    assert cluster.values("t", 2) == [b"%05d" % i for i in range(2000)]
    produces = [r for r in cluster.requests if r[1] == "ProduceRequest"]
    assert len(produces) < 100  # batched, not one request per record
    assert [f.result().offset for f in futures] == list(range(2000))


async def test_headers_timestamps_and_compression(cluster: FakeCluster) -> None:
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        async with Producer(cluster.bootstrap, compression=codec) as p:
            md = await p.send_and_wait(
                "t", b"x" * 100, key=b"k", partition=3, timestamp_ms=1234, headers=[("h", b"v")]
            )
        assert md.timestamp_ms == 1234
        _base, data = cluster.topics["t"][3].batches[-1]
        decoded = records.decode_batch(data)
        assert decoded.header.compression == records.Codec[codec.upper()]
        r = decoded.records[0]
        assert (r.key, r.value, r.headers, r.timestamp_ms) == (
            b"k",
            b"x" * 100,
            (("h", b"v"),),
            1234,
        )


async def test_idempotent_by_default_and_sequences_stamped(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, linger_ms=0) as p:
        assert p.idempotent
        for i in range(3):
            await p.send_and_wait("t", b"%d" % i, partition=0)
    headers = [records.read_batch_header(d) for _b, d in cluster.topics["t"][0].batches]
    assert all(h.producer_id > 0 for h in headers)
    assert [h.base_sequence for h in headers] == [0, 1, 2]
    assert all(records.batch_crc_ok(d) for _b, d in cluster.topics["t"][0].batches)


async def test_retriable_error_is_retried_without_loss_or_reorder(cluster: FakeCluster) -> None:
    cluster.produce_errors[("t", 0)] = [7, 7]  # REQUEST_TIMED_OUT twice
    async with Producer(cluster.bootstrap, linger_ms=0, retry_backoff_ms=5) as p:
        futures = [await p.send("t", b"%d" % i, partition=0) for i in range(50)]
        offsets = [(await f).offset for f in futures]
    assert cluster.values("t", 0) == [b"%d" % i for i in range(50)]
    assert offsets == list(range(50))


async def test_leader_move_is_followed(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, linger_ms=0, retry_backoff_ms=5) as p:
        await p.send_and_wait("t", b"before", partition=0)
        old = cluster.topics["t"][0].leader
        cluster.move_leader("t", 0, 2 if old == 1 else 1)
        md = await p.send_and_wait("t", b"after", partition=0)
    assert md.offset == 1
    assert cluster.values("t", 0) == [b"before", b"after"]


async def test_connection_drop_retries_idempotently(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, linger_ms=0, retry_backoff_ms=5) as p:
        futures = [await p.send("t", b"%d" % i, partition=1) for i in range(20)]
        cluster.drop_connections()
        futures += [await p.send("t", b"%d" % i, partition=1) for i in range(20, 40)]
        await p.flush()
        assert [f.exception() for f in futures] == [None] * 40
    assert cluster.values("t", 1) == [b"%d" % i for i in range(40)]


async def test_fatal_error_fails_the_records(cluster: FakeCluster) -> None:
    cluster.produce_errors[("t", 2)] = [10]  # MESSAGE_TOO_LARGE
    async with Producer(cluster.bootstrap, linger_ms=0) as p:
        with pytest.raises(KafkaError) as info:
            await p.send_and_wait("t", b"x", partition=2)
        assert info.value.code == 10
        assert (await p.send_and_wait("t", b"y", partition=2)).offset == 0


async def test_close_flushes_everything(cluster: FakeCluster) -> None:
    p = Producer(cluster.bootstrap, linger_ms=10_000)
    await p.start()
    futures = [await p.send("t", b"%d" % i, partition=3) for i in range(10)]
    await p.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(cluster.values("t", 3)) == 10


async def test_back_pressure_waits_for_buffer_space(cluster: FakeCluster) -> None:
    async with Producer(
        cluster.bootstrap, linger_ms=0, batch_bytes_max=1024, buffer_bytes_max=2048
    ) as p:
        futures = [await p.send("t", b"x" * 600, partition=i % 4) for i in range(30)]
        assert p._acc.buffered_bytes <= 2048
        await asyncio.gather(*futures)
    assert sum(len(cluster.values("t", i)) for i in range(4)) == 30


async def test_too_large_record_is_refused(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, request_bytes_max=1000) as p:
        with pytest.raises(RecordTooLargeError):
            await p.send("t", b"x" * 2000)


async def test_unknown_topic_times_out(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, max_block_ms=200, retry_backoff_ms=20) as p:
        with pytest.raises(KafkaTimeoutError):
            await p.send("missing", b"x")


async def test_topic_created_later_is_found(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap, retry_backoff_ms=10) as p:
        asked = sum(1 for r in cluster.requests if r[1] == "MetadataRequest")
        task = asyncio.ensure_future(p.send_and_wait("late", b"x"))
        while sum(1 for r in cluster.requests if r[1] == "MetadataRequest") <= asked:
            await asyncio.sleep(0.005)  # wait for the producer to miss the topic once
        assert not task.done()
        cluster.create_topic("late", 1)
        assert (await task).offset == 0


async def test_null_keys_stick_then_spread(cluster: FakeCluster) -> None:
    async with Producer(
        cluster.bootstrap, batch_bytes_max=1024, linger_ms=0, rng=random.Random(4)
    ) as p:
        futures = [await p.send("t", b"x" * 100) for _ in range(200)]
        partitions = [(await f).partition for f in futures]
    assert partitions[0] == partitions[1] == partitions[5]
    assert len(set(partitions)) > 1


async def test_partition_out_of_range_is_refused_at_once(cluster: FakeCluster) -> None:
    async with Producer(cluster.bootstrap) as p:
        with pytest.raises(KafkaError) as info:
            await p.send("t", b"x", partition=4)
        assert info.value.code == 3


async def test_unknown_producer_id_gets_a_new_id_and_restarts_sequences(
    cluster: FakeCluster,
) -> None:
    async with Producer(cluster.bootstrap, linger_ms=0, retry_backoff_ms=5) as p:
        await p.send_and_wait("t", b"a", partition=0)
        cluster.produce_errors[("t", 0)] = [59]  # UNKNOWN_PRODUCER_ID
        md = await p.send_and_wait("t", b"b", partition=0)
        assert p.producer_id_resets == 1
        await p.send_and_wait("t", b"c", partition=0)
    assert md.offset == 1
    assert cluster.values("t", 0) == [b"a", b"b", b"c"]
    headers = [records.read_batch_header(d) for _b, d in cluster.topics["t"][0].batches]
    assert headers[0].producer_id != headers[1].producer_id == headers[2].producer_id
    assert [h.base_sequence for h in headers] == [0, 0, 1]
    assert sum(1 for _n, name in cluster.requests if name == "InitProducerIdRequest") == 2
