"""The consumer against the in-process fake cluster: assign, seek, reset, commit, pause."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from client.consumer import Consumer
from client.fetcher import OffsetOutOfRangeError
from client.producer import Producer
from client.structs import TopicPartition
from tests.client.fake_broker import FakeCluster

T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    c = FakeCluster(nodes=2)
    await c.start()
    c.create_topic("t", 2)
    async with Producer(c.bootstrap, linger_ms=0, batch_bytes_max=512) as p:
        for i in range(100):
            await p.send(
                "t", b"v%d" % i, key=b"k%d" % i, partition=i % 2, headers=[("i", b"%d" % i)]
            )
        await p.flush()
    yield c
    await c.close()


async def drain(c: Consumer, n: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    while len(out) < n:
        got = await c.getmany(timeout_ms=5000)
        assert got, "no records within 5 s"
        for records in got.values():
            out.extend(r.value for r in records)
    return out


async def test_assign_from_earliest_reads_everything_in_order(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T0])
        values = await drain(c, 50)
        assert values == [b"v%d" % i for i in range(0, 100, 2)]
        assert await c.position(T0) == 50
        assert c.highwater(T0) == 50
        assert await c.getmany(timeout_ms=50) == {}


async def test_records_carry_key_headers_offsets(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T1])
        r = await c.getone()
        assert (r.topic, r.partition, r.offset, r.key, r.value) == ("t", 1, 0, b"k1", b"v1")
        assert r.headers == (("i", b"1"),)
        assert r.timestamp_ms > 0


async def test_latest_only_sees_new_records(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap) as c:
        c.assign([T0])
        assert await c.position(T0) == 50
        async with Producer(cluster.bootstrap, linger_ms=0) as p:
            await p.send_and_wait("t", b"new", partition=0)
        assert (await c.getone()).value == b"new"


async def test_seek_and_seek_to_beginning_and_end(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T0, T1])
        await c.getmany(timeout_ms=2000)
        c.seek(T0, 10)
        r = await c.getone(T0)
        assert r.offset == 10 and r.value == b"v20"
        await c.seek_to_end(T0)
        assert await c.position(T0) == 50
        await c.seek_to_beginning(T0)
        assert (await c.getone(T0)).offset == 0


async def test_max_records_and_getone_iteration(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T1])
        got = await c.getmany(timeout_ms=2000, max_records=7)
        assert sum(len(v) for v in got.values()) == 7
        seen = []
        async for r in c:
            seen.append(r.offset)
            if r.offset == 49:
                break
        assert seen == list(range(7, 50))


async def test_pause_and_resume(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T0, T1])
        c.pause(T0)
        assert c.paused() == {T0}
        values = await drain(c, 50)
        assert all(int(v[1:]) % 2 == 1 for v in values if v)  # only partition 1
        assert await c.getmany(timeout_ms=50) == {}
        c.resume(T0)
        assert len(await drain(c, 50)) == 50


async def test_commit_and_committed_and_resume_from_commit(cluster: FakeCluster) -> None:
    async with Consumer(
        bootstrap_servers=cluster.bootstrap,
        group_id="g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    ) as c:
        c.assign([T0])
        assert await c.committed(T0) is None
        got = await c.getmany(timeout_ms=2000, max_records=5)
        assert [r.offset for r in got[T0]] == [0, 1, 2, 3, 4]
        await c.commit()
        assert (await c.committed(T0)).offset == 5  # type: ignore[union-attr]
    async with Consumer(bootstrap_servers=cluster.bootstrap, group_id="g") as c2:
        c2.assign([T0])
        assert (await c2.getone()).offset == 5


async def test_out_of_range_resets_by_policy(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T0])
        c.seek(T0, 1000)
        assert (await c.getone()).offset == 0
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="none") as c:
        c.assign([T0])
        c.seek(T0, 1000)
        with pytest.raises(OffsetOutOfRangeError):
            await c.getmany(timeout_ms=5000)


async def test_leader_move_is_followed(cluster: FakeCluster) -> None:
    async with Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([T0])
        await drain(c, 50)
        leader = cluster.topics["t"][0].leader
        cluster.move_leader("t", 0, 2 if leader == 1 else 1)
        async with Producer(cluster.bootstrap, linger_ms=0) as p:
            await p.send_and_wait("t", b"moved", partition=0)
        assert (await c.getone()).value == b"moved"


async def test_deserializers(cluster: FakeCluster) -> None:
    async with Consumer(
        bootstrap_servers=cluster.bootstrap,
        auto_offset_reset="earliest",
        key_deserializer=bytes.decode,
        value_deserializer=lambda v: v.upper(),
    ) as c:
        c.assign([T0])
        r = await c.getone()
        assert (r.key, r.value) == ("k0", b"V0")
