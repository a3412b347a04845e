"""Operations beyond the model test: faults, limits, retention, rolls, offset translation.

Each test states the behaviour it pins down; all run on MemoryFileSystem except where
the real file system matters.
"""

from __future__ import annotations

import errno

import pytest

from storage import (
    CorruptLogError,
    EntryKind,
    EntryTooLargeError,
    HardState,
    HardStateFile,
    IndexOutOfRangeError,
    LogConfig,
    LogEntry,
    LogFailedError,
    LogFullError,
    LogIOError,
    MemoryFileSystem,
    OffsetOutOfRangeError,
    PartitionLog,
)
from tests.storage.util import DIRECTORY, data_entries, open_log, payload_for, segment_paths


def test_disk_full_refuses_the_append_and_serves_nothing_half_written() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs, segment_bytes_max=1 << 20)
    log.append(data_entries(1, 5))
    log.sync()
    fs.capacity_bytes = fs.used_bytes() + 150  # room for one entry, not two
    with pytest.raises(LogFullError):
        log.append(data_entries(6, 2))
    assert (log.last_index, log.log_end_offset, log.written_index) == (5, 10, 5)
    assert len(fs.read_bytes(segment_paths(fs)[0])) == log.segments[0].size_bytes
    assert [e.index for e in log.read_entries(1, 6, 1 << 20)] == [1, 2, 3, 4, 5]
    log.append(data_entries(6, 1))  # what fits still goes in
    fs.capacity_bytes = None
    log.append(data_entries(7, 1))
    log.close()
    reopened = open_log(fs, segment_bytes_max=1 << 20)
    assert reopened.last_index == 7
    assert reopened.recovery is not None
    assert reopened.recovery.bytes_cut == 0


def test_disk_full_across_a_roll_undoes_the_whole_append() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs, segment_bytes_max=400)
    log.append(data_entries(1, 3))  # 330 bytes: the next entry rolls
    log.sync()
    # Room for the first chunk (three entries in a new segment), not for the second.
    fs.capacity_bytes = fs.used_bytes() + 3 * 110 + 50
    with pytest.raises(LogFullError):
        log.append(data_entries(4, 6))
    assert (log.last_index, log.log_end_offset) == (3, 6)
    assert [e.index for e in log.read_entries(1, 4, 1 << 20)] == [1, 2, 3]
    fs.capacity_bytes = None
    log.append(data_entries(4, 6))
    assert log.last_index == 9
    log.close()
    assert open_log(fs, segment_bytes_max=400).last_index == 9


def test_write_error_stops_the_log_until_reopened() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs)
    log.append(data_entries(1, 2))
    fs.inject("write", errno.EIO)
    with pytest.raises(LogIOError):
        log.append(data_entries(3, 1))
    with pytest.raises(LogFailedError):
        log.append(data_entries(3, 1))
    reopened = open_log(fs)
    assert reopened.last_index == 2
    reopened.close()


def test_entry_too_large_is_refused_before_anything_is_written() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs, entry_bytes_max=100)
    with pytest.raises(EntryTooLargeError):
        log.append([*data_entries(1, 1), *data_entries(2, 1, size=101)])
    assert log.last_index == 0
    assert fs.read_bytes(segment_paths(fs)[0]) == b""


def test_offsets_skip_noop_and_config_entries_across_restart_and_truncation() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs, segment_bytes_max=300, recent_entries_max=1)
    kinds = [EntryKind.NOOP, EntryKind.DATA, EntryKind.CONFIG, EntryKind.DATA, EntryKind.NOOP]
    entries = [
        LogEntry(i + 1, 1 + i // 3, kind, 3 if kind == EntryKind.DATA else 0, payload_for(i))
        for i, kind in enumerate(kinds * 4)
    ]
    results = log.append(entries)
    assert [r.base_offset for r in results][:6] == [0, 0, 3, 3, 6, 6]
    assert log.log_end_offset == 24
    log.close()
    log = open_log(fs, segment_bytes_max=300, recent_entries_max=1)
    assert [log.index_for_offset(o) for o in range(0, 24, 3)] == [2, 4, 7, 9, 12, 14, 17, 19]
    log.truncate_suffix(8)  # keeps up to a CONFIG entry
    assert (log.log_end_offset, log.offset_for_index(9)) == (9, 9)
    log.truncate_prefix(5)
    assert (log.first_index, log.log_start_offset, log.term_at(4)) == (5, 6, 2)
    with pytest.raises(OffsetOutOfRangeError):
        log.read_offsets(5, 1 << 20)
    with pytest.raises(IndexOutOfRangeError):
        log.term_at(3)
    log.close()
    log = open_log(fs, segment_bytes_max=300, recent_entries_max=1)
    assert (log.first_index, log.last_index, log.log_start_offset) == (5, 8, 6)
    assert [log.index_for_offset(o) for o in range(6, 10)] == [7, 7, 7, 9]
    log.close()


def test_read_offsets_honours_bytes_max_and_the_high_watermark() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs, segment_bytes_max=1 << 20)
    log.append(data_entries(1, 10, size=100))
    assert len(log.read_offsets(0, 1).batches) == 1  # the first batch even if too large
    assert len(log.read_offsets(0, 250).batches) == 2
    result = log.read_offsets(3, 1 << 20, max_offset_exclusive=8)
    assert result.next_offset == 8
    assert len(result.batches) == 3  # base offsets 2, 4, 6
    assert log.read_offsets(8, 1 << 20, max_offset_exclusive=8).batches == []
    assert log.read_offsets(20, 1 << 20).batches == []
    joined = result.to_bytes()
    assert len(joined) == 300


