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
    power-loss    SIGKILL every node, cut files to what fsync made durable, restart.
    failpoint     arm a crash failpoint on one node; restart it after it crashed.
    corrupt       SIGKILL one node, flip bytes in (or truncate) the middle of one of its
                  partition segment files, restart it; see `corrupt_segment`.

Sizes: a minority is (nodes - 1) // 2 nodes. On 5 nodes `kill` and `pause` may also hit
a random minority of two nodes at once and `partition` may cut a random minority from
the majority; a 3-node schedule draws exactly what it drew before 5-node support.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.history import HistoryWriter
from tests.harness import BrokerProcess, Cluster, NodeNotReady
from tests.powerloss import cut_to_durable

NEMESES = (
    "kill", "kill-leader", "pause", "pause-leader", "partition", "slow", "lossy",
    "power-loss", "failpoint", "corrupt",
)  # fmt: skip
SEGMENT_NAME = re.compile(r"\d{20}\.log")
CORRUPT_BYTES = 8  # bytes flipped by one corruption
CORRUPT_RECOVERY_S = 10.0  # how long a corrupted node gets to become ready on its own
RESYNC_WAIT_S = 5.0  # how long the nemesis watches a recovered node catch up
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


def minority_size(nodes: int) -> int:
    return (nodes - 1) // 2


def _minority(rng: random.Random, nodes: int) -> list[int]:
    return sorted(rng.sample(range(1, nodes + 1), minority_size(nodes)))


