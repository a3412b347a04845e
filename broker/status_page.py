"""The human status page at the HTTP listener's `/`: the cluster as this node sees it.

Plain server-rendered HTML (no scripts, no external assets) so it works without a
Grafana and from `curl`: nodes (with how many partitions each leads), topics, partitions
with leader, replicas, epochs and offsets, the replication lag of each follower, and the
consumer groups this node coordinates with their lag. Topics and offsets come from
`Node.cluster_info()`, the same data as `/v1/cluster`.

Two facts are known only where they live, so each node's page shows its own share:
follower lag is tracked by the partition's leader (Raft progress), and a group's state
lives on its coordinator. The page says so instead of showing blanks.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.health_metrics import compute_health, follower_lags
from broker.http_server import HttpResponse

if TYPE_CHECKING:
    from broker.node import Node

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}"
    "th{background:#f3f3f3}td.l,th.l{text-align:left}.bad{color:#b00;font-weight:bold}"
)
_PARTITION_COLUMNS = (
    "topic",
    "partition",
    "leader",
    "epoch",
    "replicas",
    "log start",
    "high watermark",
    "log end",
    "followers: lag in entries",
)
_GROUP_COLUMNS = ("group", "state", "generation", "members", "partitions", "lag")


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One consumer group coordinated here. `lag` sums the partitions hosted here."""

    group_id: str
    state: str
    generation: int
    members: int
    partitions: int
    lag: int
    lag_complete: bool


def _cell(value: Any, left: bool = False) -> str:
    text = "-" if value is None else html.escape(str(value))
    return f'<td class="l">{text}</td>' if left else f"<td>{text}</td>"


def _header(names: Iterable[str], left: frozenset[str]) -> str:
    cells = "".join(f'<th class="{"l" if n in left else ""}">{n}</th>' for n in names)
    return f"<tr>{cells}</tr>"


def _followers_text(node: Node, topic: str, index: int) -> str | None:
    """'2: 0, 3: 12 (PROBE)' on the leader; None where the lag is not known here."""
    local = node.partitions.get((topic, index))
    if local is None or local.group is None or not local.group.is_leader:
        return None
    parts = []
    for f in follower_lags(local.group, 0):
        state = "" if f.state == "REPLICATE" else f" ({f.state})"
        parts.append(f"{f.node_id}: {f.lag_entries}{state}")
    return ", ".join(parts) or "(no followers)"


def consumer_groups(node: Node) -> list[GroupRow]:
    """The groups whose coordinator shards are loaded on this node.

    Reads the coordinator's loaded shards in memory (no I/O, no await). A group's lag is
    the high watermark minus the committed offset, summed over the partitions whose
    replica lives on this node (`lag_complete` is False when some are elsewhere).
    """
    rows = [_group_row(node, group) for group in node.groups.coordinator.loaded_groups()]
    return sorted(rows, key=lambda r: r.group_id)


def _group_row(node: Node, group: Any) -> GroupRow:
    lag, complete = 0, True
    for (topic, index), committed in group.offsets.items():
        local = node.partitions.get((topic, index))
        if local is None:
            complete = False
            continue
        lag += max(0, local.high_watermark - committed.offset)
    return GroupRow(
        group.group_id,
        group.state.value,
        group.generation_id,
        len(group.members),
        len(group.offsets),
        lag,
        complete,
    )


def _nodes_section(info: dict[str, Any], leaders_by_node: dict[int, int]) -> Iterator[str]:
    yield "<h2>Nodes</h2><table>"
    yield _header(("id", "listeners", "partitions led"), frozenset({"listeners"}))
    for broker in info["brokers"]:
        listeners = ", ".join(f"{n}://{h}:{p}" for n, h, p in broker["listeners"])
        led = leaders_by_node.get(broker["node_id"], 0)
        yield f"<tr>{_cell(broker['node_id'])}{_cell(listeners, True)}{_cell(led)}</tr>"
    yield "</table>"


def _partitions_section(node: Node, info: dict[str, Any]) -> Iterator[str]:
    yield "<h2>Partitions</h2><p>Follower lag is known on the partition leader's page.</p>"
    yield "<table>" + _header(_PARTITION_COLUMNS, frozenset({"topic", _PARTITION_COLUMNS[-1]}))
    for topic in info["topics"]:
        for p in topic["partitions"]:
            leader = p["leader"]
            leader_cell = _cell(leader) if leader is not None else '<td class="bad">none</td>'
            yield (
                "<tr>"
                + _cell(topic["name"], True)
                + _cell(p["partition"])
                + leader_cell
                + _cell(p["leader_epoch"])
                + _cell(",".join(map(str, p["replicas"])))
                + _cell(p["log_start_offset"])
                + _cell(p["high_watermark"])
                + _cell(p["log_end_offset"])
                + _cell(_followers_text(node, topic["name"], p["partition"]), True)
                + "</tr>"
            )
    yield "</table>"


def _groups_section(rows: list[GroupRow]) -> Iterator[str]:
    yield "<h2>Consumer groups coordinated here</h2>"
    if not rows:
        yield "<p>none</p>"
        return
    yield "<table>" + _header(_GROUP_COLUMNS, frozenset({"group", "state"}))
    for r in rows:
        lag = str(r.lag) if r.lag_complete else f"{r.lag}+ (some partitions elsewhere)"
        yield (
            f"<tr>{_cell(r.group_id, True)}{_cell(r.state, True)}{_cell(r.generation)}"
            f"{_cell(r.members)}{_cell(r.partitions)}{_cell(lag)}</tr>"
        )
    yield "</table>"


def render_status_page(node: Node) -> HttpResponse:
    info = node.cluster_info()
    health = compute_health(node)
    rows = [f"<h1>Raftka node {info['node_id']}</h1>"]
    rows.append(
        f"<p>cluster <b>{html.escape(str(info['cluster_id']))}</b>, controller "
        f"{info['controller_id']}, metadata index {info['metadata_applied_index']}</p>"
    )
    rows.append(
        f"<p>under-replicated partitions led here: {len(health.under_replicated)}; "
        f"partitions without a known leader: {len(health.leaderless)}</p>"
    )
    rows.extend(_nodes_section(info, dict(health.leaders_by_node)))
    rows.extend(_partitions_section(node, info))
    rows.extend(_groups_section(consumer_groups(node)))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Raftka</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(rows)}</body></html>"
    )
    return HttpResponse(200, page.encode(), "text/html; charset=utf-8")
