"""The checker on synthetic histories: each anomaly is found, and a clean history passes."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from storage.frame import EntryKind, LogEntry, encode_into
from tests.chaos.checker import availability_by_kind, check
from tests.chaos.history import HistoryWriter, Op, read_history
from tests.chaos.nemesis import corrupt_segment, restore_segment, schedule
from tests.chaos.replicas import compare_cluster, leader_events
from tests.chaos.runner import broker_errors

MS = 1_000_000


class H:
    """Builds a history by hand; times in milliseconds."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._id = 0

    def _add(self, t_ms: int, process: str, type_: Any, f: str, op_id: int, value: Any,
             error: str | None = None) -> None:  # fmt: skip
        self.ops.append(Op(len(self.ops), t_ms * MS, process, type_, f, op_id, value, error))

    def send(self, t_ms: int, value: int, partition: int, result: str = "ok",
             offset: int | None = None, process: str = "producer-0") -> None:  # fmt: skip
        self._id += 1
        self._add(
            t_ms, process, "invoke", "send", self._id, {"partition": partition, "value": value}
        )
        if result == "none":
            return
        done = {"partition": partition, "value": value}
        if result == "ok":
            assert offset is not None
            done["offset"] = offset
        self._add(t_ms + 1, process, result, "send", self._id, done)

    def poll(self, t_ms: int, records: list[tuple[int, int, int]], process: str = "consumer-0") -> None:  # fmt: skip
        self._id += 1
        self._add(t_ms, process, "invoke", "poll", self._id, None)
        self._add(t_ms, process, "ok", "poll", self._id, {"records": [list(r) for r in records]})

    def assign(self, t_ms: int, partitions: list[int], process: str = "consumer-0") -> None:
        self._id += 1
        value = {"partitions": partitions, "seek": "beginning"}
        self._add(t_ms, process, "invoke", "assign", self._id, value)
        self._add(t_ms, process, "ok", "assign", self._id, value)

    def commit(self, t_ms: int, offsets: dict[int, int], process: str = "member-0",
               result: str = "ok") -> None:  # fmt: skip
        self._id += 1
        value = {"group": "g", "offsets": {str(p): o for p, o in offsets.items()}}
        self._add(t_ms, process, "invoke", "commit", self._id, value)
        self._add(t_ms + 1, process, result, "commit", self._id, value)

    def subscribe_assign(self, t_ms: int, partitions: list[int], process: str = "member-0") -> None:
        self._id += 1
        value = {"mode": "subscribe", "group": "g", "partitions": partitions}
        self._add(t_ms, process, "invoke", "assign", self._id, value)
        self._add(t_ms, process, "ok", "assign", self._id, value)

    def committed(self, t_ms: int, offsets: dict[int, int]) -> None:
        self._id += 1
        self._add(t_ms, "fetch", "invoke", "committed", self._id, {"group": "g"})
        value = {"group": "g", "offsets": {str(p): o for p, o in offsets.items()}}
        self._add(t_ms, "fetch", "ok", "committed", self._id, value)

    def leader(self, group: int, term: int, node: int) -> None:
        value = {"group": group, "term": term, "node": node, "log": node}
        self._add(10_000, f"node-{node}", "ok", "raft-leader", -1, value)

    def nemesis(self, t_ms: int, phase: str, fault_id: int, fault: str = "kill") -> None:
        self._id += 1
        value = {"phase": phase, "fault": fault, "fault_id": fault_id, "node": 1}
        self._add(t_ms, "nemesis", "invoke", "nemesis", self._id, value)
        self._add(t_ms, "nemesis", "ok", "nemesis", self._id, value)


def clean() -> H:
    h = H()
    h.assign(0, [0, 1])
    for i in range(4):
        h.send(10 * i, 100 + i, 0, offset=i)
        h.send(10 * i, 200 + i, 1, offset=i)
    h.poll(50, [(0, 0, 100), (0, 1, 101), (1, 0, 200)])
    h.poll(60, [(0, 2, 102), (0, 3, 103), (1, 1, 201), (1, 2, 202), (1, 3, 203)])
    return h