def _draw(rng: random.Random, name: str, nodes: int, partitions: int) -> tuple[str, dict[str, Any], float]:  # fmt: skip
    partition = rng.randrange(partitions)
    node = rng.randint(1, nodes)
    big = nodes >= 5  # only then is a minority more than one node
    if name in ("kill", "kill-leader"):
        targets = ["leader", "leader", "controller", "node"] + (["minority"] if big else [])
        target = "leader" if name == "kill-leader" else rng.choice(targets)
        params: dict[str, Any] = {"target": target, "partition": partition, "node": node}
        if target == "minority":
            params["nodes"] = _minority(rng, nodes)
        return "kill", params, rng.uniform(1.0, 3.0)
    if name in ("pause", "pause-leader"):
        targets = ["leader", "leader", "node"] + (["minority"] if big else [])
        target = "leader" if name == "pause-leader" else rng.choice(targets)
        params = {"target": target, "partition": partition, "node": node}
        if target == "minority":
            params["nodes"] = _minority(rng, nodes)
        # The election timeout is 10 ticks x 50 ms (0.5-1 s randomised): pause longer.
        return "pause", params, rng.uniform(1.5, 4.0)
    if name == "partition":
        mode = rng.choice(["isolate-leader", "isolate-node", "one-way"] + (["minority"] if big else []))  # fmt: skip
        peer = rng.choice([n for n in range(1, nodes + 1) if n != node])
        params = {"mode": mode, "target": "leader" if mode == "isolate-leader" else "node",
                  "partition": partition, "node": node, "peer": peer}  # fmt: skip
        if mode == "minority":
            params |= {"target": "minority", "nodes": _minority(rng, nodes)}
        return "partition", params, rng.uniform(2.0, 5.0)
    if name == "corrupt":
        # One node at a time (faults never overlap), so two healthy replicas keep the data.
        params = {"target": rng.choice(["leader", "node"]), "partition": partition, "node": node,
                  "mode": rng.choice(["flip", "truncate"]), "where": round(rng.uniform(0.2, 0.8), 3)}  # fmt: skip
        return "corrupt", params, rng.uniform(1.0, 2.0)
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
            outcome = self._undo(fault, applied)
        except Exception as exc:
            self.history.record("nemesis", "info", "nemesis", op_id, value, error=repr(exc))
            return
        self.history.record("nemesis", "ok", "nemesis", op_id, value | outcome)

    def _victims(self, fault: Fault) -> list[int]:
        target = fault.params.get("target", "node")
        if target == "all":
            return sorted(self.cluster.nodes)
        if target == "node":
            return [int(fault.params["node"])]
        if target == "minority":
            return [int(n) for n in fault.params["nodes"]]
        views = cluster_views(self.cluster)
        if target == "controller":
            node = controller(views)
        else:
            node = partition_leaders(views, self.topic).get(int(fault.params["partition"]))
        if node is None:
            raise RuntimeError(f"no {target} known to the live nodes")
        return [node]

    def _link(self, node_id: int, rule: dict[str, Any]) -> None:
        post_json(self.cluster.http_url(node_id) + "/v1/faults/link", rule)

    def _apply(self, fault: Fault) -> dict[str, Any]:
        victims = self._victims(fault)
        applied: dict[str, Any] = {"victim": victims[0], "victims": victims}
        if fault.kind == "power-loss":
            for each in self.cluster.nodes.values():
                if each.is_running():
                    each.kill()
            dropped = {n: cut_to_durable(each.data_dir) for n, each in self.cluster.nodes.items()}
            return applied | {"victim": 0, "bytes_dropped": dropped}
        if fault.kind == "corrupt":
            node = self.cluster.node(victims[0])
            node.kill()
            return applied | corrupt_segment(node.data_dir, self.topic, int(fault.params["partition"]),
                                             str(fault.params["mode"]), float(fault.params["where"]))  # fmt: skip
        if fault.kind == "failpoint":
            # Armed with certainty: the node crashes at its next pass through that point.
            post_json(self.cluster.http_url(victims[0]) + "/v1/faults/failpoint",
                      {"name": fault.params["point"], "probability": 1.0})  # fmt: skip
        elif fault.kind == "kill":
            for v in victims:
                self.cluster.node(v).kill()
        elif fault.kind == "pause":
            for v in victims:
                self.cluster.node(v).pause()
        elif fault.kind == "partition" and fault.params["mode"] == "one-way":
            victim = victims[0]
            peer = int(fault.params["peer"]) if int(fault.params["peer"]) != victim else int(fault.params["node"])  # fmt: skip
            if peer == victim:  # the leader was drawn as the peer too: any other node
                peer = min(n for n in self.cluster.nodes if n != victim)
            self._link(victim, {"peer": peer, "direction": "out", "loss": 1.0})
            self._link(peer, {"peer": victim, "direction": "in", "loss": 1.0})
            applied["peer"] = peer
        elif fault.kind == "partition":
            # The victims (one node or a minority) keep talking among themselves; every
            # link between them and the rest drops everything, both ways.
            others = [n for n in self.cluster.nodes if n not in victims]
            for v in victims:
                for other in others:
                    self._link(v, {"peer": other, "direction": "both", "loss": 1.0})
                    self._link(other, {"peer": v, "direction": "both", "loss": 1.0})
        else:
            rule: dict[str, Any] = {"direction": "both", "loss": 0.0, "delay_ms": 0}
            if fault.kind == "slow":
                rule["delay_ms"] = int(fault.params["delay_ms"])
            else:
                rule["loss"] = float(fault.params["loss"])
            for other in self.cluster.nodes:
                if other != victims[0]:
                    self._link(victims[0], rule | {"peer": other})
        return applied

    def _undo(self, fault: Fault, applied: dict[str, Any]) -> dict[str, Any]:
        """Ends a fault; returns what the stop event should add to the history."""
        victims = [int(v) for v in applied["victims"]]
        if fault.kind == "power-loss":
            for each in self.cluster.nodes.values():
                each.start()
            self.cluster.wait_ready(60)
        elif fault.kind == "corrupt":
            return self._recover_corrupted(fault, applied)
        elif fault.kind == "failpoint":
            node = self.cluster.node(victims[0])
            if node.is_running():
                with contextlib.suppress(OSError):
                    post_json(node.http_url + "/v1/faults/failpoint",
                              {"name": fault.params["point"], "probability": 0.0})  # fmt: skip
            else:
                node.start()
                node.wait_ready(30)
        elif fault.kind == "kill":
            for v in victims:
                self.cluster.node(v).start()
            self.cluster.wait_ready(30, nodes=victims)
        elif fault.kind == "pause":
            for v in victims:
                self.cluster.node(v).resume()
        else:
            self._heal_links()
        return {}

    def _recover_corrupted(self, fault: Fault, applied: dict[str, Any]) -> dict[str, Any]:
        """Restarts a corrupted node and records how it came back.

        "self": it became ready with the corrupted file (it must have detected the damage
        and re-synced, or cut a torn tail). "restored": it refused the file (or exited),
        so the operator's repair is emulated: stop it, put the original segment bytes
        back (only if the broker left the corrupted file as it was) and restart.
        "failed": neither worked; the node stays down or unready. The stop event carries
        the outcome, the seconds to readiness and to the partition's re-sync.
        """
        node = self.cluster.node(int(applied["victim"]))
        started = time.monotonic()
        restart_wall = time.time()  # the broker logs wall-clock times: compare in those
        log_from = node.log_path.stat().st_size if node.log_path.exists() else 0
        node.start()
        outcome = "self"
        try:
            node.wait_ready(CORRUPT_RECOVERY_S)
        except NodeNotReady as exc:
            applied = applied | {"not_ready": str(exc).splitlines()[0][:300]}
            outcome = self._repair(node, applied, log_from)
        ready_s = round(time.monotonic() - started, 3)
        resync_s = self._await_resync(node.node_id, int(fault.params["partition"])) if outcome != "failed" else None  # fmt: skip
        caught_up_s = ready_s + resync_s if resync_s is not None else ready_s
        return {"recovery": outcome, "ready_s": ready_s, "resync_s": resync_s,
                "restart_wall": restart_wall, "caught_up_wall": restart_wall + caught_up_s,
                **{k: applied[k] for k in ("not_ready",) if k in applied}}  # fmt: skip

    def _repair(self, node: BrokerProcess, applied: dict[str, Any], log_from: int) -> str:
        """A corrupted node that is not ready: if its log shows it refused the corrupt
        segment (or it exited), restore the original bytes and restart it ("restored");
        if it is merely slow, give it more time ("self"); otherwise "failed"."""
        with open(node.log_path, "rb") as f:
            f.seek(log_from)
            refused = b"CorruptLogError" in f.read()
        if node.is_running() and not refused:
            try:
                node.wait_ready(2 * CORRUPT_RECOVERY_S)
                return "self"
            except NodeNotReady:
                return "failed"
        if node.is_running():
            node.kill()
        if not restore_segment(applied):
            return "failed"
        node.start()
        try:
            node.wait_ready(30)
        except NodeNotReady:
            return "failed"
        return "restored"

    def _await_resync(self, node_id: int, partition: int) -> float | None:
        """Seconds until the node reports the partition's high watermark that its leader
        reported when the wait began (None if not within RESYNC_WAIT_S)."""
        started = time.monotonic()
        views = cluster_views(self.cluster)
        hws = high_watermarks(views, self.topic)
        target = max((h.get(partition, 0) for n, h in hws.items() if n != node_id), default=0)
        while time.monotonic() - started < RESYNC_WAIT_S:
            status, body = self.cluster.node(node_id).http_get("/v1/cluster", timeout_s=1.0)
            if status == 200:
                with contextlib.suppress(ValueError):
                    mine = high_watermarks({node_id: json.loads(body)}, self.topic)
                    if mine.get(node_id, {}).get(partition, -1) >= target:
                        return round(time.monotonic() - started, 3)
            time.sleep(0.1)  # polling interval while the replica catches up
        return None

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


