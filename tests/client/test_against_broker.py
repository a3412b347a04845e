"""Our client against a real Raftka process, and cross-client with confluent-kafka and kafka-python.

One broker process serves the module (starting one costs about a second); every test uses
fresh topic names. The third-party clients are synchronous, so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from confluent_kafka import Consumer as CkConsumer
from confluent_kafka import Producer as CkProducer
from confluent_kafka import TopicPartition as CkTopicPartition

from client.admin import EARLIEST, LATEST, RESOURCE_TOPIC, AdminClient, NewTopic
from client.consumer import Consumer
from client.errors import KafkaError
from client.partitioner import partition_for_key
from client.producer import Producer
from client.structs import TopicPartition
from tests.harness import BrokerProcess

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
KAFKA_PYTHON_CODECS = {"none", "gzip"}
_names = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{time.monotonic_ns() % 10**6}"


async def create(bootstrap: str, name: str, partitions: int) -> None:
    async with AdminClient(bootstrap) as admin:
        await admin.create_topics([NewTopic(name, partitions)])


def records(n: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [(b"k%d" % i, b"value-%d" % i * 3, [("h", b"%d" % i), ("n", b"")]) for i in range(n)]


async def consume_ours(bootstrap: str, topic: str, partitions: int, n: int) -> list[tuple]:
    out: list[tuple] = []
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        while len(out) < n:
            got = await c.getmany(timeout_ms=10000)
            assert got, f"stalled after {len(out)} of {n}"
            for batch in got.values():
                out.extend((r.partition, r.key, r.value, list(r.headers)) for r in batch)
    return out


@pytest.mark.parametrize("codec", CODECS)
async def test_ours_to_ours_and_to_confluent_and_kafka_python(
    broker: BrokerProcess, codec: str
) -> None:
    bootstrap = broker.kafka_address
    topic = fresh(f"x-{codec}")
    await create(bootstrap, topic, 3)
    sent = records(200)
    async with Producer(bootstrap, compression=None if codec == "none" else codec) as p:
        futures = [await p.send(topic, v, key=k, headers=h) for k, v, h in sent]
        mds = [await f for f in futures]
    assert all(md.partition == partition_for_key(k, 3) for md, (k, _v, _h) in zip(mds, sent))
    expected = sorted((partition_for_key(k, 3), k, v, h) for k, v, h in sent)
    assert sorted(await consume_ours(bootstrap, topic, 3, 200)) == expected
    theirs = await asyncio.to_thread(consume_confluent, bootstrap, topic, 3, 200)
    assert sorted(theirs) == expected
    if codec in KAFKA_PYTHON_CODECS:  # it ships without snappy/lz4/zstd libraries here
        kp = await asyncio.to_thread(consume_kafka_python, bootstrap, topic, 3, 200)
        assert sorted(kp) == expected


def consume_confluent(bootstrap: str, topic: str, partitions: int, n: int) -> list[tuple]:
    c = CkConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    c.assign([CkTopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=1):
                assert m.error() is None, m.error()
                out.append((m.partition(), m.key(), m.value(), list(m.headers() or [])))
    finally:
        c.close()
    return out


def consume_kafka_python(bootstrap: str, topic: str, partitions: int, n: int) -> list[tuple]:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KpTopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    c.assign([KpTopicPartition(topic, p) for p in range(partitions)])
    c.seek_to_beginning()
    out: list[tuple] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < n and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=500).values():
                out.extend((m.partition, m.key, m.value, list(m.headers)) for m in msgs)
    finally:
        c.close()
    return out


@pytest.mark.parametrize("codec", CODECS)
async def test_confluent_murmur2_random_to_ours(broker: BrokerProcess, codec: str) -> None:
    """Same key, same partition as librdkafka's murmur2_random (the Java partitioner)."""
    bootstrap = broker.kafka_address
    topic = fresh(f"ck-{codec}")
    await create(bootstrap, topic, 7)
    sent = records(150)

    def produce() -> None:
        p = CkProducer(
            {
                "bootstrap.servers": bootstrap,
                "partitioner": "murmur2_random",
                "compression.type": codec,
                "linger.ms": 5,
            }
        )
        for k, v, h in sent:
            p.produce(topic, key=k, value=v, headers=h)
        assert p.flush(30) == 0

    await asyncio.to_thread(produce)
    got = await consume_ours(bootstrap, topic, 7, 150)
    assert sorted(got) == sorted((partition_for_key(k, 7), k, v, h) for k, v, h in sent)


