"""Whole-node failures: a lost quorum, a wiped disk, every node restarted at once.

Each test checks afterwards (tests/cluster/checker.py) that no acknowledged record is
missing or moved, none is duplicated, offsets are contiguous, per-key order holds, every
replica reaches the same high watermark and holds the same bytes below it.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

from tests.cluster import checker
from tests.harness import Cluster

TOPIC = "recovery"
PARTITIONS = 3
SETTINGS = {"tick_ms": "50"}
NOT_A_SUCCESS = checker.NOT_A_SUCCESS


def _start(tmp_path: Path) -> Cluster:
    return checker.start_with_topic(tmp_path, TOPIC, PARTITIONS, SETTINGS)


def _finish(cluster: Cluster, ledgers: list[checker.Ledger]) -> None:
    checker.finish(cluster, TOPIC, PARTITIONS, ledgers)


def _wait_all_partitions_led(cluster: Cluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    views: list[dict[int, int]] = []
    while time.monotonic() < deadline:
        views = [checker.leaders(cluster, n, TOPIC) for n in (1, 2, 3)]
        if all(views[0].values()) and all(v == views[0] for v in views):
            return
        time.sleep(0.05)  # poll interval
    raise AssertionError(f"partitions without an agreed leader after {timeout_s}s: {views}")


def _all_acked(ledger: checker.Ledger) -> None:
    assert ledger.failed == {}, f"{len(ledger.failed)} failed: {set(ledger.failed.values())}"
    assert len(ledger.acked) == ledger.sent


def test_two_of_three_down_refuses_then_recovers(tmp_path: Path) -> None:
    with _start(tmp_path) as cluster:
        before = checker.Ledger()
        # Reconnect backoff bounded: librdkafka's default grows to 10 s during the outage,
        # longer than the 4 s message timeout of the records produced after it.
        producer = checker.confluent_producer(
            cluster.bootstrap,
            **{
                "message.timeout.ms": 4000,
                "socket.timeout.ms": 3000,
                "reconnect.backoff.max.ms": 500,
            },
        )
        checker.produce(producer, TOPIC, "c", range(1500), PARTITIONS, before)
        _all_acked(before)

        survivor = 1
        for node_id in (2, 3):
            cluster.kill(node_id)
        # Straight to the survivor, every partition: an error within the request timeout.
        for partition in range(PARTITIONS):
            code = checker.raw_produce(
                cluster.node(survivor).kafka_address, TOPIC, partition, b"r", b"r:0", 2000
            )
            assert code in NOT_A_SUCCESS, f"partition {partition}: answered {code} without quorum"
        # A real client: every record's delivery fails within message.timeout.ms.
        during = checker.Ledger()
        checker.produce(producer, TOPIC, "c", range(1500, 1600), PARTITIONS, during, flush_s=30)
        assert during.acked == {}, f"acknowledged without a quorum: {sorted(during.acked)[:5]}"

        # kafka-python with its defaults retries through the outage and succeeds after it.
        across = checker.Ledger()
        sender = threading.Thread(
            target=checker.produce_kafka_python,
            args=(cluster.bootstrap, TOPIC, "k", range(500), PARTITIONS, across),
        )
        sender.start()
        for node_id in (2, 3):
            cluster.node(node_id).restart(timeout_s=60)
        sender.join(150)
        assert not sender.is_alive(), "kafka-python did not finish"
        _all_acked(across)
        # The same confluent producer, no operator action: production succeeds again once
        # every partition has a leader that all nodes agree on (the cluster has recovered).
        _wait_all_partitions_led(cluster, 30)
        after = checker.Ledger()
        checker.produce(producer, TOPIC, "c", range(1600, 2600), PARTITIONS, after)
        _all_acked(after)
        _finish(cluster, [before, during, across, after])


def test_wiped_node_catches_up_from_peers(tmp_path: Path) -> None:
    with _start(tmp_path) as cluster:
        ledger = checker.Ledger()
        producer = checker.confluent_producer(cluster.bootstrap)
        checker.produce(producer, TOPIC, "c", range(1500), PARTITIONS, ledger)
        # Wipe a follower of a partition led by its preferred replica: leader balancing
        # leaves that leader in place, so the leader keeps its view of the follower.
        rows = checker.partition_rows(cluster, 1, TOPIC)
        row = next(r for r in rows if r["leader"] == r["replicas"][0])
        wiped = next(n for n in row["replicas"] if n != row["leader"])
        cluster.kill(wiped)
        shutil.rmtree(cluster.node(wiped).data_dir)
        checker.produce(producer, TOPIC, "c", range(1500, 2000), PARTITIONS, ledger)
        cluster.node(wiped).start()
        # Caught up: the wiped node reports the same high watermarks as its peers.
        checker.wait_hwms_agree(cluster, TOPIC, cluster.nodes, timeout_s=15)
        cluster.node(wiped).wait_ready(30)
        checker.produce(producer, TOPIC, "c", range(2000, 2500), PARTITIONS, ledger)
        _all_acked(ledger)
        _finish(cluster, [ledger])


def test_every_node_restarted_at_once(tmp_path: Path) -> None:
    with _start(tmp_path) as cluster:
        ledgers = []
        for phase, stop in enumerate(("SIGTERM", "SIGKILL", None)):
            ledger = checker.Ledger()
            producer = checker.confluent_producer(cluster.bootstrap)
            checker.produce(producer, TOPIC, "c", range(phase * 800, (phase + 1) * 800),
                            PARTITIONS, ledger)  # fmt: skip
            _all_acked(ledger)
            ledgers.append(ledger)
            if stop == "SIGTERM":
                cluster.stop_all()  # SIGTERM to all at once (exit codes: see _finish)
            elif stop == "SIGKILL":
                for node in cluster.nodes.values():
                    node.send_signal(signal.SIGKILL)
                for node in cluster.nodes.values():
                    node.wait_exit()
            if stop is not None:
                cluster.start(timeout_s=60)
        _finish(cluster, ledgers)