def test_retention_by_bytes_and_age_deletes_whole_sealed_segments() -> None:
    fs = MemoryFileSystem()
    now = [0]
    config = LogConfig(segment_bytes_max=400, retention_bytes=800, retention_ms=1000)
    log = PartitionLog.open(DIRECTORY, config, fs=fs, clock_ms=lambda: now[0])
    for index in range(1, 31):
        now[0] += 10
        log.append(data_entries(index, 1))
    segments = len(log.segments)
    removed = log.apply_retention(now[0])
    assert removed == segments - 1 - 800 // 330
    assert log.size_bytes >= 800
    assert log.first_index == log.segments[0].base_index
    assert log.log_start_offset == 2 * (log.first_index - 1)
    sealed = len(log.segments) - 1
    assert log.apply_retention(now[0] + 10_000) == sealed
    assert len(log.segments) == 1
    log.close()


def test_roll_by_age() -> None:
    fs = MemoryFileSystem()
    now = [0]
    config = LogConfig(segment_age_ms_max=100)
    log = PartitionLog.open(DIRECTORY, config, fs=fs, clock_ms=lambda: now[0])
    log.append(data_entries(1, 2))
    now[0] = 100
    log.append(data_entries(3, 1))
    assert [s.base_index for s in log.segments] == [1, 3]
    log.close()


def test_open_segment_handles_are_bounded() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs, segment_bytes_max=200, open_segments_max=3)
    log.append(data_entries(1, 40))
    log.sync()
    for index in range(1, 41):
        log.read_entries(index, index + 1, 1 << 20)
        assert fs.open_handles <= 3
        loaded = [s for s in log.segments if s._index is not None]
        assert len(loaded) <= 3  # sparse indexes of closed sealed segments are dropped
    log.close()
    assert fs.open_handles == 0


def test_hard_state_is_atomic_and_checked() -> None:
    fs = MemoryFileSystem()
    state_file = HardStateFile("/data/g0", fs)
    assert state_file.load() == HardState()
    state_file.save(HardState(term=5, vote=2, commit=10))
    fs.crash()
    assert HardStateFile("/data/g0", fs).load() == HardState(5, 2, 10)
    fs.inject("rename", errno.EIO)
    with pytest.raises(OSError):
        state_file.save(HardState(term=6, vote=None, commit=11))
    fs.crash()
    assert state_file.load() == HardState(5, 2, 10)  # the old state, not a half-written one
    data = bytearray(fs.read_bytes("/data/g0/hard_state"))
    data[-1] ^= 1
    fs.write_bytes("/data/g0/hard_state", bytes(data))
    with pytest.raises(CorruptLogError):
        state_file.load()


def test_crash_keeps_only_what_was_synced() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs)
    log.append(data_entries(1, 10))
    assert log.sync() == 10
    log.append(data_entries(11, 10))
    fs.crash()
    log = open_log(fs)
    assert log.last_index == 10
    log.close()


def test_reads_with_every_small_byte_budget_return_a_correct_prefix() -> None:
    """Chunked reads must resume exactly at frame boundaries, whatever the budget."""
    fs = MemoryFileSystem()
    log = open_log(fs, segment_bytes_max=1 << 20)
    entries = [
        LogEntry(i, 1, EntryKind.DATA, 1, payload_for(i, size=16 + (i * 7) % 50))
        for i in range(1, 30)
    ]
    log.append(entries)
    for bytes_max in range(1, 400, 3):
        got = log.read_entries(1, 30, bytes_max)
        assert [bytes(e.payload) for e in got] == [e.payload for e in entries[: len(got)]]
        assert sum(len(e.payload) for e in got[1:]) <= bytes_max
        result = log.read_offsets(0, bytes_max)
        assert [bytes(b[16:]) for b in result.batches] == [
            e.payload[16:] for e in entries[: len(result.batches)]
        ]
        assert result.next_offset == len(result.batches)
    log.close()
