"""The node-wide hard-state log: durable after sync, torn tails cut, compaction invisible."""

from __future__ import annotations

from storage import hard_state_log
from storage.fs import MemoryFileSystem
from storage.hard_state_log import GroupHardState, HardStateLog


def test_synced_states_survive_a_crash_and_unsynced_ones_do_not() -> None:
    fs = MemoryFileSystem()
    log = HardStateLog("/d", fs)
    log.stage(1, GroupHardState(3, 2, 10))
    log.stage(7, GroupHardState(5, 1, 0))
    assert log.sync() == 2
    log.stage(1, GroupHardState(4, 3, 11))  # never synced
    fs.crash()
    reopened = HardStateLog("/d", fs)
    assert reopened.get(1) == GroupHardState(3, 2, 10)
    assert reopened.get(7) == GroupHardState(5, 1, 0)


def test_last_record_wins_and_forget_removes() -> None:
    fs = MemoryFileSystem()
    log = HardStateLog("/d", fs)
    for term in range(1, 6):
        log.stage(2, GroupHardState(term, 1, term))
        log.sync()
    log.stage(3, GroupHardState(1, 1, 1))
    log.stage(3, None)
    log.sync()
    reopened = HardStateLog("/d", fs)
    assert reopened.get(2) == GroupHardState(5, 1, 5)
    assert reopened.get(3) is None


def test_torn_tail_is_cut_and_appends_continue() -> None:
    fs = MemoryFileSystem()
    log = HardStateLog("/d", fs)
    log.stage(1, GroupHardState(2, 1, 0))
    log.sync()
    f = fs.open("/d/" + hard_state_log.LOG_NAME)
    f.pwrite(f.size(), b"\x01\x02\x03")  # half a record, as a crash mid-append leaves
    f.fsync()
    reopened = HardStateLog("/d", fs)
    assert reopened.get(1) == GroupHardState(2, 1, 0)
    reopened.stage(1, GroupHardState(3, 2, 0))
    reopened.sync()
    assert HardStateLog("/d", fs).get(1) == GroupHardState(3, 2, 0)


def test_compaction_keeps_every_live_state() -> None:
    fs = MemoryFileSystem()
    log = HardStateLog("/d", fs)
    for round_ in range(1, 1200):
        for group in range(4):
            log.stage(group, GroupHardState(round_, group, round_))
        log.sync()
    size = fs.open("/d/" + hard_state_log.LOG_NAME).size()
    assert size < hard_state_log.COMPACT_RECORDS_MIN * hard_state_log.RECORD_BYTES
    reopened = HardStateLog("/d", fs)
    for group in range(4):
        assert reopened.get(group) == GroupHardState(1199, group, 1199)
