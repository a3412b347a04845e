"""Nemeses: a seeded fault schedule, and an executor that applies it to a real cluster.

The schedule is a pure function of (seed, nemeses, phase length, nodes, partitions), so a
seed replays the same faults at the same times against the same kind of target. Which
node is "the leader of partition 2" is decided when the fault fires, from the nodes'
`/v1/cluster` views. Faults run one at a time, each followed by a quiet gap, the way
Jepsen's standard nemesis package alternates fault and recovery.

Kinds (names accepted by `--nemesis`):
    kill          SIGKILL a partition leader, the controller or a random node; restart.
    kill-leader   SIGKILL the leader of a random partition; restart.
    pause         SIGSTOP (longer than the election timeout) a leader or a random node.
    pause-leader  SIGSTOP the leader of a random partition.
    partition     isolate a leader / isolate a random node (minority vs majority) / one-way.
    slow          delay every Raft link of one node by 50-150 ms.
    lossy         drop 10-30% of one node's Raft messages.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.history import HistoryWriter
from tests.harness import Cluster, NodeNotReady
from tests.powerloss import cut_to_durable

NEMESES = (
    "kill", "kill-leader", "pause", "pause-leader", "partition", "slow", "lossy",
    "power-loss", "failpoint",
)  # fmt: skip
FAILPOINTS = (
    "append_before_fsync",
    "fsync_before_ack",
    "vote_before_persist",
    "vote_after_persist",
)


@dataclass(frozen=True, slots=True)
class Fault:
    fault_id: int
    at_s: float  # from the start of the fault phase
    kind: str  # kill | pause | partition | slow | lossy
    hold_s: float
    params: dict[str, Any] = field(default_factory=dict)


def schedule(
    seed: int, nemeses: list[str], phase_s: float, nodes: int, partitions: int
) -> list[Fault]:
    """Faults for a fault phase of `phase_s` seconds; empty if `nemeses` is empty."""
    unknown = set(nemeses) - set(NEMESES)
    if unknown:
        raise ValueError(f"unknown nemeses {sorted(unknown)}; choose from {NEMESES}")
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = rng.uniform(0.5, 1.5)
    while nemeses and t < phase_s - 1.0:
        name = rng.choice(nemeses)
        kind, params, hold_s = _draw(rng, name, nodes, partitions)
        hold_s = min(hold_s, max(0.5, phase_s - t))
        faults.append(Fault(len(faults) + 1, round(t, 3), kind, round(hold_s, 3), params))
        t += hold_s + rng.uniform(1.5, 3.0)  # a quiet gap: recovery is measured in it
    return faults


def _draw(rng: random.Random, name: str, nodes: int, partitions: int) -> tuple[str, dict[str, Any], float]:  # fmt: skip
    partition = rng.randrange(partitions)
    node = rng.randint(1, nodes)
    if name in ("kill", "kill-leader"):
        target = "leader" if name == "kill-leader" else rng.choice(["leader", "leader", "controller", "node"])  # fmt: skip
        return (
            "kill",
            {"target": target, "partition": partition, "node": node},
            rng.uniform(1.0, 3.0),
        )
    if name in ("pause", "pause-leader"):
        target = "leader" if name == "pause-leader" else rng.choice(["leader", "leader", "node"])
        # The election timeout is 10 ticks x 50 ms (0.5-1 s randomised): pause longer.
        return (
            "pause",
            {"target": target, "partition": partition, "node": node},
            rng.uniform(1.5, 4.0),
        )
    if name == "partition":
        mode = rng.choice(["isolate-leader", "isolate-node", "one-way"])
        peer = rng.choice([n for n in range(1, nodes + 1) if n != node])
        params = {"mode": mode, "target": "leader" if mode == "isolate-leader" else "node",
                  "partition": partition, "node": node, "peer": peer}  # fmt: skip
        return "partition", params, rng.uniform(2.0, 5.0)
    if name == "power-loss":
        # Every node loses power at once: whatever no fsync covered is gone on restart.
        return "power-loss", {"target": "all"}, rng.uniform(0.5, 1.5)
    if name == "failpoint":
        point = rng.choice(FAILPOINTS)
        return "failpoint", {"target": "node", "node": node, "point": point}, rng.uniform(2.0, 4.0)
    if name == "slow":
        return "slow", {"target": "node", "node": node, "delay_ms": rng.randint(50, 150)}, rng.uniform(2.0, 5.0)  # fmt: skip
    assert name == "lossy"
    return "lossy", {"target": "node", "node": node, "loss": round(rng.uniform(0.1, 0.3), 3)}, rng.uniform(2.0, 5.0)  # fmt: skip


def cluster_views(cluster: Cluster, timeout_s: float = 1.0) -> dict[int, dict[str, Any]]:
    """Each running node's `/v1/cluster` JSON (nodes that do not answer are left out)."""
    views = {}
    for node_id in cluster.running():
        status, body = cluster.node(node_id).http_get("/v1/cluster", timeout_s=timeout_s)
        if status == 200:
            with contextlib.suppress(ValueError):
                views[node_id] = json.loads(body)
    return views