def test_a_clean_history_is_valid() -> None:
    result = check(clean().ops)
    assert result.valid, result.anomalies
    assert result.counts["acked"] == 8 and result.counts["records_read"] == 8


def test_lost_write_is_an_acked_value_skipped_by_later_reads() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.send(0, 2, 0, offset=1)
    h.send(0, 3, 0, offset=2)
    h.poll(10, [(0, 0, 1), (0, 2, 3)])
    result = check(h.ops)
    assert [r["value"] for r in result.anomalies["lost"]] == [2]
    assert [r["value"] for r in result.anomalies["unseen"]] == [2]
    assert not result.valid


def test_unseen_is_an_acked_value_past_every_read() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.send(0, 2, 0, offset=1)
    h.poll(10, [(0, 0, 1)])
    result = check(h.ops)
    assert result.anomalies["lost"] == []
    assert [r["value"] for r in result.anomalies["unseen"]] == [2]


def test_indefinite_sends_may_be_missing_or_present() -> None:
    h = H()
    h.send(0, 1, 0, result="info")
    h.send(0, 2, 0, result="none")
    h.send(0, 3, 0, offset=1)
    h.poll(10, [(0, 0, 1), (0, 1, 3)])
    result = check(h.ops)
    assert result.valid, result.anomalies
    assert result.counts["indefinite"] == 2


def test_duplicate_is_one_value_at_two_offsets() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.poll(10, [(0, 0, 1), (0, 1, 1)])
    result = check(h.ops)
    assert result.anomalies["duplicates"] == [{"value": 1, "locations": [(0, 0), (0, 1)]}]


def test_inconsistent_offset_from_a_read_disagreeing_with_an_ack() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.send(0, 2, 0, offset=0)  # two acks for one offset
    h.poll(10, [(0, 0, 1)], process="consumer-0")
    h.poll(10, [(0, 0, 3)], process="consumer-1")
    h.send(0, 3, 0, result="info")
    result = check(h.ops)
    assert result.anomalies["inconsistent_offsets"] == [{"partition": 0, "offset": 0, "values": [1, 2, 3]}]  # fmt: skip


def test_ack_offset_mismatch() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.poll(10, [(0, 5, 1)])
    result = check(h.ops)
    assert result.anomalies["ack_offset_mismatch"] == [{"value": 1, "acked_at": [0, 0], "read_at": [(0, 5)]}]  # fmt: skip


def test_aborted_read_is_a_failed_value_that_is_visible() -> None:
    h = H()
    h.send(0, 1, 0, result="fail")
    h.poll(10, [(0, 0, 1)])
    result = check(h.ops)
    assert [r["value"] for r in result.anomalies["aborted_reads"]] == [1]


def test_phantom_read_is_a_value_nobody_sent() -> None:
    h = H()
    h.poll(10, [(0, 0, 99)])
    assert [r["value"] for r in check(h.ops).anomalies["phantom_reads"]] == [99]


def test_poll_skip_and_nonmonotonic_between_and_within_polls() -> None:
    h = H()
    for i in range(6):
        h.send(0, i, 0, offset=i)
    h.assign(1, [0])
    h.poll(10, [(0, 0, 0), (0, 1, 1)])
    h.poll(11, [(0, 3, 3)])  # skips offset 2
    h.poll(12, [(0, 2, 2)])  # goes backwards
    h.poll(13, [(0, 3, 3), (0, 5, 5), (0, 4, 4)])  # int skip, then int backwards
    result = check(h.ops)
    assert [(r["from"], r["to"]) for r in result.anomalies["poll_skip"]] == [(1, 3)]
    assert [(r["from"], r["to"]) for r in result.anomalies["nonmonotonic_poll"]] == [(3, 2)]
    assert [(r["from"], r["to"]) for r in result.anomalies["int_poll_skip"]] == [(3, 5)]
    assert [(r["from"], r["to"]) for r in result.anomalies["int_nonmonotonic_poll"]] == [(5, 4)]


