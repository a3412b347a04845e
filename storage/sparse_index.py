"""SparseIndex: the per-segment lookup table from raft index / Kafka offset to file position.

One entry per `index_interval_bytes` of log data, and always the segment's first entry
(Kafka's OffsetIndex, Redpanda's segment_index). A lookup is a floor search by bisect and
the caller scans frame headers forward from there, at most about one interval.

The index is a cache: it is only written for sealed segments, is checksummed and
versioned, records the log size it describes, and is rebuilt by a scan whenever it is
missing, stale, damaged or of an unknown version. It is never trusted over the .log file.

Index file layout (little endian): a header, then term runs, then entries:

    magic b"RKIX", version u16, reserved u16, crc32c u32 (of everything after it),
    entry_count u32, term_run_count u32, base_index u64, last_index u64,
    base_offset i64, next_offset i64, log_bytes u64, sealed_ms i64
    term runs: (first_index u64, term u64) * term_run_count
    entries:   (relative_index u32, position u32, base_offset i64) * entry_count
"""

from __future__ import annotations

import bisect
import struct
from array import array
from dataclasses import dataclass

import crc32c

MAGIC = b"RKIX"
INDEX_VERSION = 1
_HEADER = struct.Struct("<4sHHIIIQQqqQq")
_RUN = struct.Struct("<QQ")
_ENTRY = struct.Struct("<IIq")


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What a sealed segment's index file says about the segment."""

    base_index: int
    last_index: int
    base_offset: int
    next_offset: int
    log_bytes: int
    sealed_ms: int
    term_runs: tuple[tuple[int, int], ...]


class SparseIndex:
    """Parallel arrays of (relative raft index, file position, Kafka base offset).

    Invariant: relative indexes, positions and offsets are each non-decreasing, the
    first two strictly increasing.
    """

    __slots__ = ("base_index", "offsets", "positions", "relative_indexes")

    def __init__(self, base_index: int) -> None:
        self.base_index = base_index
        self.relative_indexes = array("I")
        self.positions = array("I")
        self.offsets = array("q")

    def __len__(self) -> int:
        return len(self.positions)

    def add(self, index: int, position: int, offset: int) -> None:
        relative = index - self.base_index
        assert relative >= 0
        if self.positions:
            assert relative > self.relative_indexes[-1]
            assert position > self.positions[-1]
            assert offset >= self.offsets[-1]
        self.relative_indexes.append(relative)
        self.positions.append(position)
        self.offsets.append(offset)

    def floor_by_index(self, index: int) -> tuple[int, int, int]:
        """The last entry at or before raft index: (index, position, offset)."""
        slot = bisect.bisect_right(self.relative_indexes, index - self.base_index) - 1
        assert slot >= 0, (index, self.base_index)
        return self._at(slot)

    def floor_by_offset(self, offset: int) -> tuple[int, int, int]:
        """The last entry whose base offset is <= offset (the first entry if none)."""
        slot = max(0, bisect.bisect_right(self.offsets, offset) - 1)
        return self._at(slot)

    def _at(self, slot: int) -> tuple[int, int, int]:
        return (
            self.base_index + self.relative_indexes[slot],
            self.positions[slot],
            self.offsets[slot],
        )

    def truncate_after(self, index: int) -> None:
        """Drop entries for raft indexes > index."""
        slot = bisect.bisect_right(self.relative_indexes, index - self.base_index)
        del self.relative_indexes[slot:]
        del self.positions[slot:]
        del self.offsets[slot:]

    def encode(self, summary: SegmentSummary) -> bytes:
        assert summary.base_index == self.base_index
        body = bytearray()
        for first_index, term in summary.term_runs:
            body += _RUN.pack(first_index, term)
        for slot in range(len(self.positions)):
            body += _ENTRY.pack(
                self.relative_indexes[slot], self.positions[slot], self.offsets[slot]
            )
        fixed = _HEADER.pack(
            MAGIC, INDEX_VERSION, 0, 0, len(self.positions), len(summary.term_runs),
            summary.base_index, summary.last_index, summary.base_offset,
            summary.next_offset, summary.log_bytes, summary.sealed_ms,
        )  # fmt: skip
        crc = crc32c.crc32c(body, crc32c.crc32c(fixed[12:]))
        return fixed[:8] + struct.pack("<I", crc) + fixed[12:] + bytes(body)


def decode_index(data: bytes, base_index: int) -> tuple[SegmentSummary, SparseIndex] | None:
    """Parse an index file; None when it is damaged, of another version or another segment."""
    if len(data) < _HEADER.size:
        return None
    (magic, version, _, crc, entry_count, run_count, base, last, base_offset, next_offset,
     log_bytes, sealed_ms) = _HEADER.unpack_from(data, 0)  # fmt: skip
    if magic != MAGIC or version != INDEX_VERSION or base != base_index:
        return None
    if len(data) != _HEADER.size + run_count * _RUN.size + entry_count * _ENTRY.size:
        return None
    if crc32c.crc32c(data[12:]) != crc:
        return None
    runs = tuple(
        _RUN.unpack_from(data, _HEADER.size + slot * _RUN.size) for slot in range(run_count)
    )
    index = SparseIndex(base_index)
    start = _HEADER.size + run_count * _RUN.size
    try:
        for relative, position, offset in _ENTRY.iter_unpack(data[start:]):
            index.add(base_index + relative, position, offset)
    except AssertionError:
        return None
    summary = SegmentSummary(base, last, base_offset, next_offset, log_bytes, sealed_ms, runs)
    return summary, index
