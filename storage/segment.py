"""Segment: one `{base:020d}.log` file of frames plus its sparse `{base:020d}.index`.

A segment knows its raft index range, Kafka offset range, byte size, term runs and
sparse index. It does positioned I/O only; the PartitionLog decides when to roll, sync,
truncate and delete, and holds the locks. Recovery lives here too: `scan` verifies every
frame of a file and tells a torn tail (cut it) from corruption in the middle (refuse).
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass

from storage.errors import CorruptLogError
from storage.frame import HEADER, HEADER_BYTES, EntryKind, FrameHeader, FrameStatus, decode
from storage.fs import File, FileSystem
from storage.sparse_index import SegmentSummary, SparseIndex, decode_index

SCAN_CHUNK_BYTES = 1 << 20
WALK_CHUNK_BYTES = 16 * 1024
#: How many frames after a bad one recovery looks for to tell corruption from a torn tail.
DAMAGE_FRAMES_MAX = 16


def log_name(base_index: int) -> str:
    # Zero-padded to 20 digits so that `ls` sorts segments numerically (Kafka's rule).
    return f"{base_index:020d}.log"


def index_name(base_index: int) -> str:
    return f"{base_index:020d}.index"


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Outcome of verifying a segment file from its start."""

    valid_bytes: int  # bytes of valid frames from the start
    file_bytes: int
    last_index: int
    next_offset: int


