"""KafkaClient and BrokerConnection against the fake cluster: negotiation, single-flight
metadata, periodic refresh, timeouts, connection loss; plus read_committed filtering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from client.client import ClientConfig, KafkaClient, negotiate_versions, parse_bootstrap
from client.errors import KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailableError
from client.fetcher import _without_aborted
from client.protocol import records
from client.protocol.api_keys import ApiKey
from client.protocol.messages.fetch import AbortedTransaction
from client.protocol.messages.metadata import MetadataRequest
from tests.client.fake_broker import FakeCluster


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    c = FakeCluster(nodes=2)
    await c.start()
    c.create_topic("t", 2)
    yield c
    await c.close()


def metadata_requests(c: FakeCluster) -> int:
    return sum(1 for _n, name in c.requests if name == "MetadataRequest")


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_bootstrap(["h"]) == [("h", 9092)]
    assert parse_bootstrap("[::1]:9093") == [("::1", 9093)]
    with pytest.raises(ValueError):
        parse_bootstrap("")


def test_negotiation_takes_the_highest_common_version_within_our_minimum() -> None:
    chosen = negotiate_versions(
        {ApiKey.PRODUCE: (0, 2), ApiKey.FETCH: (0, 17), ApiKey.METADATA: (0, 5), 999: (0, 3)}
    )
    assert ApiKey.PRODUCE not in chosen  # we need v3+ (record batch v2)
    assert chosen[ApiKey.FETCH] == 12  # our generated maximum
    assert chosen[ApiKey.METADATA] == 5  # theirs
    assert 999 not in chosen


async def test_bootstrap_negotiates_and_fills_metadata(cluster: FakeCluster) -> None:
    client = KafkaClient(ClientConfig(bootstrap_servers=cluster.bootstrap))
    await client.start()
    try:
        assert client.cluster.bootstrapped
        assert {b.node_id for b in client.cluster.brokers()} == {1, 2}
        conn = await client.connection(1)
        assert conn.api_versions[ApiKey.METADATA] == 12
        assert conn.api_versions[ApiKey.PRODUCE] == 9
        assert await client.connection(1) is conn  # one connection per node
    finally:
        await client.close()


async def test_concurrent_refreshes_share_one_request(cluster: FakeCluster) -> None:
    client = KafkaClient(ClientConfig(bootstrap_servers=cluster.bootstrap))
    await client.start()
    try:
        before = metadata_requests(cluster)
        await asyncio.gather(*(client.refresh_metadata() for _ in range(20)))
        assert metadata_requests(cluster) == before + 1
    finally:
        await client.close()


async def test_periodic_refresh_by_metadata_max_age(cluster: FakeCluster) -> None:
    client = KafkaClient(ClientConfig(bootstrap_servers=cluster.bootstrap, metadata_max_age_ms=50))
    await client.start()
    try:
        start = metadata_requests(cluster)
        while metadata_requests(cluster) < start + 3:
            await asyncio.sleep(0.01)  # waiting for the refresher's own schedule
        cluster.create_topic("new", 3)
        client.add_topics(["new"])
        while client.cluster.partitions_for("new") is None:
            await asyncio.sleep(0.01)
        assert client.cluster.partitions_for("new") == (0, 1, 2)
    finally:
        await client.close()


async def test_unreachable_bootstrap_fails_clearly() -> None:
    client = KafkaClient(ClientConfig(bootstrap_servers="127.0.0.1:1", connect_timeout_ms=500))
    with pytest.raises((KafkaConnectionError, NoBrokersAvailableError)):
        await client.start()
    await client.close()


async def test_request_timeout_fails_the_request_and_closes_the_connection(
    cluster: FakeCluster,
) -> None:
    client = KafkaClient(ClientConfig(bootstrap_servers=cluster.bootstrap, request_timeout_ms=200))
    await client.start()
    try:
        conn = await client.connection(1)
        cluster.stalled.add("MetadataRequest")
        with pytest.raises(KafkaTimeoutError):
            await conn.request(MetadataRequest(topics=None), 12)
        assert conn.closed
        cluster.stalled.clear()
        fresh = await client.connection(1)  # reconnects
        assert fresh is not conn and not fresh.closed
        assert (await fresh.request(MetadataRequest(topics=None), 12)).brokers
    finally:
        await client.close()


async def test_connection_loss_fails_pending_requests(cluster: FakeCluster) -> None:
    client = KafkaClient(ClientConfig(bootstrap_servers=cluster.bootstrap))
    await client.start()
    try:
        conn = await client.connection(2)
        cluster.stalled.add("MetadataRequest")
        seen = len(cluster.requests)
        pending = [conn.send(MetadataRequest(topics=None), 12) for _ in range(5)]
        while (2, "MetadataRequest") not in cluster.requests[seen:]:
            await asyncio.sleep(0.01)  # the broker is now holding the first one
        cluster.drop_connections(2)
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, KafkaConnectionError) for r in results)
        assert conn.closed
    finally:
        await client.close()


def test_read_committed_drops_aborted_transactions_and_markers() -> None:
    def txn_batch(base: int, pid: int, values: list[bytes]) -> bytes:
        b = records.RecordBatchBuilder(
            producer_id=pid, producer_epoch=0, base_sequence=0, is_transactional=True
        )
        for v in values:
            b.append(None, v, (), 0)
        return b.build(base_offset=base)

    data = b"".join(
        [
            txn_batch(0, 7, [b"a0", b"a1"]),  # aborted
            txn_batch(2, 8, [b"c0"]),  # committed
            records.build_control_batch(
                control_type=records.CONTROL_TYPE_ABORT,
                producer_id=7,
                producer_epoch=0,
                timestamp_ms=0,
                base_offset=3,
            ),
            txn_batch(4, 7, [b"a2"]),  # a later transaction of the same producer: kept
        ]
    )
    kept = _without_aborted(data, [AbortedTransaction(producer_id=7, first_offset=0)])
    values = [r.value for b in records.decode_batches(kept) for r in b.records]
    assert values == [b"c0", b"a2"]
