"""The checker: pure functions from a history (a list of `Op`) to anomalies.

It ports the Jepsen Kafka queue checker's semantics (re-implemented from its spec):

- lost: an acknowledged send never read although reads went past its offset.
- unseen: an acknowledged send never read at all (after final reads: a true loss).
- duplicates: one value read at more than one offset.
- inconsistent_offsets: one offset holding two different values (acks and reads).
- ack_offset_mismatch: a value acknowledged at one offset but read only at another.
- aborted_reads: a value from a definitely failed send is read.
- phantom_reads: a value read that no send ever carried.
- poll_skip / nonmonotonic_poll (and int_ variants within one poll): an assign-mode
  consumer must read each partition's offsets in order without gaps between assigns.
  Gaps are judged by the dense order of every offset known to exist, so sparse
  offsets are not flagged.
- nonmonotonic_send: one idempotent producer's later send to a partition landing at a
  lower offset than its earlier one.
- incomplete_final_reads: final reads that did not reach the high watermark.

Consumer groups (the `group` workload; ops `commit`, `assign` with mode subscribe,
`committed`):
- commit_regression: an acknowledged commit lower than one acknowledged before it was
  invoked, for the same (group, partition).
- committed_reread: a record below a committed offset polled by a consumer whose
  assignment of that partition began after the commit was acknowledged.
- final_commit_regression: the group's committed offset fetched at the end is lower than
  the highest acknowledged commit.

White-box (ops the runner appends after the cluster stopped, from the nodes' logs and
data directories):
- election_safety: two different leaders for one (raft group, term), from the
  `raft-leader` lines every node logs when it wins an election.
- replica_divergence: replicas of a partition holding different entries below the
  high watermark (compared frame by frame, see `replicas.py`).
- corrupt_leader_before_resync: a node restarted with a corrupted segment that came
  back on its own won an election for that partition's raft group before it had caught
  up (between its restart and the moment it was ready and had the leader's high
  watermark, as the nemesis observed them; log timestamps are wall-clock).

Availability: for each fault window (nemesis start ok .. stop invoke) the longest stretch
in which some partition acknowledged no send, and the recovery time after the stop until every
partition has acknowledged a send again.

Error classification happens where the op is recorded (see `workload.classify_error`):
`fail` must mean "definitely not appended"; NOT_LEADER and timeouts are `info`.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.history import Op, completions

# Anomalies that mean the broker broke a promise; any one fails a run.
SAFETY_ANOMALIES = (
    "lost",
    "unseen",
    "duplicates",
    "inconsistent_offsets",
    "ack_offset_mismatch",
    "aborted_reads",
    "phantom_reads",
    "poll_skip",
    "nonmonotonic_poll",
    "int_poll_skip",
    "int_nonmonotonic_poll",
    "nonmonotonic_send",
    "incomplete_final_reads",
    "commit_regression",
    "committed_reread",
    "final_commit_regression",
    "election_safety",
    "replica_divergence",
    "corrupt_leader_before_resync",
)


@dataclass(frozen=True, slots=True)
class Ack:
    value: int
    partition: int
    offset: int
    process: str
    invoke_index: int


@dataclass(frozen=True, slots=True)
class FaultWindow:
    fault_id: int
    fault: str
    detail: dict[str, Any]
    start_ns: int
    stop_ns: int
    ok_sends: int
    longest_gap_ns: int
    recovery_ns: int | None  # None: some partition never acknowledged a send after stop


@dataclass(frozen=True, slots=True)
class CheckResult:
    counts: dict[str, int]
    anomalies: dict[str, list[dict[str, Any]]]
    faults: list[FaultWindow] = field(default_factory=list)
    # How each corrupted node came back: {"fault_id", "victim", "mode", "recovery",
    # "ready_s", "resync_s"} from the nemesis's stop events.
    recoveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not any(self.anomalies.get(name) for name in SAFETY_ANOMALIES)

    def anomaly_counts(self) -> dict[str, int]:
        return {name: len(self.anomalies.get(name, [])) for name in SAFETY_ANOMALIES}


@dataclass(frozen=True, slots=True)
class Sends:
    acked: dict[int, Ack]
    failed: set[int]
    indefinite: set[int]
    invoked: set[int]


def collect_sends(ops: Sequence[Op]) -> Sends:
    acked: dict[int, Ack] = {}
    failed: set[int] = set()
    indefinite: set[int] = set()
    invoked: set[int] = set()
    for inv, done in completions(op for op in ops if op.f == "send"):
        value = int(inv.value["value"])
        invoked.add(value)
        if done is None or done.type == "info":
            indefinite.add(value)
        elif done.type == "fail":
            failed.add(value)
        else:
            acked[value] = Ack(
                value, int(done.value["partition"]), int(done.value["offset"]),
                inv.process, inv.index,
            )  # fmt: skip
    return Sends(acked, failed, indefinite, invoked)


def read_records(ops: Sequence[Op]) -> list[tuple[Op, int, int, int]]:
    """(poll op, partition, offset, value) for every record every ok poll returned."""
    out = []
    for op in ops:
        if op.f == "poll" and op.type == "ok":
            for partition, offset, value in op.value.get("records", []):
                out.append((op, int(partition), int(offset), int(value)))
    return out


def offset_map(sends: Sends, reads: Sequence[tuple[Op, int, int, int]]) -> dict[tuple[int, int], set[int]]:  # fmt: skip
    """(partition, offset) -> every value an ack or a read put there."""
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for ack in sends.acked.values():
        where[(ack.partition, ack.offset)].add(ack.value)
    for _, partition, offset, value in reads:
        where[(partition, offset)].add(value)
    return where


def inconsistent_offsets(where: dict[tuple[int, int], set[int]]) -> list[dict[str, Any]]:
    return [
        {"partition": p, "offset": o, "values": sorted(vs)}
        for (p, o), vs in sorted(where.items())
        if len(vs) > 1
    ]


def read_locations(reads: Sequence[tuple[Op, int, int, int]]) -> dict[int, set[tuple[int, int]]]:
    locations: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for _, partition, offset, value in reads:
        locations[value].add((partition, offset))
    return locations


def duplicates(locations: dict[int, set[tuple[int, int]]]) -> list[dict[str, Any]]:
    return [
        {"value": v, "locations": sorted(locs)}
        for v, locs in sorted(locations.items())
        if len(locs) > 1
    ]


def lost_and_unseen(
    sends: Sends, locations: dict[int, set[tuple[int, int]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Unseen: acked, never read. Lost: unseen although some read went past its offset."""
    max_read: dict[int, int] = {}
    for locs in locations.values():
        for partition, offset in locs:
            max_read[partition] = max(max_read.get(partition, -1), offset)
    lost, unseen = [], []
    for ack in sorted(sends.acked.values(), key=lambda a: (a.partition, a.offset)):
        if ack.value in locations:
            continue
        row = {"value": ack.value, "partition": ack.partition, "offset": ack.offset}
        unseen.append(row)
        if max_read.get(ack.partition, -1) > ack.offset:
            lost.append(row)
    return lost, unseen


