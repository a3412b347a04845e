"""Cluster-health gauges an operator alerts on: under-replicated and leaderless partitions.

Kafka's two most watched broker metrics have no counter to increment: they are facts about
the current state, so they are recomputed from that state (the node calls
`update_health_gauges` about once a second) instead of being maintained on every event.

- **Under-replicated**: a partition led by this node where some follower is too far
  behind. Raft has no ISR, so "too far" is read from the leader's replication progress:
  a follower is behind when its match index lags the leader's last index by more than
  `lag_entries_max` entries (a slow follower), or when the leader is not streaming to it
  (progress state PROBE or SNAPSHOT) while it misses entries (a dead, partitioned or
  restarting follower). Counted only on the leader, so summing the gauge over the nodes
  counts each partition once.
- **Leaderless**: a partition of the metadata image for which this node knows no leader
  (`Node.leader_of` is None). Every node reports its own view; alert on the max.

`compute_health` is pure over the node's attributes (tests feed it stand-ins);
`update_health_gauges` writes its result into the node's gauges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raft.progress import ProgressState

if TYPE_CHECKING:
    from broker.node import Node

#: A follower this many Raft entries (produce batches, no-ops) behind is under-replicated.
#: Large enough that a follower streaming a pipelined produce load is not flagged.
UNDER_REPLICATED_LAG_ENTRIES_MAX = 1000


@dataclass(frozen=True, slots=True)
class FollowerLag:
    """One follower of a partition led here, as the leader's progress tracker sees it."""

    node_id: int
    match_index: int
    lag_entries: int
    state: str
    behind: bool


@dataclass(frozen=True, slots=True)
class HealthSummary:
    under_replicated: tuple[tuple[str, int], ...]
    leaderless: tuple[tuple[str, int], ...]
    #: node id -> partitions it leads, from this node's view of the leaders.
    leaders_by_node: Mapping[int, int]


def follower_lags(group: Any, lag_entries_max: int) -> list[FollowerLag]:
    """The followers of a Raft group this node leads (empty when it does not lead it)."""
    status = group.node.status()
    if not status.progress:  # only a leader tracks progress
        return []
    last_index = group.node.raft.log.last_index()
    lags = []
    for peer, progress in sorted(status.progress.items()):
        if peer == status.node_id:
            continue
        lag = max(0, last_index - progress.match_index)
        not_streaming = progress.state != ProgressState.REPLICATE
        behind = lag > lag_entries_max or (not_streaming and lag > 0)
        lags.append(FollowerLag(peer, progress.match_index, lag, progress.state.name, behind))
    return lags


def _under_replicated(partitions: Iterable[Any], lag_entries_max: int) -> list[tuple[str, int]]:
    found = []
    for partition in partitions:
        group = partition.group
        if group is None or not group.is_leader:
            continue
        if any(f.behind for f in follower_lags(group, lag_entries_max)):
            found.append((partition.topic, partition.index))
    return found


def compute_health(
    node: Node, lag_entries_max: int = UNDER_REPLICATED_LAG_ENTRIES_MAX
) -> HealthSummary:
    """Reads the node's partitions and metadata image; changes nothing."""
    leaderless = []
    leaders: Counter[int] = Counter()
    for info in node.controller.image.topics.values():
        for assignment in info.partitions:
            leader = node.leader_of(assignment)
            if leader is None:
                leaderless.append((info.name, assignment.partition))
            else:
                leaders[leader.leader_id] += 1
    return HealthSummary(
        under_replicated=tuple(
            sorted(_under_replicated(node.partitions.values(), lag_entries_max))
        ),
        leaderless=tuple(sorted(leaderless)),
        leaders_by_node=dict(sorted(leaders.items())),
    )


def update_health_gauges(
    node: Node, lag_entries_max: int = UNDER_REPLICATED_LAG_ENTRIES_MAX
) -> None:
    """Sets raftka_under_replicated_partitions and raftka_leaderless_partitions."""
    summary = compute_health(node, lag_entries_max)
    node.metrics.under_replicated_partitions.set(len(summary.under_replicated))
    node.metrics.leaderless_partitions.set(len(summary.leaderless))