def partition_leaders(views: dict[int, dict[str, Any]], topic: str) -> dict[int, int]:
    """partition -> leader, trusting the view with the highest leader epoch."""
    best: dict[int, tuple[int, int]] = {}
    for view in views.values():
        for t in view.get("topics", []):
            if t["name"] != topic:
                continue
            for p in t["partitions"]:
                leader, epoch = p.get("leader"), p.get("leader_epoch", -1)
                if isinstance(leader, int) and leader > 0 and epoch > best.get(p["partition"], (-2, 0))[0]:  # fmt: skip
                    best[p["partition"]] = (epoch, leader)
    return {partition: leader for partition, (_, leader) in best.items()}


def controller(views: dict[int, dict[str, Any]]) -> int | None:
    ids = Counter(v.get("controller_id") for v in views.values() if isinstance(v.get("controller_id"), int))  # fmt: skip
    return ids.most_common(1)[0][0] if ids else None


def high_watermarks(views: dict[int, dict[str, Any]], topic: str) -> dict[int, dict[int, int]]:
    """node -> partition -> high watermark as that node reports it."""
    out: dict[int, dict[int, int]] = {}
    for node_id, view in views.items():
        for t in view.get("topics", []):
            if t["name"] == topic:
                out[node_id] = {p["partition"]: p["high_watermark"] for p in t["partitions"]}
    return out


def post_json(url: str, body: dict[str, Any], timeout_s: float = 2.0) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        resp.read()