def corrupt_segment(data_dir: Path, topic: str, partition: int, mode: str, where: float) -> dict[str, Any]:  # fmt: skip
    """Damages the middle of the partition's largest segment file on a stopped node.

    "flip" inverts CORRUPT_BYTES bytes at `where` (a fraction of the file), so a frame
    fails its CRC with valid frames after it; "truncate" cuts the file there, which the
    broker cannot tell from a torn write. Returns what `restore_segment` needs.
    """
    directory = data_dir / f"{topic}-{partition}"
    segments = [p for p in directory.iterdir() if SEGMENT_NAME.fullmatch(p.name)] if directory.is_dir() else []  # fmt: skip
    if not segments:
        raise RuntimeError(f"no segment file under {directory}")
    path = max(segments, key=lambda p: (p.stat().st_size, p.name))
    original = path.read_bytes()
    if len(original) < 2 * CORRUPT_BYTES:
        raise RuntimeError(f"{path} has only {len(original)} bytes")
    at = min(len(original) - CORRUPT_BYTES, max(1, int(len(original) * where)))
    if mode == "flip":
        damaged = original[:at] + bytes(b ^ 0xFF for b in original[at : at + CORRUPT_BYTES]) + original[at + CORRUPT_BYTES :]  # fmt: skip
    else:
        damaged = original[:at]
    path.write_bytes(damaged)
    # The backup lives outside the data directory: the broker never sees it.
    backup = data_dir.parent / "chaos-backups" / f"{data_dir.name}-{topic}-{partition}-{path.name}"
    backup.parent.mkdir(exist_ok=True)
    backup.write_bytes(original)
    group_id = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        group_id = json.loads((directory / "partition.json").read_text()).get("group_id")
    return {"file": str(path), "backup": str(backup), "at": at, "file_bytes": len(original),
            "mode": mode, "damaged_sha": _digest(damaged), "group_id": group_id}  # fmt: skip


def restore_segment(applied: dict[str, Any]) -> bool:
    """Puts the original bytes back if the file is still exactly as the nemesis left it."""
    path, backup = Path(applied["file"]), Path(applied["backup"])
    if not backup.exists() or not path.exists() or _digest(path.read_bytes()) != applied["damaged_sha"]:  # fmt: skip
        return False
    path.write_bytes(backup.read_bytes())
    return True


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
