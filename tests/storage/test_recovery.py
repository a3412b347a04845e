"""Recovery on open: torn tails are cut and reported, corruption elsewhere is loud.

Each test writes a log on MemoryFileSystem, closes it, damages the files the way a
crash or a bad disk would, reopens, and checks what the log serves and reports.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from storage import (
    CorruptLogError,
    LogFailedError,
    MemoryFileSystem,
)
from storage.frame import HEADER_BYTES
from tests.storage.util import DIRECTORY, data_entries, open_log, payload_for, segment_paths


def _written_log(count: int = 40) -> MemoryFileSystem:
    fs = MemoryFileSystem()
    log = open_log(fs)
    log.append(data_entries(1, count))
    log.close()
    return fs


def _flip(fs: MemoryFileSystem, path: str, position: int) -> None:
    data = bytearray(fs.read_bytes(path))
    data[position] ^= 0x10
    fs.write_bytes(path, bytes(data))


def _indexes(fs: MemoryFileSystem) -> list[int]:
    log = open_log(fs)
    entries = log.read_entries(log.first_index, log.last_index + 1, 1 << 20)
    for entry in entries:
        assert bytes(entry.payload) == payload_for(entry.index)
    log.close()
    return [entry.index for entry in entries]


def test_flipped_bit_in_last_entry_is_cut_and_reported() -> None:
    fs = _written_log()
    last = segment_paths(fs)[-1]
    size = len(fs.read_bytes(last))
    _flip(fs, last, size - 5)
    log = open_log(fs)
    assert log.recovery is not None
    assert log.recovery.bytes_cut == HEADER_BYTES + 70
    assert log.recovery.cut_path == last
    assert log.last_index == 39
    assert log.log_end_offset == 78
    log.append(data_entries(40, 1))  # the cut log takes the retransmitted entry
    log.close()
    assert _indexes(fs) == list(range(1, 41))


def test_flipped_bit_mid_last_segment_is_corruption() -> None:
    fs = _written_log()
    last = segment_paths(fs)[-1]
    _flip(fs, last, HEADER_BYTES + 3)  # inside the first entry's payload
    with pytest.raises(CorruptLogError) as caught:
        open_log(fs)
    assert caught.value.path == last
    assert caught.value.position == 0


def test_damage_over_several_frames_mid_last_segment_is_corruption() -> None:
    """A few hundred bad bytes cover more than one small frame: still not a torn tail."""
    fs = _written_log()
    last = segment_paths(fs)[-1]
    data = bytearray(fs.read_bytes(last))
    data[HEADER_BYTES + 3 : HEADER_BYTES + 3 + 240] = b"\xde\xad\xbe\xef" * 60  # 3 frames
    fs.write_bytes(last, bytes(data))
    with pytest.raises(CorruptLogError) as caught:
        open_log(fs)
    assert caught.value.path == last


def test_flipped_bit_in_sealed_segment_stops_the_log_on_read() -> None:
    fs = _written_log()
    first = segment_paths(fs)[0]
    _flip(fs, first, HEADER_BYTES + 10)
    log = open_log(fs)  # sealed segments with intact indexes are not re-scanned
    with pytest.raises(CorruptLogError):
        log.read_entries(1, 3, 1 << 20)
    with pytest.raises(LogFailedError):
        log.read_offsets(0, 1 << 20)
    with pytest.raises(LogFailedError):
        log.append(data_entries(41, 1))


def test_flipped_bit_in_sealed_segment_without_index_fails_open() -> None:
    fs = _written_log()
    first = segment_paths(fs)[0]
    _flip(fs, first, HEADER_BYTES + 10)
    fs.remove(first.replace(".log", ".index"))
    with pytest.raises(CorruptLogError) as caught:
        open_log(fs)
    assert caught.value.path == first


def test_flipped_bit_in_index_rebuilds_it() -> None:
    fs = _written_log()
    index_path = segment_paths(fs)[0].replace(".log", ".index")
    _flip(fs, index_path, 30)
    log = open_log(fs)
    assert log.recovery is not None
    assert log.recovery.indexes_rebuilt == 1
    assert log.recovery.bytes_cut == 0
    log.close()
    assert _indexes(fs) == list(range(1, 41))


def test_missing_and_stale_indexes_are_rebuilt() -> None:
    fs = _written_log()
    paths = segment_paths(fs)
    assert len(paths) >= 3
    # A stale index: a well-formed index file describing a different size of its segment.
    stale = paths[1].replace(".log", ".index")
    log = open_log(fs)
    segment = log.segments[1]
    summary = replace(segment.summary(), log_bytes=segment.size_bytes - 1)
    fs.write_bytes(stale, segment.index.encode(summary))
    log.close()
    fs.remove(paths[0].replace(".log", ".index"))
    log = open_log(fs)
    assert log.recovery is not None
    assert log.recovery.indexes_rebuilt == 2
    assert [log.offset_for_index(i) for i in range(1, 41)] == list(range(0, 80, 2))
    assert [log.index_for_offset(o) for o in range(80)] == [1 + o // 2 for o in range(80)]
    log.close()
    assert fs.exists(paths[0].replace(".log", ".index"))


def test_zero_filled_tail_is_cut() -> None:
    fs = _written_log()
    last = segment_paths(fs)[-1]
    fs.write_bytes(last, fs.read_bytes(last) + bytes(300))
    log = open_log(fs)
    assert log.recovery is not None
    assert log.recovery.bytes_cut == 300
    assert log.last_index == 40
    log.close()


def test_segment_cut_at_every_byte_of_its_last_entry() -> None:
    fs = _written_log()
    last = segment_paths(fs)[-1]
    whole = fs.read_bytes(last)
    frame_bytes = HEADER_BYTES + 70
    for cut in range(len(whole) - frame_bytes, len(whole)):
        fs.write_bytes(last, whole[:cut])
        log = open_log(fs)
        assert log.last_index == 39, cut
        assert log.recovery is not None
        assert log.recovery.bytes_cut == cut - (len(whole) - frame_bytes)
        assert log.read_offsets(76, 1 << 20).next_offset == 78
        log.close()
    fs.write_bytes(last, whole)
    assert _indexes(fs) == list(range(1, 41))


def test_torn_sealed_segment_drops_the_segments_after_it() -> None:
    """A sealed segment that was never flushed (no index) may be torn: later ones go too."""
    fs = _written_log()
    paths = segment_paths(fs)
    fs.remove(paths[-2].replace(".log", ".index"))
    torn = fs.read_bytes(paths[-2])
    fs.write_bytes(paths[-2], torn[:-7])
    log = open_log(fs)
    assert log.recovery is not None
    assert log.recovery.segments_removed == (paths[-1].rsplit("/", 1)[1],)
    assert log.recovery.bytes_cut == len(torn) - 7 - (len(torn) - HEADER_BYTES - 70)
    assert segment_paths(fs) == paths[:-1]
    log.close()


def test_leftover_segment_of_interrupted_truncation_is_removed() -> None:
    fs = _written_log()
    paths = segment_paths(fs)
    # A truncation cut the second-to-last segment but crashed before removing the last.
    before = fs.read_bytes(paths[-2])
    fs.write_bytes(paths[-2], before[: HEADER_BYTES + 70])
    fs.remove(paths[-2].replace(".log", ".index"))
    log = open_log(fs)
    assert log.recovery is not None
    assert log.recovery.segments_removed == (paths[-1].rsplit("/", 1)[1],)
    first_of_cut = int(paths[-2].rsplit("/", 1)[1][:-4])
    assert log.last_index == first_of_cut
    log.close()


def test_empty_directory_and_real_filesystem_round_trip(tmp_path: object) -> None:
    from storage import LogConfig, OsFileSystem, PartitionLog

    directory = f"{tmp_path}/p"
    config = LogConfig(segment_bytes_max=2048, index_interval_bytes=256)
    log = PartitionLog.open(directory, config, fs=OsFileSystem())
    log.append(data_entries(1, 100))
    assert log.sync() == 100
    log.truncate_suffix(90)
    log.truncate_prefix(10)
    log.close()
    log = PartitionLog.open(directory, config, fs=OsFileSystem())
    assert (log.first_index, log.last_index) == (10, 90)
    assert (log.log_start_offset, log.log_end_offset) == (18, 180)
    batches = log.read_offsets(18, 1 << 20).batches
    assert bytes(batches[0][16:]) == payload_for(10)[16:]
    log.close()
    assert DIRECTORY  # the memory tests' directory is unrelated to tmp_path


def test_torn_crashes_keep_a_prefix_of_the_unsynced_entries() -> None:
    """Across seeds, a crash that tears the unsynced tail leaves the synced entries plus
    a prefix of the unsynced ones, each byte-exact, and the next open cuts the rest."""
    import random

    kept_some = 0
    for seed in range(60):
        fs = MemoryFileSystem()
        log = open_log(fs, segment_bytes_max=1 << 20)
        log.append(data_entries(1, 5))
        log.sync()
        log.append(data_entries(6, 10))
        fs.crash(tear=True, rng=random.Random(seed))
        log = open_log(fs, segment_bytes_max=1 << 20)
        assert 5 <= log.last_index <= 15
        kept_some += log.last_index > 5
        assert log.log_end_offset == 2 * log.last_index
        log.close()
        assert _indexes_of(fs) == list(range(1, log.last_index + 1))
    assert kept_some > 10


def _indexes_of(fs: MemoryFileSystem) -> list[int]:
    log = open_log(fs, segment_bytes_max=1 << 20)
    assert log.recovery is not None
    assert log.recovery.bytes_cut == 0  # the first open already cut the torn tail
    entries = log.read_entries(1, log.last_index + 1, 1 << 20)
    assert all(bytes(e.payload) == payload_for(e.index) for e in entries)
    log.close()
    return [e.index for e in entries]


def test_leftover_after_a_trusted_segment_makes_it_active_again() -> None:
    fs = _written_log()
    paths = segment_paths(fs)
    fs.remove(paths[-1])  # the real last segment is gone ...
    fs.write_bytes(f"{DIRECTORY}/{10**6:020d}.log", b"")  # ... and a stray one sits far ahead
    log = open_log(fs)
    assert log.recovery is not None
    assert log.recovery.segments_removed == (f"{10**6:020d}.log",)
    last = log.last_index
    log.append(data_entries(last + 1, 20))
    log.close()
    assert _indexes(fs) == list(range(1, last + 21))


def test_entries_larger_than_a_scan_chunk_recover() -> None:
    fs = MemoryFileSystem()
    big = 1536 * 1024  # larger than the 1 MiB scan chunk
    log = open_log(fs, segment_bytes_max=1 << 30, entry_bytes_max=2 << 20)
    log.append(data_entries(1, 3, size=big))
    log.close()
    last = segment_paths(fs)[-1]
    whole = fs.read_bytes(last)
    fs.write_bytes(last, whole[:-1000])
    log = open_log(fs, segment_bytes_max=1 << 30, entry_bytes_max=2 << 20)
    assert log.last_index == 2
    assert log.recovery is not None
    assert log.recovery.bytes_cut == HEADER_BYTES + big - 1000
    assert bytes(log.read_entries(2, 3, 1)[0].payload) == payload_for(2, big)
    log.close()
