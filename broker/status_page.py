"""The human status page at the HTTP listener's `/`: the cluster as this node sees it.

Plain server-rendered HTML (no scripts, no external assets) so it works without a
Grafana and from `curl`: nodes, topics, partitions with leader, replicas, epochs and
offsets. Everything comes from `Node.cluster_info()`, the same data as `/v1/cluster`.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from broker.http_server import HttpResponse

if TYPE_CHECKING:
    from broker.node import Node

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}"
    "th{background:#f3f3f3}td.l,th.l{text-align:left}"
)


def _cell(value: Any, left: bool = False) -> str:
    text = "-" if value is None else html.escape(str(value))
    return f'<td class="l">{text}</td>' if left else f"<td>{text}</td>"


def render_status_page(node: Node) -> HttpResponse:
    info = node.cluster_info()
    rows = []
    rows.append(f"<h1>Raftka node {info['node_id']}</h1>")
    rows.append(
        f"<p>cluster <b>{html.escape(str(info['cluster_id']))}</b>, controller "
        f"{info['controller_id']}, metadata index {info['metadata_applied_index']}</p>"
    )
    rows.append('<h2>Nodes</h2><table><tr><th>id</th><th class="l">listeners</th></tr>')
    for broker in info["brokers"]:
        listeners = ", ".join(f"{n}://{h}:{p}" for n, h, p in broker["listeners"])
        rows.append(f"<tr>{_cell(broker['node_id'])}{_cell(listeners, True)}</tr>")
    rows.append("</table><h2>Partitions</h2><table><tr>")
    for name in (
        "topic",
        "partition",
        "leader",
        "epoch",
        "replicas",
        "log start",
        "high watermark",
        "log end",
    ):
        rows.append(f'<th class="{"l" if name == "topic" else ""}">{name}</th>')
    rows.append("</tr>")
    for topic in info["topics"]:
        for p in topic["partitions"]:
            rows.append(
                "<tr>"
                + _cell(topic["name"], True)
                + _cell(p["partition"])
                + _cell(p["leader"])
                + _cell(p["leader_epoch"])
                + _cell(",".join(map(str, p["replicas"])))
                + _cell(p["log_start_offset"])
                + _cell(p["high_watermark"])
                + _cell(p["log_end_offset"])
                + "</tr>"
            )
    rows.append("</table>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Raftka</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(rows)}</body></html>"
    )
    return HttpResponse(200, page.encode(), "text/html; charset=utf-8")