class NemesisRunner:
    """Applies a schedule on a thread; every start and stop goes into the history."""

    def __init__(self, cluster: Cluster, history: HistoryWriter, topic: str, faults: list[Fault]) -> None:  # fmt: skip
        self.cluster = cluster
        self.history = history
        self.topic = topic
        self.faults = faults
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: dict[str, Any] | None = None

    def start(self, phase_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(phase_s,), name="nemesis", daemon=True)  # fmt: skip
        self._thread.start()

    def join(self) -> None:
        """Ends the schedule early if need be; the fault in force is stopped first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def _run(self, phase_s: float) -> None:
        t0 = self.history.now_ns()
        for fault in self.faults:
            wait_s = fault.at_s - (self.history.now_ns() - t0) / 1e9
            if self._stop.wait(max(0.0, wait_s)):
                return
            applied = self._start(fault)
            if applied is None:
                continue
            self._stop.wait(fault.hold_s)  # a stop request still ends the fault properly
            self._end(fault, applied)
            if self._stop.is_set():
                return

    def _start(self, fault: Fault) -> dict[str, Any] | None:
        value = {"phase": "start", "fault": fault.kind, "fault_id": fault.fault_id, **fault.params}
        op_id = self.history.invoke("nemesis", "nemesis", value)
        try:
            applied = self._apply(fault)
        except Exception as exc:  # a fault that could not be applied is recorded, not fatal
            self.history.record("nemesis", "info", "nemesis", op_id, value, error=repr(exc))
            self.heal_all()
            return None
        self.history.record("nemesis", "ok", "nemesis", op_id, value | applied)
        return applied

    def _end(self, fault: Fault, applied: dict[str, Any]) -> None:
        value = {"phase": "stop", "fault": fault.kind, "fault_id": fault.fault_id, **applied}
        op_id = self.history.invoke("nemesis", "nemesis", value)
        try:
            self._undo(fault, applied)
        except Exception as exc:
            self.history.record("nemesis", "info", "nemesis", op_id, value, error=repr(exc))
            return
        self.history.record("nemesis", "ok", "nemesis", op_id, value)

    def _victim(self, fault: Fault) -> int:
        target = fault.params.get("target", "node")
        if target == "all":
            return 0
        if target == "node":
            return int(fault.params["node"])
        views = cluster_views(self.cluster)
        if target == "controller":
            node = controller(views)
        else:
            node = partition_leaders(views, self.topic).get(int(fault.params["partition"]))
        if node is None:
            raise RuntimeError(f"no {target} known to the live nodes")
        return node

    def _apply(self, fault: Fault) -> dict[str, Any]:
        victim = self._victim(fault)
        if fault.kind == "power-loss":
            for each in self.cluster.nodes.values():
                if each.is_running():
                    each.kill()
            dropped = {n: cut_to_durable(each.data_dir) for n, each in self.cluster.nodes.items()}
            return {"victim": victim, "bytes_dropped": dropped}
        node = self.cluster.node(victim)
        if fault.kind == "failpoint":
            # Armed with certainty: the node crashes at its next pass through that point.
            post_json(node.http_url + "/v1/faults/failpoint",
                      {"name": fault.params["point"], "probability": 1.0})  # fmt: skip
            return {"victim": victim}
        if fault.kind == "kill":
            node.kill()
        elif fault.kind == "pause":
            node.pause()
        elif fault.kind == "partition" and fault.params["mode"] == "one-way":
            peer = int(fault.params["peer"]) if int(fault.params["peer"]) != victim else int(fault.params["node"])  # fmt: skip
            post_json(
                node.http_url + "/v1/faults/link", {"peer": peer, "direction": "out", "loss": 1.0}
            )
            post_json(self.cluster.http_url(peer) + "/v1/faults/link", {"peer": victim, "direction": "in", "loss": 1.0})  # fmt: skip
            return {"victim": victim, "peer": peer}
        elif fault.kind == "partition":
            for other in self.cluster.nodes:
                if other != victim:
                    post_json(node.http_url + "/v1/faults/link", {"peer": other, "direction": "both", "loss": 1.0})  # fmt: skip
                    post_json(self.cluster.http_url(other) + "/v1/faults/link", {"peer": victim, "direction": "both", "loss": 1.0})  # fmt: skip
        else:
            rule = {"direction": "both", "loss": 0.0, "delay_ms": 0}
            if fault.kind == "slow":
                rule["delay_ms"] = int(fault.params["delay_ms"])
            else:
                rule["loss"] = float(fault.params["loss"])
            for other in self.cluster.nodes:
                if other != victim:
                    post_json(node.http_url + "/v1/faults/link", rule | {"peer": other})
        return {"victim": victim}

    def _undo(self, fault: Fault, applied: dict[str, Any]) -> None:
        if fault.kind == "power-loss":
            for each in self.cluster.nodes.values():
                each.start()
            self.cluster.wait_ready(60)
            return
        node = self.cluster.node(int(applied["victim"]))
        if fault.kind == "failpoint":
            if node.is_running():
                with contextlib.suppress(OSError):
                    post_json(node.http_url + "/v1/faults/failpoint",
                              {"name": fault.params["point"], "probability": 0.0})  # fmt: skip
            else:
                node.start()
                node.wait_ready(30)
            return
        if fault.kind == "kill":
            node.start()
            node.wait_ready(30)
        elif fault.kind == "pause":
            node.resume()
        else:
            self._heal_links()

    def _heal_links(self) -> None:
        for node_id in self.cluster.running():
            with contextlib.suppress(OSError):
                post_json(self.cluster.http_url(node_id) + "/v1/faults/heal", {})

    def heal_all(self) -> None:
        """Resumes paused nodes, restarts dead ones and clears every link rule."""
        for node in self.cluster.nodes.values():
            if node.is_running():
                node.resume()
            elif node.proc is not None:
                node.start()
        self._heal_links()
        with contextlib.suppress(NodeNotReady):
            self.cluster.wait_ready(30)
        self._heal_links()
