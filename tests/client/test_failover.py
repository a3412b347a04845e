"""Our idempotent producer across a leader SIGKILL in a 3-node Raftka cluster.

The producer keeps sending while the leader of every partition it writes to is killed;
it must find the new leaders (metadata refresh, NOT_LEADER handling, connection loss)
and retry without loss, duplicates or reordering. Our consumer then reads everything
back, following leaders too.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import defaultdict
from pathlib import Path

from client.admin import AdminClient, NewTopic
from client.consumer import Consumer
from client.producer import Producer, RecordFuture
from client.structs import TopicPartition
from tests.harness import Cluster

TOPIC = "ours-replicated"
PARTITIONS = 2
KEYS = 20


def _leaders(cluster: Cluster, node_id: int) -> dict[int, int]:
    with urllib.request.urlopen(cluster.http_url(node_id) + "/v1/cluster", timeout=5) as r:
        view = json.loads(r.read())
    topic = next(t for t in view["topics"] if t["name"] == TOPIC)
    return {p["partition"]: p["leader"] for p in topic["partitions"]}


async def test_leader_kill_during_production_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    cluster = Cluster(3, tmp_path, settings={"tick_ms": "50"})
    try:
        await asyncio.to_thread(cluster.start, True, 30)
        async with AdminClient(cluster.bootstrap) as admin:
            await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])
        futures: dict[int, RecordFuture] = {}
        async with Producer(
            cluster.bootstrap, linger_ms=2, retry_backoff_ms=50, delivery_timeout_ms=60000
        ) as p:
            assert p.idempotent
            for i in range(1500):
                futures[i] = await p.send(TOPIC, b"%d" % i, key=b"%d" % (i % KEYS))
            await p.flush()
            victim = _leaders(cluster, 1)[0]
            for i in range(1500, 2500):  # in flight while the leader dies
                futures[i] = await p.send(TOPIC, b"%d" % i, key=b"%d" % (i % KEYS))
            await asyncio.to_thread(cluster.kill, victim)
            for i in range(2500, 4000):
                futures[i] = await p.send(TOPIC, b"%d" % i, key=b"%d" % (i % KEYS))
            await p.flush()
        acked = {i: (f.result().partition, f.result().offset) for i, f in futures.items()}
        assert len(acked) == 4000  # every send succeeded despite the failover

        survivors = [n for n in (1, 2, 3) if n != victim]
        bootstrap = ",".join(cluster.node(n).kafka_address for n in survivors)
        seen: dict[int, list[tuple[int, int]]] = defaultdict(list)
        async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
            c.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
            total = 0
            while total < 4000:
                got = await c.getmany(timeout_ms=20000)
                assert got, f"consumer stalled after {total} records"
                for tp, records in got.items():
                    seen[tp.partition].extend((r.offset, int(r.value or b"-1")) for r in records)
                    total += len(records)
        by_value: dict[int, tuple[int, int]] = {}
        for partition, rows in seen.items():
            offsets = [o for o, _ in rows]
            assert offsets == list(range(len(offsets))), "offsets not contiguous from 0"
            for offset, value in rows:
                assert value not in by_value, f"value {value} duplicated"
                by_value[value] = (partition, offset)
        assert by_value == acked  # nothing lost, nothing moved, nothing extra
        per_key: dict[int, list[int]] = defaultdict(list)
        for partition in sorted(seen):
            for _, value in seen[partition]:
                per_key[value % KEYS].append(value)
        assert all(v == sorted(v) for v in per_key.values()), "per-key order broken"
    finally:
        await asyncio.to_thread(cluster.stop_all)