async def test_kafka_python_idempotent_to_ours(broker: BrokerProcess) -> None:
    from kafka import KafkaProducer

    bootstrap = broker.kafka_address
    topic = fresh("kp")
    await create(bootstrap, topic, 2)
    sent = records(100)

    def produce() -> None:
        p = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
        for k, v, h in sent:
            p.send(topic, key=k, value=v, headers=h, partition=0)
        p.flush(30)
        p.close()

    await asyncio.to_thread(produce)
    got = await consume_ours(bootstrap, topic, 2, 100)
    assert got == [(0, k, v, h) for k, v, h in sent]  # one partition: exact order


async def test_group_rebalances_split_and_rejoin(broker: BrokerProcess) -> None:
    bootstrap = broker.kafka_address
    topic = fresh("grp")
    await create(bootstrap, topic, 4)
    async with Producer(bootstrap) as p:
        for i in range(400):
            await p.send(topic, b"%d" % i, key=b"%d" % i)
    events: list[tuple[str, str, frozenset[TopicPartition]]] = []

    class Listener:
        def __init__(self, name: str) -> None:
            self.name = name

        def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
            events.append((self.name, "revoked", revoked))

        def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
            events.append((self.name, "assigned", assigned))

    options = dict(
        bootstrap_servers=bootstrap,
        group_id=fresh("g"),
        auto_offset_reset="earliest",
        heartbeat_interval_ms=200,
        session_timeout_ms=6000,
        rebalance_timeout_ms=5000,
        auto_commit_interval_ms=200,
        partition_assignment_strategy=("cooperative-sticky",),
    )
    a = Consumer(**options)  # type: ignore[arg-type]
    await a.start()
    a.subscribe([topic], listener=Listener("a"))
    seen: set[bytes] = set()
    while len(seen) < 400:
        for batch in (await a.getmany(timeout_ms=10000)).values():
            seen.update(r.value for r in batch if r.value)
    assert a.assignment() == {TopicPartition(topic, p) for p in range(4)}
    await a.commit()
    b = Consumer(**options)  # type: ignore[arg-type]
    await b.start()
    b.subscribe([topic], listener=Listener("b"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (len(a.assignment()) == 2 == len(b.assignment())):
        await a.getmany(timeout_ms=100)
        await b.getmany(timeout_ms=100)
    assert len(a.assignment()) == 2 and len(b.assignment()) == 2
    assert a.assignment() | b.assignment() == {TopicPartition(topic, p) for p in range(4)}
    # Cooperative: a kept two partitions throughout and only revoked the two that moved.
    revoked_by_a = [e[2] for e in events if e[0] == "a" and e[1] == "revoked"]
    assert revoked_by_a and all(len(r) == 2 for r in revoked_by_a)
    async with Producer(bootstrap) as p:
        for i in range(400, 440):
            await p.send(topic, b"%d" % i, key=b"%d" % i)
    more: set[bytes] = set()
    while len(more) < 40 and time.monotonic() < deadline + 30:
        for c in (a, b):
            for batch in (await c.getmany(timeout_ms=100)).values():
                more.update(r.value for r in batch if r.value)
    assert more == {b"%d" % i for i in range(400, 440)}  # nothing re-delivered, nothing lost
    await b.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(a.assignment()) != 4:
        await a.getmany(timeout_ms=100)
    assert len(a.assignment()) == 4
    await a.close()


async def test_eager_range_group_of_two(broker: BrokerProcess) -> None:
    bootstrap = broker.kafka_address
    topic = fresh("range")
    await create(bootstrap, topic, 3)
    options = dict(
        bootstrap_servers=bootstrap,
        group_id=fresh("g"),
        heartbeat_interval_ms=200,
        rebalance_timeout_ms=5000,
        partition_assignment_strategy=("range",),
    )
    a, b = Consumer(topic, **options), Consumer(topic, **options)  # type: ignore[arg-type]
    await a.start()
    await b.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (a.assignment() and b.assignment()):
        await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
    sizes = sorted([len(a.assignment()), len(b.assignment())])
    assert sizes == [1, 2]
    async with AdminClient(bootstrap) as admin:
        (desc,) = await admin.describe_groups([options["group_id"]])  # type: ignore[list-item]
        assert desc.state == "Stable" and len(desc.members) == 2
        assert {tp for m in desc.members for tp in m.assignment} == {
            TopicPartition(topic, p) for p in range(3)
        }
    await a.close()
    await b.close()


async def test_metadata_refresh_after_topic_creation(broker: BrokerProcess) -> None:
    bootstrap = broker.kafka_address
    topic = fresh("late")
    async with Producer(bootstrap, max_block_ms=20000) as p:
        assert p.partitions_for(topic) is None
        await create(bootstrap, topic, 2)
        md = await p.send_and_wait(topic, b"x", key=b"k")
        assert md.partition == partition_for_key(b"k", 2) and md.offset == 0


async def test_admin_topics_partitions_configs_offsets_groups(broker: BrokerProcess) -> None:
    bootstrap = broker.kafka_address
    topic = fresh("adm")
    async with AdminClient(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 2, configs={"retention.ms": "3600000"})])
        assert topic in await admin.list_topics()
        with pytest.raises(KafkaError):
            await admin.create_topics([NewTopic(topic, 2)])
        await admin.create_topics([NewTopic(topic, 2)], if_not_exists=True)
        await admin.create_partitions({topic: 3})
        (desc,) = await admin.describe_topics([topic])
        assert [p.partition for p in desc.partitions] == [0, 1, 2]
        configs = await admin.describe_configs(RESOURCE_TOPIC, [topic])
        assert configs[topic].get("retention.ms") == "3600000"
        async with Producer(bootstrap) as p:
            for i in range(5):
                await p.send(topic, b"%d" % i, partition=1)
        tp = TopicPartition(topic, 1)
        assert await admin.list_offsets({tp: EARLIEST}) == {tp: 0}
        assert await admin.list_offsets({tp: LATEST}) == {tp: 5}
        group = fresh("ag")
        await admin.alter_group_offsets(group, {tp: 3})
        assert (await admin.list_group_offsets(group))[tp].offset == 3
        assert group in {g.group_id for g in await admin.list_groups()}
        await admin.delete_groups([group])
        assert group not in {g.group_id for g in await admin.list_groups()}
        cluster = await admin.describe_cluster()
        assert [b.node_id for b in cluster.brokers] == [1]
        await admin.delete_topics([topic])
        assert topic not in await admin.list_topics()


async def test_pattern_subscription_picks_up_new_topics(broker: BrokerProcess) -> None:
    bootstrap = broker.kafka_address
    prefix = fresh("pat")
    await create(bootstrap, f"{prefix}-a", 1)
    c = Consumer(
        bootstrap_servers=bootstrap,
        group_id=fresh("pg"),
        auto_offset_reset="earliest",
        metadata_max_age_ms=300,
        heartbeat_interval_ms=200,
    )
    await c.start()
    try:
        c.subscribe(pattern=f"{prefix}-.*")
        await create(bootstrap, f"{prefix}-b", 1)
        async with Producer(bootstrap) as p:
            await p.send_and_wait(f"{prefix}-a", b"from-a")
            await p.send_and_wait(f"{prefix}-b", b"from-b")
        got: set[bytes] = set()
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            for batch in (await c.getmany(timeout_ms=200)).values():
                got.update(r.value for r in batch if r.value)
        assert got == {b"from-a", b"from-b"}
        assert c.subscription() == {f"{prefix}-a", f"{prefix}-b"}
    finally:
        await c.close()