def test_assign_resets_positions_and_sparse_offsets_are_not_skips() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.send(0, 2, 0, offset=5)  # offsets 1..4 never existed (sparse)
    h.assign(1, [0])
    h.poll(10, [(0, 0, 1), (0, 5, 2)])
    h.assign(11, [0])
    h.poll(12, [(0, 0, 1)])  # back to the start after an assign: fine
    assert check(h.ops).valid


def test_nonmonotonic_send_from_one_producer() -> None:
    h = H()
    h.send(0, 1, 0, offset=3)
    h.send(1, 2, 0, offset=2)
    h.poll(10, [(0, 2, 2), (0, 3, 1)])
    result = check(h.ops)
    assert [r["values"] for r in result.anomalies["nonmonotonic_send"]] == [[1, 2]]


def test_incomplete_final_read_fails_the_run() -> None:
    h = clean()
    h._add(100, "final", "invoke", "final-read", 999, {"partition": 0, "high_watermark": 9})
    h._add(101, "final", "fail", "final-read", 999, {"partition": 0, "high_watermark": 9, "read_to": 4})  # fmt: skip
    result = check(h.ops)
    assert not result.valid and len(result.anomalies["incomplete_final_reads"]) == 1


def test_availability_window_and_recovery() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.send(0, 2, 1, offset=0)
    h.nemesis(100, "start", 1)  # ok at 100
    h.send(200, 3, 0, offset=1)  # ok at 201
    h.send(900, 4, 0, offset=2)  # ok at 901: partition 0's longest gap is 201..901
    h.nemesis(1000, "stop", 1)
    h.send(1100, 5, 0, offset=3)  # ok at 1101
    h.send(1500, 6, 1, offset=1)  # ok at 1501: partition 1 recovers last
    h.poll(2000, [(0, 0, 1), (0, 1, 3), (0, 2, 4), (0, 3, 5), (1, 0, 2), (1, 1, 6)])
    result = check(h.ops)
    assert result.valid, result.anomalies
    (window,) = result.faults
    assert window.fault == "kill" and window.ok_sends == 2
    assert window.longest_gap_ns == 900 * MS  # partition 1: nothing from 100 to 1000
    assert window.recovery_ns == 501 * MS


def test_recovery_is_none_when_a_partition_never_recovers() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.send(0, 2, 1, offset=0)
    h.nemesis(100, "start", 1)
    h.nemesis(200, "stop", 1)
    h.send(300, 3, 0, offset=1)
    (window,) = check(h.ops).faults
    assert window.recovery_ns is None and window.longest_gap_ns == 100 * MS


def test_history_round_trips_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with HistoryWriter(path) as w:
        op_id = w.invoke("producer-0", "send", {"partition": 0, "value": 7})
        w.record("producer-0", "ok", "send", op_id, {"partition": 0, "value": 7, "offset": 0})
        op_id = w.invoke("consumer-0", "poll")
        w.record("consumer-0", "ok", "poll", op_id, {"records": [[0, 0, 7]]})
        op_id = w.invoke("producer-0", "send", {"partition": 0, "value": 8})
        w.record("producer-0", "info", "send", op_id, {"partition": 0, "value": 8}, error="timeout")
    ops = read_history(path)
    assert [op.type for op in ops] == ["invoke", "ok", "invoke", "ok", "invoke", "info"]
    assert ops[-1].error == "timeout"
    result = check(ops)
    assert result.valid and result.counts == result.counts | {"acked": 1, "indefinite": 1}


