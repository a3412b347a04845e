"""A SIGKILLed leader is replaced without waiting out the election timeout.

The kernel closes a killed process's sockets, so its peers see their inbound raft
connection end at once; they forget the dead leader and campaign within a few ticks
(PreVote still applies). This test makes the election timeout long (5-10 s) so the only
way a new leader can appear within 4 s of the kill is that closed-connection detector.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.cluster import checker

TOPIC = "fast-failover"
ELECTION_S_MIN = 100 * 0.05  # election_ticks x tick_ms: the shortest timeout-driven election


def test_survivors_elect_at_once_when_the_leaders_connections_close(tmp_path: Path) -> None:
    settings = {"tick_ms": "50", "election_ticks": "100"}
    with checker.start_with_topic(tmp_path, TOPIC, 3, settings) as cluster:
        ledger = checker.Ledger()
        producer = checker.confluent_producer(cluster.bootstrap)
        checker.produce(producer, TOPIC, "a", range(300), 3, ledger)
        before = checker.leaders(cluster, 1, TOPIC)
        victim = before[0]
        led = [p for p, leader in before.items() if leader == victim]
        survivors = [n for n in cluster.nodes if n != victim]

        killed_at = time.monotonic()
        cluster.kill(victim)
        for partition in led:
            checker.wait_new_leader(cluster, TOPIC, partition, victim, survivors, timeout_s=30)
        elapsed_s = time.monotonic() - killed_at
        assert elapsed_s < ELECTION_S_MIN - 1, (
            f"new leaders of {led} took {elapsed_s:.1f}s: the election timeout, not the "
            f"closed connection, ended the old leader's term"
        )

        producer = checker.confluent_producer(
            ",".join(cluster.node(n).kafka_address for n in survivors)
        )
        checker.produce(producer, TOPIC, "a", range(300, 600), 3, ledger)
        assert len(ledger.acked) == 600, f"not acknowledged: {sorted(ledger.failed)[:5]}"
        hwms = checker.wait_hwms_agree(cluster, TOPIC, survivors)
        checker.check_history(checker.read_all(cluster.bootstrap, TOPIC, 3), [ledger], hwms)