class Segment:
    """One segment file. Not thread safe: the owning PartitionLog serialises access.

    Invariant: base_index <= last_index + 1; base_offset <= next_offset;
    size_bytes == bytes of valid frames in the file.
    """

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        base_index: int,
        base_offset: int,
        created_ms: int,
        index_interval_bytes: int = 4096,
        entry_bytes_max: int = 1 << 24,
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.base_index = base_index
        self.base_offset = base_offset
        self.last_index = base_index - 1
        self.next_offset = base_offset
        self.size_bytes = 0
        self.created_ms = created_ms
        self.last_append_ms = created_ms
        self.term_runs: list[tuple[int, int]] = []  # (first_index, term), terms increasing
        self.index_interval_bytes = index_interval_bytes
        self.entry_bytes_max = entry_bytes_max
        # None while a sealed segment is closed (LRU): index memory stays bounded.
        self._index: SparseIndex | None = SparseIndex(base_index)
        self.bytes_since_index_entry = 0
        self.sealed = False
        self.file: File | None = None
        # Durability bookkeeping, guarded by the log's state lock.
        self.unsynced = False
        self.syncing = 0

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, log_name(self.base_index))

    @property
    def index_path(self) -> str:
        return os.path.join(self.directory, index_name(self.base_index))

    @property
    def empty(self) -> bool:
        return self.last_index < self.base_index

    @property
    def index(self) -> SparseIndex:
        if self._index is None:
            self._reload_index()
        assert self._index is not None
        return self._index

    @index.setter
    def index(self, value: SparseIndex) -> None:
        self._index = value

    def _reload_index(self) -> None:
        """Bring back the sparse index of a sealed segment from its file (or a re-scan)."""
        assert self.sealed
        size_bytes = self.size_bytes
        if not self.load_index_file(size_bytes):
            self.scan(self.index_interval_bytes, self.entry_bytes_max)
            if self.size_bytes != size_bytes:
                raise CorruptLogError(self.log_path, self.size_bytes, "segment shrank")

    def release(self) -> None:
        """Close the file and, for a sealed segment, drop the in-memory sparse index."""
        self.close_handle()
        if self.sealed:
            self._index = None

    def handle(self) -> File:
        if self.file is None:
            self.file = self.fs.open(self.log_path, create=False)
        return self.file

    def close_handle(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    # Bookkeeping of appended frames -------------------------------------------------------

    def note_frame(
        self, index: int, term: int, position: int, offset: int, length: int, interval: int
    ) -> None:
        """Record a frame just written at position (sparse index, term runs, ranges)."""
        assert index == self.last_index + 1
        assert offset == self.next_offset
        if not self.index or self.bytes_since_index_entry >= interval:
            self.index.add(index, position, offset)
            self.bytes_since_index_entry = 0
        self.bytes_since_index_entry += length
        if not self.term_runs or self.term_runs[-1][1] != term:
            assert not self.term_runs or term > self.term_runs[-1][1], "terms must grow"
            self.term_runs.append((index, term))
        self.last_index = index

    def term_at(self, index: int) -> int:
        assert self.base_index <= index <= self.last_index
        slot = bisect.bisect_right(self.term_runs, (index, 1 << 64)) - 1
        return self.term_runs[slot][1]

    @property
    def last_term(self) -> int:
        return self.term_runs[-1][1] if self.term_runs else 0

    def summary(self) -> SegmentSummary:
        return SegmentSummary(
            self.base_index, self.last_index, self.base_offset, self.next_offset,
            self.size_bytes, self.last_append_ms, tuple(self.term_runs),
        )  # fmt: skip

    # Lookups ------------------------------------------------------------------------------

    def headers_from(self, position: int, entry_bytes_max: int) -> _HeaderWalk:
        return _HeaderWalk(self, position, entry_bytes_max)

    def header_at(self, index: int, entry_bytes_max: int) -> tuple[FrameHeader, int]:
        """The frame header of raft index and its file position."""
        assert self.base_index <= index <= self.last_index, (index, self.base_index)
        _, position, _ = self.index.floor_by_index(index)
        for header, at in self.headers_from(position, entry_bytes_max):
            if header.index == index:
                return header, at
        raise CorruptLogError(self.log_path, position, f"index {index} not found")

    def truncate_after(self, index: int, entry_bytes_max: int) -> None:
        """Cut every frame with raft index > index (the file change is not fsynced)."""
        assert self.base_index - 1 <= index <= self.last_index
        if index == self.last_index:
            return
        header, position = self.header_at(index + 1, entry_bytes_max)
        self.handle().truncate(position)
        self.size_bytes = position
        self.last_index = index
        self.next_offset = header.base_offset
        self.index.truncate_after(index)
        self.term_runs = [run for run in self.term_runs if run[0] <= index]
        self.bytes_since_index_entry = position - self.index.positions[-1] if len(self.index) else 0
        self.sealed = False

    def find_offset(self, offset: int, entry_bytes_max: int) -> tuple[FrameHeader, int] | None:
        """The DATA frame holding Kafka offset (header, position), or None if none does."""
        _, position, _ = self.index.floor_by_offset(offset)
        found: tuple[FrameHeader, int] | None = None
        for header, at in self.headers_from(position, entry_bytes_max):
            if header.base_offset > offset:
                break
            if header.base_offset + header.record_count > offset:
                found = (header, at)
                break
        return found

    # Index file ------------------------------------------------------------------------

    def write_index_file(self) -> None:
        """Persist the sparse index of a sealed segment (a cache: no fsync needed)."""
        assert self.sealed
        data = self.index.encode(self.summary())
        file = self.fs.open(self.index_path, create=True)
        try:
            file.truncate(0)
            file.pwrite(0, data)
        finally:
            file.close()

    def load_index_file(self, log_bytes: int) -> bool:
        """Adopt a sealed segment's index file if it is intact and describes log_bytes."""
        if not self.fs.exists(self.index_path):
            return False
        file = self.fs.open(self.index_path)
        try:
            data = file.pread(0, file.size())
        finally:
            file.close()
        decoded = decode_index(data, self.base_index)
        if decoded is None:
            return False
        summary, index = decoded
        if summary.log_bytes != log_bytes or summary.last_index < summary.base_index - 1:
            return False
        if summary.next_offset < summary.base_offset or not summary.term_runs:
            return False
        self.base_offset = summary.base_offset
        self.next_offset = summary.next_offset
        self.last_index = summary.last_index
        self.size_bytes = summary.log_bytes
        self.term_runs = [tuple(run) for run in summary.term_runs]  # type: ignore[misc]
        self.index = index
        self.last_append_ms = summary.sealed_ms
        return True

    # Recovery ---------------------------------------------------------------------------

    def scan(self, interval: int, entry_bytes_max: int) -> ScanResult:
        """Verify every frame from the start, rebuilding index, term runs and ranges.

        Stops at the first frame that is torn or bad. If a valid frame with the next
        expected raft index exists anywhere after that point, the damage is in the middle
        of the data: that raises CorruptLogError. Otherwise the rest is a torn tail.
        """
        file = self.handle()
        file_bytes = file.size()
        self.index = SparseIndex(self.base_index)
        self.term_runs = []
        self.bytes_since_index_entry = 0
        self.last_index = self.base_index - 1
        position = 0
        first = True
        while position < file_bytes:
            buffer = memoryview(file.pread(position, min(SCAN_CHUNK_BYTES, file_bytes - position)))
            consumed, stop = self._scan_chunk(buffer, position, first, interval,
                                              entry_bytes_max, file_bytes)  # fmt: skip
            if consumed:
                first = False
            position += consumed
            if stop:
                break
        self.size_bytes = position
        if position < file_bytes:
            self._check_torn(position, file_bytes, entry_bytes_max)
        return ScanResult(position, file_bytes, self.last_index, self.next_offset)

    def _scan_chunk(
        self, buffer: memoryview, start: int, first: bool, interval: int, entry_bytes_max: int, file_bytes: int,
    ) -> tuple[int, bool]:  # fmt: skip
        """Scan frames in buffer (file bytes from start). Returns (bytes consumed, stop)."""
        at = 0
        while at < len(buffer):
            status, header = decode(buffer, at, entry_bytes_max)
            if status is FrameStatus.TORN and start + len(buffer) < file_bytes:
                if at == 0:
                    # The frame is longer than a chunk: read it whole.
                    need = struct.unpack_from("<I", buffer, 4)[0] if len(buffer) >= 8 else 0
                    whole = memoryview(self.handle().pread(start, max(need, HEADER_BYTES)))
                    status, header = decode(whole, 0, entry_bytes_max)
                    if status is not FrameStatus.VALID:
                        return 0, True
                else:
                    return at, False
            if status is not FrameStatus.VALID or header is None:
                return at, True
            if header.index != self.last_index + 1:
                return at, True
            if first and at == 0:
                self.base_offset = header.base_offset
                self.next_offset = header.base_offset
            if header.base_offset != self.next_offset:
                return at, True
            self.note_frame(header.index, header.term, start + at, header.base_offset,
                            header.length, interval)  # fmt: skip
            self.next_offset = header.base_offset + header.record_count
            at += header.length
            first = False
        return at, False

    def _check_torn(self, position: int, file_bytes: int, entry_bytes_max: int) -> None:
        """Raise CorruptLogError unless everything from position on is a torn tail.

        A torn tail is one partial write at the end. Damage in the middle leaves valid
        frames after it: look for one carrying any of the next `DAMAGE_FRAMES_MAX`
        indexes (damage a few hundred bytes long can cover several small frames).
        """
        rest = self.handle().pread(position, file_bytes - position)
        view = memoryview(rest)
        for index in range(self.last_index + 2, self.last_index + 2 + DAMAGE_FRAMES_MAX):
            needle = struct.pack("<Q", index)
            at = 0
            while True:
                found = rest.find(needle, at)
                if found < 0:
                    break
                candidate = found - 8
                if candidate >= 0:
                    status, _ = decode(view, candidate, entry_bytes_max)
                    if status is FrameStatus.VALID:
                        raise CorruptLogError(
                            self.log_path, position, "bad frame followed by valid frames"
                        )
                at = found + 1


class _HeaderWalk:
    """Iterates (header, position) of the valid frames from a position, reading in chunks."""

    def __init__(self, segment: Segment, position: int, entry_bytes_max: int) -> None:
        self._segment = segment
        self._position = position
        self._entry_bytes_max = entry_bytes_max
        self._chunk = b""
        self._chunk_start = position

    def __iter__(self) -> _HeaderWalk:
        return self

    def __next__(self) -> tuple[FrameHeader, int]:
        segment = self._segment
        position = self._position
        if position >= segment.size_bytes:
            raise StopIteration
        relative = position - self._chunk_start
        if relative < 0 or relative + HEADER_BYTES > len(self._chunk):
            # Read ahead: a walk usually covers about one index interval of small frames.
            self._chunk = segment.handle().pread(position, WALK_CHUNK_BYTES)
            self._chunk_start = position
            relative = 0
        status, header = _decode_header_only(self._chunk, relative)
        if header is None or position + header.length > segment.size_bytes:
            raise CorruptLogError(segment.log_path, position, f"bad frame header ({status})")
        self._position = position + header.length
        return header, position

    def payload_prefix(self, position: int, header: FrameHeader, prefix_bytes: int) -> bytes:
        """The first `prefix_bytes` of the payload of the frame at `position` (usually
        already in the read-ahead chunk, so no extra read)."""
        count = min(prefix_bytes, header.payload_bytes)
        start = position + HEADER_BYTES - self._chunk_start
        if start >= 0 and start + count <= len(self._chunk):
            return bytes(self._chunk[start : start + count])
        return self._segment.handle().pread(position + HEADER_BYTES, count)


def _decode_header_only(raw: bytes, at: int) -> tuple[str, FrameHeader | None]:
    """Decode a header without the payload CRC (used to walk frames verified at open)."""
    if len(raw) - at < HEADER_BYTES:
        return "short", None
    _, length, index, term, base_offset, count, kind, _, _ = HEADER.unpack_from(raw, at)
    if length < HEADER_BYTES or kind not in (0, 1, 2):
        return "implausible", None
    return "ok", FrameHeader(length, index, term, base_offset, count, EntryKind(kind))