def test_schedule_is_a_function_of_the_seed() -> None:
    a = schedule(7, ["kill", "pause", "partition", "slow", "lossy"], 50.0, 3, 4)
    assert a == schedule(7, ["kill", "pause", "partition", "slow", "lossy"], 50.0, 3, 4)
    assert a != schedule(8, ["kill", "pause", "partition", "slow", "lossy"], 50.0, 3, 4)
    assert {f.kind for f in a} <= {"kill", "pause", "partition", "slow", "lossy"} and len(a) >= 5
    for f, g in itertools.pairwise(a):
        assert f.at_s + f.hold_s < g.at_s, "faults overlap"
    assert a[-1].at_s < 50.0
    assert all(f.params["target"] == "leader" for f in schedule(1, ["kill-leader"], 30.0, 3, 4))
    assert schedule(1, [], 30.0, 3, 4) == []


def group_history() -> H:
    """Member 0 reads and commits 0..3 of partition 0, then member 1 takes it over."""
    h = H()
    for i in range(6):
        h.send(i, 100 + i, 0, offset=i)
    h.subscribe_assign(10, [0], process="member-0")
    h.poll(20, [(0, 0, 100), (0, 1, 101)], process="member-0")
    h.commit(21, {0: 2}, process="member-0")
    h.poll(30, [(0, 2, 102), (0, 3, 103)], process="member-0")
    h.commit(31, {0: 4}, process="member-0")
    h.subscribe_assign(40, [], process="member-0")
    h.subscribe_assign(40, [0], process="member-1")
    return h


def test_a_group_history_that_resumes_at_the_commit_is_valid() -> None:
    h = group_history()
    h.poll(50, [(0, 4, 104), (0, 5, 105)], process="member-1")
    h.commit(51, {0: 6}, process="member-1")
    h.committed(60, {0: 6})
    result = check(h.ops)
    assert result.valid, result.anomalies
    assert result.counts["commits_ok"] == 3


def test_committed_reread_is_a_read_below_a_commit_acked_before_the_assignment() -> None:
    h = group_history()
    h.poll(50, [(0, 3, 103), (0, 4, 104), (0, 5, 105)], process="member-1")  # 3 < 4
    result = check(h.ops)
    assert [(r["offset"], r["committed_before_assign"]) for r in result.anomalies["committed_reread"]] == [(3, 4)]  # fmt: skip
    assert not result.valid


def test_a_reread_of_what_was_committed_after_the_assignment_is_allowed() -> None:
    h = H()
    for i in range(3):
        h.send(i, 100 + i, 0, offset=i)
    h.subscribe_assign(10, [0], process="member-1")
    h.commit(11, {0: 2}, process="member-0")  # a late commit of the previous owner
    h.poll(20, [(0, 0, 100), (0, 1, 101), (0, 2, 102)], process="member-1")
    assert check(h.ops).anomalies["committed_reread"] == []


def test_commit_regression_needs_the_lower_commit_invoked_after_the_higher_acked() -> None:
    h = H()
    five = {"group": "g", "offsets": {"0": 5}}
    three = {"group": "g", "offsets": {"0": 3}}
    h._add(0, "member-0", "invoke", "commit", 901, five)
    h._add(10, "member-1", "invoke", "commit", 902, three)  # concurrent with 5: allowed
    h._add(20, "member-1", "ok", "commit", 902, three)
    h._add(30, "member-0", "ok", "commit", 901, five)
    h.commit(200, {0: 4}, process="member-1")  # invoked after 5 was acked: regression
    h.commit(300, {1: 1}, process="member-1", result="info")  # indefinite: ignored
    rows = check(h.ops).anomalies["commit_regression"]
    assert [(r["offset"], r["earlier_acked"]) for r in rows] == [(4, 5)]


def test_final_committed_offset_below_an_acked_commit() -> None:
    h = H()
    h.commit(0, {0: 5, 1: 2})
    h.committed(10, {0: 5, 1: -1001})  # partition 1's commit vanished
    rows = check(h.ops).anomalies["final_commit_regression"]
    assert rows == [{"group": "g", "partition": 1, "fetched": -1001, "highest_acked": 2}]


