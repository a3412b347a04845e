"""Fault injection over HTTP, for chaos tests: off unless `fault_injection=true`.

Raftka's users kill nodes on purpose; to test partitions without root (no iptables),
the node can drop or delay its own Raft traffic to and from chosen peers. The rules
live in the peer transport's `LinkFilter`; these routes edit them:

    GET  /v1/faults                         the rules in force
    POST /v1/faults/link   {"peer": 2, "direction": "out"|"in"|"both",
                            "loss": 1.0, "delay_ms": 0}
    POST /v1/faults/heal   {"peer": 2}  or  {}   (every peer)
    POST /v1/faults/failpoint  {"name": "append_before_fsync", "probability": 1.0}

A one-way partition is a rule in one direction; isolating a node is loss 1.0 both
ways with every peer. Client (Kafka) traffic is never touched.
"""

from __future__ import annotations

import json
from typing import Any

from broker.failpoints import Failpoints
from broker.http_server import HttpRequest, HttpResponse, HttpServer
from broker.peer_transport import LinkFilter


def install_fault_routes(
    http: HttpServer, link_filter: LinkFilter, failpoints: Failpoints | None = None
) -> None:
    async def show(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"rules": link_filter.rules()})

    async def link(request: HttpRequest) -> HttpResponse:
        body = _json(request)
        if body is None:
            return HttpResponse.json({"error": "body must be a JSON object"}, 400)
        peer = body.get("peer")
        direction = body.get("direction", "both")
        loss = body.get("loss", 1.0)
        delay_ms = body.get("delay_ms", 0)
        if not isinstance(peer, int) or direction not in ("in", "out", "both"):
            return HttpResponse.json({"error": "need an int peer and direction in/out/both"}, 400)
        if not isinstance(loss, int | float) or not 0 <= loss <= 1:
            return HttpResponse.json({"error": "loss must be between 0 and 1"}, 400)
        if not isinstance(delay_ms, int) or not 0 <= delay_ms <= 600_000:
            return HttpResponse.json({"error": "delay_ms must be between 0 and 600000"}, 400)
        for d in ("in", "out") if direction == "both" else (direction,):
            link_filter.set_rule(peer, d, loss_ratio=float(loss), delay_ms=delay_ms)
        return HttpResponse.json({"rules": link_filter.rules()})

    async def heal(request: HttpRequest) -> HttpResponse:
        body = _json(request) or {}
        peer = body.get("peer")
        link_filter.heal(peer if isinstance(peer, int) else None)
        return HttpResponse.json({"rules": link_filter.rules()})

    async def failpoint(request: HttpRequest) -> HttpResponse:
        body = _json(request)
        if body is None or failpoints is None:
            return HttpResponse.json({"error": "body must be a JSON object"}, 400)
        name = body.get("name")
        probability = body.get("probability", 1.0)
        try:
            failpoints.arm(str(name), float(probability))
        except (TypeError, ValueError) as error:
            return HttpResponse.json({"error": str(error)}, 400)
        return HttpResponse.json({"failpoints": failpoints.armed})

    http.add_route("POST", "/v1/faults/failpoint", failpoint)
    http.add_route("GET", "/v1/faults", show)
    http.add_route("POST", "/v1/faults/link", link)
    http.add_route("POST", "/v1/faults/heal", heal)


def _json(request: HttpRequest) -> dict[str, Any] | None:
    if not request.body:
        return {}
    try:
        value = json.loads(request.body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
