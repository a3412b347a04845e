"""Gaps of the issue's feature list, closed: Kafka 2.1 version ranges, the per-record read path.

- Kafka 2.1 compatibility: a fake cluster advertising exactly Kafka 2.1.0's
  ApiVersions ranges; the client must pick versions inside them and still
  produce (idempotently), consume, commit and read committed offsets.
- getone()/`async for` take records one by one through the fetcher's fast path;
  pause, seek and position must behave exactly as through getmany().
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from client.consumer import Consumer
from client.producer import Producer
from client.protocol.api_keys import ApiKey, api_versions_keys
from client.protocol.messages import api_versions
from client.structs import TopicPartition
from tests.client.fake_broker import FakeCluster

T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)

# What an Apache Kafka 2.1.0 broker answers to ApiVersions (max version per API).
KAFKA_2_1_MAX = {
    ApiKey.PRODUCE: 7,
    ApiKey.FETCH: 10,
    ApiKey.LIST_OFFSETS: 4,
    ApiKey.METADATA: 7,
    ApiKey.OFFSET_COMMIT: 6,
    ApiKey.OFFSET_FETCH: 5,
    ApiKey.FIND_COORDINATOR: 2,
    ApiKey.JOIN_GROUP: 3,
    ApiKey.HEARTBEAT: 2,
    ApiKey.LEAVE_GROUP: 2,
    ApiKey.SYNC_GROUP: 2,
    ApiKey.DESCRIBE_GROUPS: 2,
    ApiKey.LIST_GROUPS: 2,
    ApiKey.API_VERSIONS: 2,
    ApiKey.CREATE_TOPICS: 3,
    ApiKey.DELETE_TOPICS: 3,
    ApiKey.INIT_PRODUCER_ID: 1,
    ApiKey.DESCRIBE_CONFIGS: 2,
    ApiKey.CREATE_PARTITIONS: 1,
    ApiKey.DELETE_GROUPS: 1,
}


class Kafka21Cluster(FakeCluster):
    """The fake cluster, advertising Kafka 2.1.0's version ranges."""

    def _ApiVersionsRequest(self, node_id: int, header: Any, body: Any) -> Any:
        keys = tuple(
            api_versions.ApiVersion(
                api_key=k.api_key,
                min_version=k.min_version,
                max_version=min(k.max_version, KAFKA_2_1_MAX[ApiKey(k.api_key)]),
            )
            for k in api_versions_keys()
            if k.api_key in KAFKA_2_1_MAX
        )
        return api_versions.ApiVersionsResponse(api_keys=keys)


async def test_kafka_2_1_versions_are_negotiated_and_everything_works() -> None:
    cluster = Kafka21Cluster(nodes=2)
    await cluster.start()
    try:
        cluster.create_topic("t", 2)
        async with Producer(cluster.bootstrap, linger_ms=0) as p:
            for i in range(20):
                await p.send("t", b"v%d" % i, key=b"k%d" % i, headers=[("h", b"%d" % i)])
            await p.flush()
            conn = await p.client.connection(1)
            assert conn.api_versions[ApiKey.PRODUCE] == 7
            assert conn.api_versions[ApiKey.METADATA] == 7
            assert "InitProducerIdRequest" in {name for _n, name in cluster.requests}
        async with Consumer(
            bootstrap_servers=cluster.bootstrap, group_id="g", auto_offset_reset="earliest"
        ) as c:
            c.assign([T0, T1])
            got: list[bytes | None] = []
            while len(got) < 20:
                for recs in (await c.getmany(timeout_ms=5000)).values():
                    got.extend(r.value for r in recs)
            assert sorted(got) == sorted(b"v%d" % i for i in range(20))
            conn = await c.client.connection(1)
            assert conn.api_versions[ApiKey.FETCH] == 10
            assert conn.api_versions[ApiKey.LIST_OFFSETS] == 4
            await c.commit()
            committed = await c.committed(T0)
            assert committed is not None and committed.offset == await c.position(T0)
    finally:
        await cluster.close()


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    c = FakeCluster(nodes=1)
    await c.start()
    c.create_topic("t", 2)
    async with Producer(c.bootstrap, linger_ms=0, batch_bytes_max=256) as p:
        for i in range(60):
            await p.send("t", b"v%d" % i, partition=i % 2)
        await p.flush()
    yield c
    await c.close()


async def test_one_by_one_reads_honour_pause_seek_and_position(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T0, T1])
        seen: dict[TopicPartition, list[int]] = {T0: [], T1: []}
        async for r in c:
            seen[r.tp].append(r.offset)
            assert await c.position(r.tp) == r.offset + 1
            if sum(map(len, seen.values())) == 10:
                break
        for offsets in seen.values():  # each partition in order, none skipped
            assert offsets == list(range(len(offsets)))
        c.pause(T0)
        after_pause = [await c.getone() for _ in range(5)]
        assert {r.tp for r in after_pause} == {T1}
        c.seek(T0, 3)
        c.resume(T0)
        while (r := await c.getone()).tp != T0:
            pass
        assert r.offset == 3
        assert await c.position(T0) == 4
        rest = [await c.getone(T0) for _ in range(26)]
        assert [r.offset for r in rest] == list(range(4, 30))


async def test_getmany_after_one_by_one_continues_without_gaps(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T0])
        first = [await c.getone() for _ in range(3)]
        offsets = [r.offset for r in first]
        while len(offsets) < 30:
            for recs in (await c.getmany(timeout_ms=5000, max_records=4)).values():
                assert len(recs) <= 4
                offsets.extend(r.offset for r in recs)
        assert offsets == list(range(30))
