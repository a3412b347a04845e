"""DeleteRecords is replicated: every replica's log start moves, not just the leader's."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.harness import Cluster

TOPIC = "trimmed"


def _log_starts(cluster: Cluster) -> list[int | None]:
    starts = []
    for node in (1, 2, 3):
        with urllib.request.urlopen(cluster.http_url(node) + "/v1/cluster", timeout=5) as r:
            view = json.loads(r.read())
        topic = next(t for t in view["topics"] if t["name"] == TOPIC)
        starts.append(topic["partitions"][0]["log_start_offset"])
    return starts


def test_delete_records_moves_every_replicas_log_start(tmp_path: Path) -> None:
    with Cluster(3, tmp_path) as cluster:
        cluster.start(timeout_s=30)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, 1, 3)]).values():
            future.result(30)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0})
        for i in range(100):
            producer.produce(TOPIC, value=str(i).encode())
            producer.flush(30)  # one batch per record: the log start can land on offset 60
        futures = admin.delete_records([TopicPartition(TOPIC, 0, 60)])
        result = futures[TopicPartition(TOPIC, 0, 60)].result(30)
        assert result.low_watermark == 60
        deadline = time.monotonic() + 20
        while _log_starts(cluster) != [60, 60, 60]:
            assert time.monotonic() < deadline, _log_starts(cluster)
            time.sleep(0.1)