def test_election_safety_flags_two_leaders_in_one_term() -> None:
    h = clean()
    h.leader(group=3, term=1, node=1)
    h.leader(group=3, term=2, node=2)
    h.leader(group=4, term=2, node=1)
    assert check(h.ops).valid
    h.leader(group=3, term=2, node=3)
    result = check(h.ops)
    assert result.anomalies["election_safety"] == [{"group": 3, "term": 2, "leaders": [2, 3]}]
    assert not result.valid and result.counts["elections_won"] == 4


def test_leader_events_parse_both_log_formats(tmp_path: Path) -> None:
    text = (
        'ts=x level=INFO node=1 logger=broker.raft_driver msg="raft-leader group=7 term=3 node=1"\n'
        '{"level": "INFO", "msg": "raft-leader group=2 term=9 node=1"}\n'
        "--- start: python -m broker serve\n"
    )
    (tmp_path / "node-1.log").write_text(text)
    events = leader_events({1: tmp_path / "node-1.log", 2: tmp_path / "missing.log"})
    assert [(e["group"], e["term"], e["node"]) for e in events] == [(7, 3, 1), (2, 9, 1)]
    assert events[0]["wall"] is None  # "x" is no timestamp


def test_leader_event_timestamps(tmp_path: Path) -> None:
    line = 'ts=2026-01-01T00:00:01.500Z level=INFO node=2 msg="raft-leader group=1 term=2 node=2"'
    (tmp_path / "n.log").write_text(line + "\n")
    (event,) = leader_events({2: tmp_path / "n.log"})
    assert event["wall"] == 1767225601.5


def test_a_corrupted_node_must_not_lead_its_group_before_it_caught_up() -> None:
    h = clean()
    stop = {"phase": "stop", "fault": "corrupt", "fault_id": 1, "victim": 2, "group_id": 5,
            "recovery": "self", "restart_wall": 1000.0, "caught_up_wall": 1004.0}  # fmt: skip
    h._add(100, "nemesis", "ok", "nemesis", 77, stop)

    def won(node: int, group: int, term: int, wall: float) -> None:
        h._add(10_000, f"node-{node}", "ok", "raft-leader", -1,
               {"group": group, "term": term, "node": node, "log": node, "wall": wall})  # fmt: skip

    assert check(h.ops).recoveries == [{"fault_id": 1, "victim": 2, "recovery": "self"}]
    won(2, 5, 1, 999.0)  # before the restart
    won(2, 5, 3, 1005.0)  # after catching up
    won(2, 6, 1, 1001.0)  # another group
    won(3, 5, 2, 1001.0)  # another node
    assert check(h.ops).valid
    won(2, 5, 9, 1002.5)
    rows = check(h.ops).anomalies["corrupt_leader_before_resync"]
    assert rows == [{"node": 2, "group": 5, "term": 9, "won_after_restart_s": 2.5, "caught_up_after_s": 4.0}]  # fmt: skip


def _write_segment(path: Path, entries: list[tuple[int, int, int, bytes]]) -> None:
    """(index, term, base_offset, payload) DATA frames of one record each."""
    buffer = bytearray(sum(40 + len(p) for *_, p in entries))
    position = 0
    for index, term, base_offset, payload in entries:
        position = encode_into(buffer, position, LogEntry(index, term, EntryKind.DATA, 1, payload), base_offset)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(buffer))


def test_replicas_compared_below_the_high_watermark(tmp_path: Path) -> None:
    same = [(1, 1, 0, b"a"), (2, 1, 1, b"b"), (3, 2, 2, b"c")]
    for node in (1, 2):
        _write_segment(tmp_path / f"n{node}" / "t-0" / f"{1:020d}.log", same)
    # Node 3 holds another entry at offset 1, and one past the watermark that differs.
    _write_segment(tmp_path / "n3" / "t-0" / f"{1:020d}.log", [(1, 1, 0, b"a"), (2, 1, 1, b"X"), (3, 3, 2, b"Y")])  # fmt: skip
    dirs = {n: tmp_path / f"n{n}" for n in (1, 2, 3)}
    result = compare_cluster(dirs, "t", {0: 2})
    assert result["compared"] == 6 and result["divergent_total"] == 1
    (row,) = result["divergent"]
    assert row["partition"] == 0 and row["offset"] == 1 and row["missing_on"] == []
    assert compare_cluster({1: dirs[1], 2: dirs[2]}, "t", {0: 3})["divergent_total"] == 0


