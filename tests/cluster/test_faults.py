"""Faults while producing: a follower crash, a paused leader, a leader cut off from its peers.

Each test produces with an idempotent acks=all producer on a thread while it breaks the
cluster, then checks (tests/cluster/checker.py) that no acknowledged record is missing or
moved, none is duplicated, offsets are contiguous, per-key order holds, every replica
reaches the same high watermark and holds the same bytes below it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.cluster import checker
from tests.harness import Cluster

TOPIC = "faults"
PARTITIONS = 3
SETTINGS = {"tick_ms": "50", "fault_injection": "true"}
#: Longer than the election timeout (election_ticks 10 x tick_ms 50: 0.5-1 s).
FAULT_S = 3.0
#: librdkafka gives up on a request to an unresponsive broker after this, not after 60 s.
PRODUCER = {"request.timeout.ms": 3000, "socket.timeout.ms": 3000}
NOT_A_SUCCESS = checker.NOT_A_SUCCESS


def _start(tmp_path: Path) -> Cluster:
    return checker.start_with_topic(tmp_path, TOPIC, PARTITIONS, SETTINGS)


def _finish(cluster: Cluster, ledgers: list[checker.Ledger]) -> None:
    checker.finish(cluster, TOPIC, PARTITIONS, ledgers)


def test_follower_kill_then_leader_pause(tmp_path: Path) -> None:
    with _start(tmp_path) as cluster:
        bg = checker.BackgroundProducer(cluster.bootstrap, TOPIC, "c", PARTITIONS, **PRODUCER)
        bg.start().wait_acked(0, 100, 60)

        leader = checker.leaders(cluster, 1, TOPIC)[0]
        follower = next(n for n in cluster.nodes if n != leader)
        cluster.kill(follower)
        bg.wait_acked(0, bg.ledger.acked_in(0) + 100, 60)  # one follower is enough
        cluster.node(follower).restart(timeout_s=60)

        leader = checker.leaders(cluster, follower, TOPIC)[0]
        others = [n for n in cluster.nodes if n != leader]
        paused_at = time.monotonic()
        cluster.pause(leader)
        try:
            new_leader = checker.wait_new_leader(cluster, TOPIC, 0, leader, others, 15)
            bg.wait_acked(0, bg.ledger.acked_in(0) + 100, 60)  # through the new leader
            time.sleep(max(0.0, FAULT_S - (time.monotonic() - paused_at)))  # the fault lasts
        finally:
            cluster.resume(leader)
        # The old leader hears the new term and follows; its view names the new leader.
        deadline = time.monotonic() + 15
        while checker.leaders(cluster, leader, TOPIC)[0] == leader:
            assert time.monotonic() < deadline, f"node {leader} still claims partition 0"
            time.sleep(0.05)  # poll interval
        bg.wait_acked(0, bg.ledger.acked_in(0) + 100, 60)
        ledger = bg.stop()
        assert new_leader != leader
        _finish(cluster, [ledger])


def _link(cluster: Cluster, node_id: int, body: dict[str, object]) -> None:
    path = "/v1/faults/link" if body else "/v1/faults/heal"
    request = urllib.request.Request(
        cluster.http_url(node_id) + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _isolate(cluster: Cluster, node_id: int) -> None:
    for peer in cluster.nodes:
        if peer != node_id:
            _link(cluster, node_id, {"peer": peer, "direction": "both", "loss": 1.0})
            _link(cluster, peer, {"peer": node_id, "direction": "both", "loss": 1.0})


def _leads_any_group(cluster: Cluster, node_id: int) -> bool:
    """Whether the node's /metrics shows it leading any Raft group (role 3)."""
    status, body = cluster.node(node_id).http_get("/metrics")
    assert status == 200
    return any(
        line.startswith("raftka_raft_role{") and float(line.rsplit(" ", 1)[1]) == 3
        for line in body.decode().splitlines()
    )


def test_leader_cut_off_from_peers_stops_acknowledging(tmp_path: Path) -> None:
    with _start(tmp_path) as cluster:
        bg = checker.BackgroundProducer(cluster.bootstrap, TOPIC, "c", PARTITIONS, **PRODUCER)
        bg.start().wait_acked(0, 100, 60)

        leader = checker.leaders(cluster, 1, TOPIC)[0]
        others = [n for n in cluster.nodes if n != leader]
        address = cluster.node(leader).kafka_address
        cut_at = time.monotonic()
        _isolate(cluster, leader)
        # Clients still reach it, but what it appends now can never commit.
        code = checker.raw_produce(address, TOPIC, 0, b"raw", b"raw:0", timeout_ms=1500)
        assert code in NOT_A_SUCCESS, f"isolated leader answered {code} to acks=all"
        new_leader = checker.wait_new_leader(cluster, TOPIC, 0, leader, others, 15)
        bg.wait_acked(0, bg.ledger.acked_in(0) + 100, 60)
        # CheckQuorum: having heard from no quorum, it leads nothing any more.
        deadline = time.monotonic() + 10
        while _leads_any_group(cluster, leader):
            assert time.monotonic() < deadline, f"isolated node {leader} still leads a group"
            time.sleep(0.05)  # poll interval
        code = checker.raw_produce(address, TOPIC, 0, b"raw", b"raw:1", timeout_ms=1500)
        assert code in NOT_A_SUCCESS, f"deposed leader answered {code} to acks=all"
        time.sleep(max(0.0, FAULT_S - (time.monotonic() - cut_at)))  # the fault lasts
        for node_id in cluster.nodes:
            _link(cluster, node_id, {})
        bg.wait_acked(0, bg.ledger.acked_in(0) + 100, 60)
        ledger = bg.stop()
        assert new_leader != leader
        _finish(cluster, [ledger])
