"""Group paths against a real Raftka process that the other suites left untested.

- Auto-commit: positions are committed every auto_commit_interval_ms while the
  consumer runs (not only on close), and a new member resumes where it stopped.
- The round-robin assignor in a live group of two: each member gets every other
  partition and together they cover the topic.
"""

from __future__ import annotations

import asyncio
import time

from client.admin import AdminClient, NewTopic
from client.consumer import Consumer
from client.producer import Producer
from client.structs import TopicPartition
from tests.client.test_against_broker import fresh
from tests.harness import BrokerProcess


async def test_auto_commit_runs_periodically_and_a_new_member_resumes(
    broker: BrokerProcess,
) -> None:
    bootstrap = broker.kafka_address
    topic, group = fresh("autocommit"), fresh("g")
    async with AdminClient(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1)])
    async with Producer(bootstrap, linger_ms=0) as p:
        for i in range(30):
            await p.send(topic, b"%d" % i)
        await p.flush()
    tp = TopicPartition(topic, 0)
    options = dict(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=100,
        heartbeat_interval_ms=200,
    )
    async with Consumer(topic, **options) as c:  # type: ignore[arg-type]
        first = [await c.getone() for _ in range(12)]
        assert [int(r.value or b"") for r in first] == list(range(12))
        deadline = time.monotonic() + 20
        committed = None
        while time.monotonic() < deadline:
            committed = await c.committed(tp)
            if committed is not None and committed.offset == 12:
                break
            await asyncio.sleep(0.05)  # polling a condition: the commit task runs meanwhile
        assert committed is not None and committed.offset == 12  # committed while running
    async with Consumer(topic, **options) as c:  # type: ignore[arg-type]
        r = await c.getone()
        assert r.offset == 12


async def test_roundrobin_group_of_two(broker: BrokerProcess) -> None:
    bootstrap = broker.kafka_address
    topic = fresh("rr")
    async with AdminClient(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 4)])
    options = dict(
        bootstrap_servers=bootstrap,
        group_id=fresh("g"),
        heartbeat_interval_ms=200,
        rebalance_timeout_ms=5000,
        partition_assignment_strategy=("roundrobin",),
    )
    a, b = Consumer(topic, **options), Consumer(topic, **options)  # type: ignore[arg-type]
    await a.start()
    await b.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            len(a.assignment()) == 2 and len(b.assignment()) == 2
        ):
            await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
        parts_a = sorted(tp.partition for tp in a.assignment())
        parts_b = sorted(tp.partition for tp in b.assignment())
        # Round-robin deals partitions in turn: each member holds every other one.
        assert sorted([parts_a, parts_b]) == [[0, 2], [1, 3]]
    finally:
        await a.close()
        await b.close()
