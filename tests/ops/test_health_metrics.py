"""The under-replicated and leaderless gauges, computed from a node's state.

The node is a stand-in with exactly the attributes `broker.health_metrics` reads
(partitions with their Raft group, the metadata image, leader_of); Raft progress uses the
real `ProgressView` and `ProgressState`, and the gauges are the real `BrokerMetrics` ones.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker.health_metrics import (
    UNDER_REPLICATED_LAG_ENTRIES_MAX,
    compute_health,
    follower_lags,
    update_health_gauges,
)
from broker.metrics import BrokerMetrics
from broker.node import LeaderInfo
from raft.progress import ProgressState
from raft.raw_node import ProgressView

ME = 1
REPLICATE, PROBE, SNAPSHOT = ProgressState.REPLICATE, ProgressState.PROBE, ProgressState.SNAPSHOT


def _group(leader: bool, last_index: int, followers: dict[int, tuple[int, ProgressState]]) -> Any:
    """A Raft group stand-in; `followers` maps node id -> (match index, progress state)."""
    progress = {}
    if leader:  # status() reports progress only on the leader, itself included
        progress[ME] = ProgressView(last_index, last_index + 1, REPLICATE, False, True, 0)
        for peer, (match, state) in followers.items():
            progress[peer] = ProgressView(match, match + 1, state, False, True, 0)
    status = SimpleNamespace(node_id=ME, progress=progress)
    log = SimpleNamespace(last_index=lambda: last_index)
    node = SimpleNamespace(status=lambda: status, raft=SimpleNamespace(log=log))
    return SimpleNamespace(is_leader=leader, node=node)


def _node(
    partitions: dict[tuple[str, int], Any], leaders: dict[tuple[str, int], int | None]
) -> Any:
    topics: dict[str, Any] = {}
    for topic, index in leaders:
        info = topics.setdefault(topic, SimpleNamespace(name=topic, partitions=[]))
        info.partitions.append(SimpleNamespace(topic=topic, partition=index))

    def leader_of(assignment: Any) -> LeaderInfo | None:
        leader = leaders[(assignment.topic, assignment.partition)]
        return None if leader is None else LeaderInfo(leader, 1)

    return SimpleNamespace(
        partitions={
            key: SimpleNamespace(topic=key[0], index=key[1], group=group)
            for key, group in partitions.items()
        },
        controller=SimpleNamespace(image=SimpleNamespace(topics=topics)),
        leader_of=leader_of,
        metrics=BrokerMetrics(ME),
    )


def test_caught_up_and_streaming_followers_are_not_under_replicated() -> None:
    lag_max = UNDER_REPLICATED_LAG_ENTRIES_MAX
    group = _group(True, 5000, {2: (5000, REPLICATE), 3: (5000 - lag_max, REPLICATE)})
    node = _node({("t", 0): group}, {("t", 0): ME})
    assert compute_health(node).under_replicated == ()
    lags = follower_lags(group, lag_max)
    assert [(f.node_id, f.lag_entries, f.behind) for f in lags] == [
        (2, 0, False),
        (3, lag_max, False),
    ]


def test_a_follower_too_far_behind_makes_its_partition_under_replicated() -> None:
    lag_max = UNDER_REPLICATED_LAG_ENTRIES_MAX
    slow = _group(True, 5000, {2: (5000, REPLICATE), 3: (5000 - lag_max - 1, REPLICATE)})
    fine = _group(True, 5000, {2: (5000, REPLICATE), 3: (4990, REPLICATE)})
    node = _node({("t", 0): slow, ("t", 1): fine}, {("t", 0): ME, ("t", 1): ME})
    assert compute_health(node).under_replicated == (("t", 0),)


def test_a_follower_not_streaming_and_missing_entries_is_behind() -> None:
    """A dead or restarting follower: the leader probes it (or sends a snapshot)."""
    probing = _group(True, 100, {2: (100, REPLICATE), 3: (99, PROBE)})
    snapshot = _group(True, 100, {2: (100, REPLICATE), 3: (40, SNAPSHOT)})
    probing_caught_up = _group(True, 100, {2: (100, REPLICATE), 3: (100, PROBE)})
    node = _node(
        {("t", 0): probing, ("t", 1): snapshot, ("t", 2): probing_caught_up},
        {("t", 0): ME, ("t", 1): ME, ("t", 2): ME},
    )
    assert compute_health(node).under_replicated == (("t", 0), ("t", 1))


def test_only_the_leader_counts_a_partition() -> None:
    follower = _group(False, 100, {})
    node = _node({("t", 0): follower}, {("t", 0): 2})
    assert compute_health(node).under_replicated == ()
    assert follower_lags(follower, 0) == []


def test_leaderless_partitions_and_leader_counts() -> None:
    leaders = {("a", 0): 1, ("a", 1): None, ("b", 0): 2, ("b", 1): 2, ("b", 2): None}
    health = compute_health(_node({}, leaders))
    assert health.leaderless == (("a", 1), ("b", 2))
    assert dict(health.leaders_by_node) == {1: 1, 2: 2}


def test_update_health_gauges_sets_both_gauges() -> None:
    slow = _group(True, 100, {2: (100, REPLICATE), 3: (10, PROBE)})
    node = _node({("t", 0): slow}, {("t", 0): ME, ("t", 1): None, ("u", 0): None})
    update_health_gauges(node)
    registry = node.metrics.registry
    assert registry.get_sample_value("raftka_under_replicated_partitions") == 1
    assert registry.get_sample_value("raftka_leaderless_partitions") == 2
    # Recovery: the follower catches up and leaders are known again.
    node.partitions[("t", 0)].group = _group(True, 100, {2: (100, REPLICATE), 3: (100, REPLICATE)})
    node.leader_of = lambda assignment: LeaderInfo(2, 3)
    update_health_gauges(node)
    assert registry.get_sample_value("raftka_under_replicated_partitions") == 0
    assert registry.get_sample_value("raftka_leaderless_partitions") == 0