def ack_offset_mismatch(
    sends: Sends, locations: dict[int, set[tuple[int, int]]]
) -> list[dict[str, Any]]:
    out = []
    for ack in sends.acked.values():
        locs = locations.get(ack.value)
        if locs and (ack.partition, ack.offset) not in locs:
            out.append(
                {
                    "value": ack.value,
                    "acked_at": [ack.partition, ack.offset],
                    "read_at": sorted(locs),
                }
            )
    return sorted(out, key=lambda r: r["value"])


def aborted_and_phantom_reads(
    sends: Sends, locations: dict[int, set[tuple[int, int]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    aborted = [
        {"value": v, "locations": sorted(locations[v])}
        for v in sorted(sends.failed & locations.keys())
    ]
    phantom = [
        {"value": v, "locations": sorted(locs)}
        for v, locs in sorted(locations.items())
        if v not in sends.invoked
    ]
    return aborted, phantom


def poll_order(
    ops: Sequence[Op], where: dict[tuple[int, int], set[int]]
) -> dict[str, list[dict[str, Any]]]:
    """Assign-mode consumers: successive reads of a partition go up by exactly one known
    offset. An assign (invoked, whatever its outcome) resets the consumer's positions."""
    known: dict[int, list[int]] = defaultdict(list)
    for partition, offset in sorted(where):
        known[partition].append(offset)
    out: dict[str, list[dict[str, Any]]] = {
        "poll_skip": [], "nonmonotonic_poll": [], "int_poll_skip": [], "int_nonmonotonic_poll": [],
    }  # fmt: skip
    last: dict[tuple[str, int], int] = {}
    for op in ops:
        if op.f == "assign" and op.type == "invoke":
            for key in [k for k in last if k[0] == op.process]:
                del last[key]
        if not (op.f == "poll" and op.type == "ok"):
            continue
        seen_here: set[int] = set()
        for partition, offset, _ in op.value.get("records", []):
            key = (op.process, int(partition))
            prev = last.get(key)
            last[key] = int(offset)
            inner = int(partition) in seen_here
            seen_here.add(int(partition))
            if prev is None:
                continue
            prefix = "int_" if inner else ""
            row = {"process": op.process, "op_index": op.index, "partition": partition,
                   "from": prev, "to": offset}  # fmt: skip
            if offset <= prev:
                out[prefix + "nonmonotonic_poll"].append(row)
                continue
            order = known[int(partition)]
            gap = bisect.bisect_left(order, offset) - bisect.bisect_left(order, prev)
            if gap > 1:
                out[prefix + "poll_skip"].append(row | {"skipped": gap - 1})
    return out


def nonmonotonic_sends(sends: Sends) -> list[dict[str, Any]]:
    by_producer: dict[tuple[str, int], list[Ack]] = defaultdict(list)
    for ack in sends.acked.values():
        by_producer[(ack.process, ack.partition)].append(ack)
    out = []
    for (process, partition), acks in sorted(by_producer.items()):
        acks.sort(key=lambda a: a.invoke_index)
        for a, b in itertools.pairwise(acks):
            if b.offset <= a.offset:
                out.append({"process": process, "partition": partition,
                            "values": [a.value, b.value], "offsets": [a.offset, b.offset]})  # fmt: skip
    return out


def incomplete_final_reads(ops: Sequence[Op]) -> list[dict[str, Any]]:
    return [dict(op.value or {}, error=op.error) for op in ops if op.f == "final-read" and op.type == "fail"]  # fmt: skip


def fault_windows(ops: Sequence[Op]) -> list[FaultWindow]:
    ok_send_times: list[int] = []
    ok_by_partition: dict[int, list[int]] = defaultdict(list)
    for op in ops:
        if op.f == "send" and op.type == "ok":
            ok_send_times.append(op.time_ns)
            ok_by_partition[int(op.value["partition"])].append(op.time_ns)
    ok_send_times.sort()
    for times in ok_by_partition.values():
        times.sort()
    starts: dict[int, Op] = {}
    stops: dict[int, Op] = {}
    for op in ops:
        if op.f != "nemesis" or not isinstance(op.value, dict):
            continue
        fid = int(op.value["fault_id"])
        if op.value.get("phase") == "start" and op.type == "ok":
            starts[fid] = op
        elif op.value.get("phase") == "stop" and op.type == "invoke":
            stops[fid] = op
    windows = []
    for fid, start in sorted(starts.items()):
        stop = stops.get(fid)
        if stop is None:
            continue
        windows.append(_window(fid, start, stop.time_ns, ok_send_times, ok_by_partition))
    return windows


def _window(
    fid: int, start: Op, stop_ns: int, ok_times: list[int], by_partition: dict[int, list[int]]
) -> FaultWindow:
    """Longest gap: the worst partition's longest stretch without an ok send in the window
    (a leader kill stalls only that leader's partitions, so a global gap would hide it)."""
    lo = bisect.bisect_right(ok_times, start.time_ns)
    hi = bisect.bisect_left(ok_times, stop_ns)
    gap = 0
    recovery: int | None = 0
    for times in by_partition.values():
        a = bisect.bisect_right(times, start.time_ns)
        b = bisect.bisect_left(times, stop_ns)
        points = [start.time_ns, *times[a:b], stop_ns]
        gap = max(gap, *(y - x for x, y in itertools.pairwise(points)))
        i = bisect.bisect_right(times, stop_ns)
        if i == len(times) or recovery is None:
            recovery = None
        else:
            recovery = max(recovery, times[i] - stop_ns)
    detail = {k: v for k, v in start.value.items() if k not in ("phase", "fault_id", "fault")}
    return FaultWindow(fid, str(start.value["fault"]), detail, start.time_ns, stop_ns,
                       hi - lo, gap, recovery)  # fmt: skip


def check(ops: Sequence[Op]) -> CheckResult:
    ops = sorted(ops, key=lambda op: op.index)
    sends = collect_sends(ops)
    reads = read_records(ops)
    where = offset_map(sends, reads)
    locations = read_locations(reads)
    lost, unseen = lost_and_unseen(sends, locations)
    aborted, phantom = aborted_and_phantom_reads(sends, locations)
    anomalies: dict[str, list[dict[str, Any]]] = {
        "lost": lost,
        "unseen": unseen,
        "duplicates": duplicates(locations),
        "inconsistent_offsets": inconsistent_offsets(where),
        "ack_offset_mismatch": ack_offset_mismatch(sends, locations),
        "aborted_reads": aborted,
        "phantom_reads": phantom,
        "nonmonotonic_send": nonmonotonic_sends(sends),
        "incomplete_final_reads": incomplete_final_reads(ops),
        **poll_order(ops, where),
        **group_anomalies(ops),
        "election_safety": election_safety(ops),
        "replica_divergence": replica_divergence(ops),
        "corrupt_leader_before_resync": corrupt_leader_before_resync(ops),
    }
    counts = {
        "sends": len(sends.invoked),
        "acked": len(sends.acked),
        "failed": len(sends.failed),
        "indefinite": len(sends.indefinite),
        "polls_ok": sum(1 for op in ops if op.f == "poll" and op.type == "ok"),
        "records_read": len(reads),
        "distinct_values_read": len(locations),
        "faults": sum(1 for op in ops if op.f == "nemesis" and op.type == "invoke"
                      and isinstance(op.value, dict) and op.value.get("phase") == "start"),
        "commits_ok": sum(1 for op in ops if op.f == "commit" and op.type == "ok"),
        "elections_won": sum(1 for op in ops if op.f == "raft-leader"),
        "replica_entries_compared": sum(int(op.value.get("compared", 0)) for op in ops
                                        if op.f == "replica-compare" and op.type == "ok"),
    }  # fmt: skip
    return CheckResult(counts, anomalies, fault_windows(ops), node_recoveries(ops))


def node_recoveries(ops: Sequence[Op]) -> list[dict[str, Any]]:
    keys = ("fault_id", "victim", "mode", "recovery", "ready_s", "resync_s", "not_ready")
    return [
        {k: op.value[k] for k in keys if k in op.value}
        for op in ops
        if op.f == "nemesis" and op.type == "ok" and isinstance(op.value, dict)
        and op.value.get("phase") == "stop" and "recovery" in op.value
    ]  # fmt: skip


def _offsets(value: Any) -> dict[int, int]:
    """A commit's {"offsets": {partition: offset}} (JSON keys are strings)."""
    return {int(p): int(o) for p, o in (value or {}).get("offsets", {}).items()}


def group_anomalies(ops: Sequence[Op]) -> dict[str, list[dict[str, Any]]]:
    """Committed offsets are a per-(group, partition) register that only moves forward,
    and what was committed before a consumer's assignment began is never read again.
    Offsets are Kafka's: the committed offset is the next one to read."""
    acked: dict[tuple[str, int], int] = {}  # highest acknowledged commit so far
    at_invoke: dict[int, dict[tuple[str, int], int]] = {}  # commit id -> `acked` then
    # (process, partition) -> the committed offset in force when its assignment began
    floor: dict[tuple[str, int], int] = {}
    regression: list[dict[str, Any]] = []
    reread: list[dict[str, Any]] = []
    final: list[dict[str, Any]] = []
    for op in ops:
        value = op.value if isinstance(op.value, dict) else {}
        group = str(value.get("group", ""))
        if op.f == "commit" and op.type == "invoke":
            at_invoke[op.id] = {k: acked[k] for k in ((group, p) for p in _offsets(value)) if k in acked}  # fmt: skip
        elif op.f == "commit" and op.type == "ok":
            before = at_invoke.get(op.id, {})
            for p, offset in _offsets(value).items():
                if offset < before.get((group, p), -1):
                    regression.append({"group": group, "partition": p, "offset": offset,
                                       "earlier_acked": before[(group, p)], "process": op.process,
                                       "op_index": op.index})  # fmt: skip
                acked[(group, p)] = max(acked.get((group, p), -1), offset)
        elif op.f == "assign" and op.type == "invoke" and value.get("mode") == "subscribe":
            # The assignment begins at the rebalance callback (the invoke): only commits
            # acknowledged before it must be visible to the consumer's offset fetch.
            for key in [k for k in floor if k[0] == op.process]:
                del floor[key]
            for p in value.get("partitions", []):
                floor[(op.process, int(p))] = acked.get((group, int(p)), -1)
        elif op.f == "revoke" and op.type == "ok":
            for key in [k for k in floor if k[0] == op.process]:
                del floor[key]
        elif op.f == "poll" and op.type == "ok":
            for p, offset, v in value.get("records", []):
                committed = floor.get((op.process, int(p)), -1)
                if int(offset) < committed:
                    reread.append({"process": op.process, "partition": p, "offset": offset,
                                   "value": v, "committed_before_assign": committed,
                                   "op_index": op.index})  # fmt: skip
        elif op.f == "committed" and op.type == "ok":
            fetched = _offsets(value)
            for (g, p), offset in sorted(acked.items()):
                if g == group and fetched.get(p, -1) < offset:
                    final.append({"group": g, "partition": p, "fetched": fetched.get(p),
                                  "highest_acked": offset})  # fmt: skip
    return {"commit_regression": regression, "committed_reread": reread,
            "final_commit_regression": final}  # fmt: skip


def election_safety(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """At most one leader per (raft group, term): Raft's Election Safety property."""
    leaders: dict[tuple[int, int], set[int]] = defaultdict(set)
    for op in ops:
        if op.f == "raft-leader":
            v = op.value
            leaders[(int(v["group"]), int(v["term"]))].add(int(v["node"]))
    return [
        {"group": g, "term": t, "leaders": sorted(nodes)}
        for (g, t), nodes in sorted(leaders.items())
        if len(nodes) > 1
    ]


def corrupt_leader_before_resync(ops: Sequence[Op]) -> list[dict[str, Any]]:
    recoveries = [
        op.value for op in ops
        if op.f == "nemesis" and op.type == "ok" and isinstance(op.value, dict)
        and op.value.get("phase") == "stop" and op.value.get("fault") == "corrupt"
        and op.value.get("recovery") == "self" and op.value.get("group_id") is not None
    ]  # fmt: skip
    out = []
    for op in ops:
        if op.f != "raft-leader" or op.value.get("wall") is None:
            continue
        v = op.value
        for r in recoveries:
            if (int(v["node"]) == int(r["victim"]) and int(v["group"]) == int(r["group_id"])
                    and r["restart_wall"] <= v["wall"] < r["caught_up_wall"]):  # fmt: skip
                out.append({"node": v["node"], "group": v["group"], "term": v["term"],
                            "won_after_restart_s": round(v["wall"] - r["restart_wall"], 3),
                            "caught_up_after_s": round(r["caught_up_wall"] - r["restart_wall"], 3)})  # fmt: skip
    return out


def replica_divergence(ops: Sequence[Op]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for op in ops:
        if op.f == "replica-compare" and op.type == "ok":
            out.extend(op.value.get("divergent", []))
    return out


@dataclass(frozen=True, slots=True)
class KindAvailability:
    """Availability per fault kind: the worst gap without an acknowledged write during a
    fault of this kind, and the recovery times after its faults healed."""

    fault: str
    faults: int
    worst_gap_s: float
    median_gap_s: float
    median_recovery_s: float | None
    worst_recovery_s: float | None
    unrecovered: int


def availability_by_kind(windows: Sequence[FaultWindow]) -> list[KindAvailability]:
    by_kind: dict[str, list[FaultWindow]] = defaultdict(list)
    for w in windows:
        by_kind[w.fault].append(w)
    out = []
    for kind, ws in sorted(by_kind.items()):
        gaps = sorted(w.longest_gap_ns / 1e9 for w in ws)
        recs = sorted(w.recovery_ns / 1e9 for w in ws if w.recovery_ns is not None)
        out.append(KindAvailability(
            kind, len(ws), gaps[-1], statistics.median(gaps),
            statistics.median(recs) if recs else None, recs[-1] if recs else None,
            len(ws) - len(recs),
        ))  # fmt: skip
    return out
