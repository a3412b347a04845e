"""Three real broker processes: replicated produce, leader SIGKILL, nothing acknowledged lost.

The checks (tests/cluster/checker.py): every record whose delivery was acknowledged
(acks=all) is present at its offset, no offset holds two records and no record is there
twice, offsets are contiguous, per-key order holds, every replica reports the same high
watermark and holds the same bytes below it.
"""

from __future__ import annotations

from pathlib import Path

from tests.cluster import checker
from tests.harness import Cluster

TOPIC = "replicated"
PARTITIONS = 3


def test_leader_kill_loses_no_acknowledged_record(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path, settings={"tick_ms": "50"})
    with cluster:
        cluster.start(timeout_s=30)
        checker.create_topic(cluster.bootstrap, TOPIC, PARTITIONS, 3)
        ledger = checker.Ledger()
        producer = checker.confluent_producer(cluster.bootstrap)
        checker.produce(producer, TOPIC, "a", range(3000), PARTITIONS, ledger)
        victim = checker.leaders(cluster, 1, TOPIC)[0]
        cluster.kill(victim)
        survivors = [n for n in cluster.nodes if n != victim]
        producer = checker.confluent_producer(
            ",".join(cluster.node(n).kafka_address for n in survivors)
        )
        checker.produce(producer, TOPIC, "a", range(3000, 6000), PARTITIONS, ledger)
        cluster.restart(victim)
        checker.produce(producer, TOPIC, "a", range(6000, 7000), PARTITIONS, ledger)
        assert len(ledger.acked) == 7000, f"not acknowledged: {sorted(ledger.failed)[:5]}"

        hwms = checker.wait_hwms_agree(cluster, TOPIC, cluster.nodes)
        seen = checker.read_all(cluster.bootstrap, TOPIC, PARTITIONS)
        checker.check_history(seen, [ledger], hwms)
        codes = cluster.stop_all()
    assert all(code == 0 for code in codes.values()), cluster.logs()
    checker.compare_replica_logs(cluster, TOPIC, hwms)
