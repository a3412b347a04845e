"""Three real broker processes: replicated produce, leader SIGKILL, nothing acknowledged lost.

The checker reads every partition back after the faults and asserts: every record whose
delivery was acknowledged (acks=all) is present, no offset holds two records, offsets are
contiguous, per-key order holds, and every live replica reports the same high watermark.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.harness import Cluster

TOPIC = "replicated"
PARTITIONS = 3
KEYS = 30


def _cluster_view(cluster: Cluster, node_id: int) -> dict:
    with urllib.request.urlopen(cluster.http_url(node_id) + "/v1/cluster", timeout=5) as r:
        return json.loads(r.read())


def _leaders(cluster: Cluster, node_id: int) -> dict[int, int]:
    view = _cluster_view(cluster, node_id)
    topic = next(t for t in view["topics"] if t["name"] == TOPIC)
    return {p["partition"]: p["leader"] for p in topic["partitions"]}


def _produce(bootstrap: str, start: int, count: int, acked: dict[int, tuple[int, int]]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
        }
    )

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            value = int(msg.value())  # type: ignore[attr-defined]
            acked[value] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]

    for i in range(start, start + count):
        producer.produce(
            TOPIC, key=str(i % KEYS).encode(), value=str(i).encode(), on_delivery=on_delivery
        )
        producer.poll(0)
    assert producer.flush(90) == 0


def _read_all(bootstrap: str) -> dict[int, list[tuple[int, int]]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "checker", "enable.auto.commit": False}
    )
    out: dict[int, list[tuple[int, int]]] = {}
    for partition in range(PARTITIONS):
        _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
        consumer.assign([TopicPartition(TOPIC, partition, 0)])
        rows: list[tuple[int, int]] = []
        deadline = time.monotonic() + 60
        while (not rows or rows[-1][0] < high - 1) and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1):
                if m.error() is None:
                    rows.append((m.offset(), int(m.value())))
        out[partition] = rows
    consumer.close()
    return out


def test_leader_kill_loses_no_acknowledged_record(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path, settings={"tick_ms": "50"})
    try:
        cluster.start(timeout_s=30)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)]).values():
            future.result(30)
        acked: dict[int, tuple[int, int]] = {}
        _produce(cluster.bootstrap, 0, 3000, acked)
        victim = _leaders(cluster, 1)[0]
        cluster.kill(victim)
        survivors = [n for n in (1, 2, 3) if n != victim]
        bootstrap = ",".join(cluster.node(n).kafka_address for n in survivors)
        _produce(bootstrap, 3000, 3000, acked)
        cluster.restart(victim)
        _produce(cluster.bootstrap, 6000, 1000, acked)

        seen = _read_all(cluster.bootstrap)
        by_value: dict[int, tuple[int, int]] = {}
        for partition, rows in seen.items():
            assert rows, f"partition {partition} is empty"
            offsets = [o for o, _ in rows]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), (
                "offsets not contiguous"
            )
            for offset, value in rows:
                assert value not in by_value, f"value {value} duplicated"
                by_value[value] = (partition, offset)
        lost = [v for v in acked if v not in by_value]
        assert lost == [], f"{len(lost)} acknowledged records lost"
        moved = [v for v, where in acked.items() if by_value[v] != where]
        assert moved == [], "an acknowledged record is not at its acknowledged offset"
        per_key: dict[int, list[int]] = defaultdict(list)
        for partition in sorted(seen):
            for _, value in seen[partition]:
                per_key[value % KEYS].append(value)
        for values in per_key.values():
            assert values == sorted(values), "per-key order broken"

        deadline = time.monotonic() + 30
        while True:
            views = [_cluster_view(cluster, n) for n in (1, 2, 3)]
            hwms = [
                tuple(
                    p["high_watermark"]
                    for t in v["topics"]
                    if t["name"] == TOPIC
                    for p in t["partitions"]
                )
                for v in views
            ]
            if len(set(hwms)) == 1:
                break
            assert time.monotonic() < deadline, f"replicas disagree on high watermarks: {hwms}"
            time.sleep(0.2)
    finally:
        codes = cluster.stop_all()
    assert all(code == 0 for code in codes.values()), cluster.logs()
