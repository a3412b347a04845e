"""One chaos run end to end, and a campaign of runs with a summary table.

A run: start a real cluster (fault_injection=true, 3 or 5 nodes) under the run directory,
create the topic (every node a replica), run the workload (`queue` or `group`) with a
warm-up, a fault phase and a recovery phase, heal everything, wait for the replicas' high
watermarks to agree, read every partition to its high watermark, stop the nodes, append
the white-box observations to the history (each won election from the nodes' logs, the
replica-by-replica comparison of the partitions' files below the high watermark), then
check the history and write `history.jsonl`, `report.json` and `report.txt` next to
the nodes' logs and data.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from tests.chaos.checker import SAFETY_ANOMALIES, CheckResult, availability_by_kind, check
from tests.chaos.group_workload import GroupConsumerClient, fetch_committed
from tests.chaos.history import HistoryWriter, Op, read_history, write_history
from tests.chaos.nemesis import (  # fmt: skip
    NemesisRunner,
    cluster_views,
    high_watermarks,
    partition_leaders,
    schedule,
)
from tests.chaos.replicas import compare_cluster, leader_events
from tests.chaos.workload import Workload, WorkloadConfig, final_reads
from tests.harness import Cluster

TOPIC = "chaos"
EXAMPLES_MAX = 20  # anomaly examples kept per kind in the report
WORKLOADS = ("queue", "group")
NODE_COUNTS = (3, 5)
GROUP_MEMBERS = 3
BROKER_SETTINGS = {"tick_ms": "50", "fault_injection": "true", "durability_journal": "true"}


@dataclass(frozen=True, slots=True)
class RunConfig:
    seed: int
    nemeses: tuple[str, ...]
    duration_s: float = 60.0
    nodes: int = 3
    partitions: int = 4
    sends_per_s: float = 150.0
    warmup_s: float = 2.0
    recovery_s: float = 3.0
    run_dir: Path | None = None
    workload: str = "queue"

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload {self.workload!r}: choose from {WORKLOADS}")
        if self.nodes not in NODE_COUNTS:
            raise ValueError(f"nodes {self.nodes}: choose from {NODE_COUNTS}")

    def replay_command(self) -> str:
        return (
            f"python -m tests.chaos --seed {self.seed} --nemesis {','.join(self.nemeses) or 'none'}"
            f" --duration {self.duration_s:g} --partitions {self.partitions} --rate {self.sends_per_s:g}"
            f" --nodes {self.nodes} --workload {self.workload}"
        )


@dataclass(frozen=True, slots=True)
class RunSummary:
    seed: int
    nemeses: str
    duration_s: float
    valid: bool
    acked: int
    sends: int
    indefinite: int
    failed: int
    lost: int
    unseen: int
    duplicates: int
    inconsistent: int
    other_anomalies: int
    faults: int
    worst_unavailability_s: float
    median_recovery_s: float | None
    unrecovered_faults: int
    hw_converged: bool
    broker_tracebacks: int
    run_dir: str
    replay: str
    anomaly_counts: dict[str, int] = field(default_factory=dict)
    nodes: int = 3
    workload: str = "queue"
    elections_won: int = 0
    election_safety_violations: int = 0
    replica_entries_compared: int = 0
    replica_divergences: int = 0
    commits_ok: int = 0
    broker_errors: dict[str, int] = field(default_factory=dict)  # ERROR lines by message


def default_run_dir(seed: int) -> Path:
    return Path("/tmp/raftka-chaos") / f"{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(cfg: RunConfig) -> RunSummary:
    run_dir = cfg.run_dir or default_run_dir(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    phase_s = max(0.0, cfg.duration_s - cfg.warmup_s - cfg.recovery_s)
    faults = schedule(cfg.seed, list(cfg.nemeses), phase_s, cfg.nodes, cfg.partitions)
    (run_dir / "schedule.json").write_text(json.dumps([asdict(f) for f in faults], indent=1))
    cluster = Cluster(cfg.nodes, run_dir / "cluster", settings=BROKER_SETTINGS)
    history_path = run_dir / "history.jsonl"
    try:
        cluster.start(timeout_s=60)
        _create_topic(cluster, cfg.partitions, cfg.nodes)
        with HistoryWriter(history_path) as history:
            hw_converged, low_hws = _drive(cfg, cluster, history, faults, phase_s)
    finally:
        cluster.stop_all()
    append_white_box(history_path, cluster, low_hws)
    result = check(read_history(history_path))
    summary = summarize(cfg, run_dir, result, hw_converged, _count_tracebacks(run_dir))
    summary = replace(summary, broker_errors=broker_errors(run_dir / "cluster"))
    write_report(run_dir, cfg, result, summary)
    return summary


def _drive(
    cfg: RunConfig, cluster: Cluster, history: HistoryWriter, faults: list[Any], phase_s: float
) -> tuple[bool, dict[int, int]]:
    wcfg = WorkloadConfig(cluster.bootstrap, TOPIC, cfg.partitions, cfg.seed, sends_per_s=cfg.sends_per_s)  # fmt: skip
    members = None
    if cfg.workload == "group":
        members = [GroupConsumerClient(i, wcfg, history) for i in range(GROUP_MEMBERS)]
    workload = Workload(wcfg, history, members)
    nemesis = NemesisRunner(cluster, history, TOPIC, faults)
    t0 = time.monotonic()
    workload.start()
    time.sleep(cfg.warmup_s)  # the warm-up is workload time, not a readiness wait
    nemesis.start(phase_s)
    time.sleep(max(0.0, t0 + cfg.warmup_s + phase_s - time.monotonic()))
    nemesis.join()
    heal_id = history.invoke("nemesis", "heal-all")
    nemesis.heal_all()
    history.record("nemesis", "ok", "heal-all", heal_id)
    time.sleep(max(0.0, t0 + cfg.duration_s - time.monotonic()))
    workload.stop()
    if cfg.workload == "group":
        fetch_committed(cluster.bootstrap, TOPIC, cfg.partitions, history)
    converged, hws, low_hws = _await_converged_hw(cluster, cfg.partitions, timeout_s=10.0)
    final_reads(cluster.bootstrap, TOPIC, hws, history)
    return converged, low_hws


def append_white_box(history_path: Path, cluster: Cluster, low_hws: dict[int, int]) -> None:
    """Appends, after the nodes stopped, one `raft-leader` op per won election found in
    the nodes' logs and one `replica-compare` op (the partitions' files compared below
    the lowest high watermark any node reported), so a saved history re-checks alone."""
    ops = read_history(history_path)
    index = max((op.index for op in ops), default=-1) + 1
    time_ns = max((op.time_ns for op in ops), default=0)
    extra: list[Op] = []
    logs = {n: node.log_path for n, node in cluster.nodes.items()}
    for event in leader_events(logs):
        extra.append(Op(index + len(extra), time_ns, f"node-{event['log']}", "ok", "raft-leader", -1, event))  # fmt: skip
    data_dirs = {n: node.data_dir for n, node in cluster.nodes.items()}
    comparison = compare_cluster(data_dirs, TOPIC, low_hws)
    extra.append(Op(index + len(extra), time_ns, "checker", "ok", "replica-compare", -1, comparison))  # fmt: skip
    write_history(history_path, [*ops, *extra])


def _create_topic(cluster: Cluster, partitions: int, replicas: int) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    # Every node is a replica, so a minority of the nodes is a minority of every partition.
    for future in admin.create_topics([NewTopic(TOPIC, partitions, replicas)]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while len(partition_leaders(cluster_views(cluster), TOPIC)) < partitions:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"topic {TOPIC} has no leader for every partition\n{cluster.logs()}"
            )
        time.sleep(0.1)  # polling interval while waiting for the elections


def _await_converged_hw(
    cluster: Cluster, partitions: int, timeout_s: float
) -> tuple[bool, dict[int, int], dict[int, int]]:
    """Waits until every node reports the same high watermarks; returns (agreed, the
    highest and the lowest high watermark per partition)."""
    deadline = time.monotonic() + timeout_s
    while True:
        hws = high_watermarks(cluster_views(cluster, timeout_s=2.0), TOPIC)
        per_partition = {p: max((h.get(p, 0) for h in hws.values()), default=0) for p in range(partitions)}  # fmt: skip
        lowest = {p: min((h.get(p, 0) for h in hws.values()), default=0) for p in range(partitions)}  # fmt: skip
        agreed = len(hws) == len(cluster.nodes) and len({tuple(sorted(h.items())) for h in hws.values()}) == 1  # fmt: skip
        if agreed or time.monotonic() > deadline:
            return agreed, per_partition, lowest
        time.sleep(0.2)


ERROR_LINE = re.compile(r'level=ERROR .*?msg=("(?:[^"\\]|\\.)*"|\S+)')
ERROR_KINDS_MAX = 10


def broker_errors(cluster_dir: Path) -> dict[str, int]:
    """ERROR lines in the nodes' logs counted by message (the most frequent first): a
    health signal next to the safety checks (a dead peer link shows up here)."""
    counts: Counter[str] = Counter()
    for log in sorted(cluster_dir.glob("node-*.log")):
        for m in ERROR_LINE.finditer(log.read_text(errors="replace")):
            counts[re.sub(r"\d+", "N", m[1].strip('"'))[:120]] += 1
    return dict(counts.most_common(ERROR_KINDS_MAX))


def _count_tracebacks(run_dir: Path) -> int:
    total = 0
    for log in (run_dir / "cluster").glob("node-*.log"):
        total += log.read_text(errors="replace").count("Traceback")
    return total


def summarize(cfg: RunConfig, run_dir: Path, result: CheckResult, hw_converged: bool, tracebacks: int) -> RunSummary:  # fmt: skip
    counts = result.anomaly_counts()
    recoveries = [w.recovery_ns / 1e9 for w in result.faults if w.recovery_ns is not None]
    main = ("lost", "unseen", "duplicates", "inconsistent_offsets")
    return RunSummary(
        seed=cfg.seed,
        nemeses=",".join(cfg.nemeses) or "none",
        duration_s=cfg.duration_s,
        valid=result.valid,
        acked=result.counts["acked"],
        sends=result.counts["sends"],
        indefinite=result.counts["indefinite"],
        failed=result.counts["failed"],
        lost=counts["lost"],
        unseen=counts["unseen"],
        duplicates=counts["duplicates"],
        inconsistent=counts["inconsistent_offsets"],
        other_anomalies=sum(v for k, v in counts.items() if k not in main),
        faults=len(result.faults),
        worst_unavailability_s=max((w.longest_gap_ns / 1e9 for w in result.faults), default=0.0),
        median_recovery_s=statistics.median(recoveries) if recoveries else None,
        unrecovered_faults=sum(1 for w in result.faults if w.recovery_ns is None),
        hw_converged=hw_converged,
        broker_tracebacks=tracebacks,
        run_dir=str(run_dir),
        replay=cfg.replay_command(),
        anomaly_counts=counts,
        nodes=cfg.nodes,
        workload=cfg.workload,
        elections_won=result.counts["elections_won"],
        election_safety_violations=counts["election_safety"],
        replica_entries_compared=result.counts["replica_entries_compared"],
        replica_divergences=counts["replica_divergence"],
        commits_ok=result.counts["commits_ok"],
    )


def write_report(run_dir: Path, cfg: RunConfig, result: CheckResult, summary: RunSummary) -> None:
    report = {
        "summary": asdict(summary),
        "counts": result.counts,
        "anomalies": {k: v[:EXAMPLES_MAX] for k, v in result.anomalies.items() if v},
        "faults": [asdict(w) for w in result.faults],
        "availability_by_kind": [asdict(k) for k in availability_by_kind(result.faults)],
        "corrupted_node_recoveries": result.recoveries,
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (run_dir / "report.txt").write_text(render_report(result, summary))


def render_report(result: CheckResult, s: RunSummary) -> str:
    lines = [
        f"chaos run: seed {s.seed}, {s.nodes} nodes, workload {s.workload}, nemeses {s.nemeses},"
        f" {s.duration_s:g} s -> " + ("VALID" if s.valid else "ANOMALIES"),
        f"sends {s.sends}: acknowledged {s.acked}, indefinite {s.indefinite}, failed {s.failed}",
        f"reads: {result.counts['records_read']} records in {result.counts['polls_ok']} polls",
        "anomalies: " + ", ".join(f"{k}={v}" for k, v in s.anomaly_counts.items()),
        f"faults {s.faults}: worst unavailability {s.worst_unavailability_s:.2f} s, median recovery "
        + (f"{s.median_recovery_s:.2f} s" if s.median_recovery_s is not None else "n/a")
        + f", not recovered within the run: {s.unrecovered_faults}",
        f"replicas' high watermarks converged: {s.hw_converged}; "
        f"Tracebacks in broker logs: {s.broker_tracebacks}",
        f"election safety: {s.elections_won} won elections in the logs, "
        f"{s.election_safety_violations} (group, term) with two leaders; replicas: "
        f"{s.replica_entries_compared} entries compared below the high watermark, "
        f"{s.replica_divergences} divergent",
    ]
    if s.workload == "group":
        lines.append(f"group: {s.commits_ok} acknowledged commits")
    if s.broker_errors:
        lines.append("ERROR lines in broker logs: " + "; ".join(f"{n} x {msg}" for msg, n in s.broker_errors.items()))  # fmt: skip
    for k in availability_by_kind(result.faults):
        med = f"{k.median_recovery_s:.2f}" if k.median_recovery_s is not None else "n/a"
        worst = f"{k.worst_recovery_s:.2f}" if k.worst_recovery_s is not None else "n/a"
        lines.append(
            f"  availability {k.fault}: {k.faults} faults, longest gap without an ack "
            f"{k.worst_gap_s:.2f} s (median {k.median_gap_s:.2f}), recovery after heal median "
            f"{med} s, worst {worst} s, not recovered {k.unrecovered}"
        )
    for r in result.recoveries:
        lines.append(
            f"  corrupted node {r.get('victim')} ({r.get('mode')}, fault {r.get('fault_id')}): "
            f"recovery {r.get('recovery')}, ready after {r.get('ready_s')} s, partition re-synced "
            f"{r.get('resync_s')} s later" + (f"; first not ready: {r['not_ready']}" if "not_ready" in r else "")
        )  # fmt: skip
    for w in result.faults:
        rec = f"{w.recovery_ns / 1e9:.2f} s" if w.recovery_ns is not None else "n/a"
        detail = {k: v for k, v in w.detail.items() if k not in ("damaged_sha", "backup")}
        lines.append(
            f"  fault {w.fault_id} {w.fault} {detail}: {(w.stop_ns - w.start_ns) / 1e9:.1f} s, "
            f"ok sends {w.ok_sends}, longest gap {w.longest_gap_ns / 1e9:.2f} s, recovery {rec}"
        )
    for name in SAFETY_ANOMALIES:
        for example in result.anomalies.get(name, [])[:5]:
            lines.append(f"  {name}: {example}")
    lines += [f"run dir: {s.run_dir}", f"replay: {s.replay}"]
    return "\n".join(lines) + "\n"


TABLE_HEADER = ("seed", "nodes", "workload", "nemeses", "acked", "lost", "dup", "inconsistent", "2-leader terms", "divergent", "other", "worst unavail s", "median recov s", "ok")  # fmt: skip


def table(summaries: list[RunSummary]) -> str:
    rows = [TABLE_HEADER] + [
        (str(s.seed), str(s.nodes), s.workload, s.nemeses, str(s.acked), str(s.lost), str(s.duplicates), str(s.inconsistent),
         str(s.election_safety_violations), str(s.replica_divergences), str(s.other_anomalies), f"{s.worst_unavailability_s:.2f}",
         f"{s.median_recovery_s:.2f}" if s.median_recovery_s is not None else "n/a",
         "yes" if s.valid else "NO")
        for s in summaries
    ]  # fmt: skip
    recoveries = [s.median_recovery_s for s in summaries if s.median_recovery_s is not None]
    rows.append((
        f"{len(summaries)} runs", "", "", "", str(sum(s.acked for s in summaries)),
        str(sum(s.lost for s in summaries)), str(sum(s.duplicates for s in summaries)),
        str(sum(s.inconsistent for s in summaries)),
        str(sum(s.election_safety_violations for s in summaries)),
        str(sum(s.replica_divergences for s in summaries)),
        str(sum(s.other_anomalies for s in summaries)),
        f"{max((s.worst_unavailability_s for s in summaries), default=0.0):.2f}",
        f"{statistics.median(recoveries):.2f}" if recoveries else "n/a",
        f"{sum(s.valid for s in summaries)}/{len(summaries)}",
    ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "big") % 1_000_000