def test_a_replica_lacking_an_entry_inside_its_range_diverges(tmp_path: Path) -> None:
    _write_segment(tmp_path / "n1" / "t-0" / f"{1:020d}.log", [(1, 1, 0, b"a"), (2, 1, 1, b"b"), (3, 1, 2, b"c")])  # fmt: skip
    _write_segment(tmp_path / "n2" / "t-0" / f"{1:020d}.log", [(1, 1, 0, b"a"), (3, 1, 2, b"c")])
    result = compare_cluster({1: tmp_path / "n1", 2: tmp_path / "n2"}, "t", {0: 3})
    assert [(r["offset"], r["missing_on"]) for r in result["divergent"]] == [(1, [2])]


def test_corrupt_segment_flips_or_truncates_and_restores(tmp_path: Path) -> None:
    entries = [(i, 1, i - 1, b"x" * 100) for i in range(1, 11)]
    segment = tmp_path / "node-1" / "t-0" / f"{1:020d}.log"
    _write_segment(segment, entries)
    (segment.parent / "partition.json").write_text('{"topic_id": "x", "group_id": 12}')
    original = segment.read_bytes()
    applied = corrupt_segment(tmp_path / "node-1", "t", 0, "flip", 0.5)
    assert applied["group_id"] == 12
    damaged = segment.read_bytes()
    assert len(damaged) == len(original) and damaged != original
    assert sum(a != b for a, b in zip(damaged, original, strict=True)) == 8
    assert Path(applied["backup"]).parent == tmp_path / "chaos-backups"
    assert restore_segment(applied) and segment.read_bytes() == original
    applied = corrupt_segment(tmp_path / "node-1", "t", 0, "truncate", 0.5)
    assert segment.stat().st_size == len(original) // 2
    segment.write_bytes(b"changed by the broker")
    assert not restore_segment(applied), "a file the broker rewrote is left alone"


def test_availability_by_kind() -> None:
    h = H()
    h.send(0, 1, 0, offset=0)
    h.nemesis(100, "start", 1)
    h.send(500, 2, 0, offset=1)  # ok at 501
    h.nemesis(600, "stop", 1)
    h.send(700, 3, 0, offset=2)  # ok at 701
    h.nemesis(800, "start", 2, fault="pause")
    h.nemesis(900, "stop", 2, fault="pause")
    h.poll(2000, [(0, 0, 1), (0, 1, 2), (0, 2, 3)])
    kill, pause = availability_by_kind(check(h.ops).faults)
    assert (kill.fault, kill.faults, kill.worst_gap_s, kill.median_recovery_s) == ("kill", 1, 0.401, 0.101)  # fmt: skip
    assert pause.fault == "pause" and pause.unrecovered == 1 and pause.worst_recovery_s is None


def test_broker_errors_are_counted_by_message(tmp_path: Path) -> None:
    (tmp_path / "node-1.log").write_text(
        'ts=a level=ERROR node=1 logger=x msg="peer link task died" peer=3 exc="boom"\n'
        'ts=b level=INFO node=1 logger=x msg="fine"\n'
        "ts=c level=ERROR node=1 logger=x msg=stopping\n"
    )
    (tmp_path / "node-2.log").write_text(
        'ts=d level=ERROR node=2 logger=x msg="peer link task died" peer=1 exc="boom"\n'
    )
    assert broker_errors(tmp_path) == {"peer link task died": 2, "stopping": 1}
