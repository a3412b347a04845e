"""A replica that lost its data re-syncs from its peers and never votes before.

Scenario: a follower F held every acknowledged record; while it is down, bytes in the
middle of its segment are overwritten (a bad disk). F restarts while the old leader L
is dead too, so only F and T are up. A corrupted log has lost records F acknowledged,
so if F voted, T could become leader without records that F and L alone had committed.
F must quarantine the log, start empty, and refuse to vote: the partition stays without
a leader (writes fail) until L is back; then F re-syncs and every replica agrees again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from tests.cluster import checker
from tests.harness import Cluster

TOPIC = "corrupt"
WINDOW_S = 3.0  # three of the longest election timeouts (10 ticks x 50 ms x 2)


def _corrupt_middle(segment: Path) -> None:
    size = segment.stat().st_size
    assert size > 8_000, f"segment too small to corrupt in the middle: {size}"
    with open(segment, "r+b") as f:
        f.seek(size * 2 // 5)
        f.write(b"\xde\xad\xbe\xef" * 64)


def _resyncing(cluster: Cluster, node_id: int) -> int | None:
    status, body = cluster.node(node_id).http_get("/v1/cluster")
    if status != 200:
        return None
    return int(json.loads(body)["raft_groups_resyncing"])


def _wait_resyncing(
    cluster: Cluster, node_id: int, count: int, timeout_s: float, at_least: bool = False
) -> None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        seen = _resyncing(cluster, node_id)
        if seen == count or (at_least and seen is not None and seen >= count):
            return
        time.sleep(0.05)  # poll interval
    raise AssertionError(f"node {node_id} re-syncing {seen} groups, expected {count}")


def test_corrupted_replica_quarantines_resyncs_and_does_not_vote_meanwhile(
    tmp_path: Path,
) -> None:
    with checker.start_with_topic(tmp_path, TOPIC, 1, {"tick_ms": "50"}) as cluster:
        ledger = checker.Ledger()
        producer = checker.confluent_producer(cluster.bootstrap)
        for start in range(0, 2000, 100):  # many frames: the damage is followed by valid ones
            checker.produce(producer, TOPIC, "a", range(start, start + 100), 1, ledger)
        checker.wait_hwms_agree(cluster, TOPIC, cluster.nodes)
        leader = checker.leaders(cluster, 1, TOPIC)[0]
        follower, third = [n for n in cluster.nodes if n != leader]

        cluster.kill(follower)
        segments = sorted((cluster.node(follower).data_dir / f"{TOPIC}-0").glob("*.log"))
        _corrupt_middle(segments[0])
        cluster.kill(leader)
        cluster.node(follower).start()
        _wait_resyncing(cluster, follower, 1, timeout_s=60)
        quarantined = list(cluster.node(follower).data_dir.glob(f"{TOPIC}-0.corrupt-*"))
        assert len(quarantined) == 1, "the corrupted log was not kept aside for the operator"

        # Only the re-syncing F and T are up: no leader may be elected, so writes fail.
        stuck = checker.Ledger()
        producer = checker.confluent_producer(
            cluster.node(third).kafka_address, **{"message.timeout.ms": int(WINDOW_S * 1000)}
        )
        checker.produce(producer, TOPIC, "b", range(5), 1, stuck)
        assert not stuck.acked, (
            "a write was acknowledged while only the re-syncing replica could vote"
        )
        assert _resyncing(cluster, follower) == 1

        cluster.node(leader).start()
        _wait_resyncing(cluster, follower, 0, timeout_s=60)
        producer = checker.confluent_producer(cluster.bootstrap)
        checker.produce(producer, TOPIC, "a", range(2000, 2200), 1, ledger)
        assert len(ledger.acked) == 2200, f"not acknowledged: {sorted(ledger.failed)[:5]}"
        hwms = checker.wait_hwms_agree(cluster, TOPIC, cluster.nodes)
        seen = checker.read_all(cluster.bootstrap, TOPIC, 1)
        checker.check_history(seen, [ledger], hwms)
        codes = cluster.stop_all()
    assert all(code == 0 for code in codes.values()), cluster.logs()
    checker.compare_replica_logs(cluster, TOPIC, hwms)


def test_wiped_node_holds_its_votes_until_it_has_resynced(tmp_path: Path) -> None:
    """The same with a whole data directory lost: the node cannot tell by itself that
    it was a member; its peers tell it, and until then and until it has caught up it
    votes in no group (not even the metadata group)."""
    with checker.start_with_topic(tmp_path, TOPIC, 1, {"tick_ms": "50"}) as cluster:
        ledger = checker.Ledger()
        producer = checker.confluent_producer(cluster.bootstrap)
        checker.produce(producer, TOPIC, "a", range(1000), 1, ledger)
        checker.wait_hwms_agree(cluster, TOPIC, cluster.nodes)
        leader = checker.leaders(cluster, 1, TOPIC)[0]
        wiped, third = [n for n in cluster.nodes if n != leader]

        cluster.kill(wiped)
        shutil.rmtree(cluster.node(wiped).data_dir)
        cluster.kill(leader)
        cluster.node(wiped).start()
        _wait_resyncing(cluster, wiped, 1, timeout_s=60, at_least=True)

        stuck = checker.Ledger()
        producer = checker.confluent_producer(
            cluster.node(third).kafka_address, **{"message.timeout.ms": int(WINDOW_S * 1000)}
        )
        checker.produce(producer, TOPIC, "b", range(5), 1, stuck)
        assert not stuck.acked, "a write was acknowledged while only the wiped node could vote"

        cluster.node(leader).start()
        _wait_resyncing(cluster, wiped, 0, timeout_s=60)
        cluster.wait_ready(timeout_s=60)
        producer = checker.confluent_producer(cluster.bootstrap)
        checker.produce(producer, TOPIC, "a", range(1000, 1200), 1, ledger)
        assert len(ledger.acked) == 1200, f"not acknowledged: {sorted(ledger.failed)[:5]}"
        hwms = checker.wait_hwms_agree(cluster, TOPIC, cluster.nodes)
        checker.check_history(checker.read_all(cluster.bootstrap, TOPIC, 1), [ledger], hwms)
        codes = cluster.stop_all()
    assert all(code == 0 for code in codes.values()), cluster.logs()
    checker.compare_replica_logs(cluster, TOPIC, hwms)
