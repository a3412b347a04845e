"""PartitionLog: the segmented, write-ahead log of one Raft group (a partition replica).

Theory of operation
-------------------
The log is the Raft log and the WAL at once. Entries carry a raft index (dense, one per
entry) and, for DATA entries, a Kafka base offset that the log assigns densely: a DATA
entry takes `record_count` offsets, no-op and config entries take none. The base offset
is stored in each frame, so the offset translator is the log itself: the sparse index
answers floor lookups by index or offset and a short header walk finishes them; the
newest `recent_entries_max` entries are also mapped exactly in memory (the hot path,
high watermark = offset after the commit index, never touches the disk).

Durability levels (Redpanda's vocabulary, renamed so "committed" stays Raft's word):
appended_index (accepted), written_index (handed to the OS by one pwrite per segment per
append) and flushed_index (fdatasync returned). `append` writes but never fsyncs; `sync`
fsyncs every segment written since the last sync and the directory if files were created
or removed. `sync` runs on the GroupCommitter's thread while the owner keeps appending.

Threads: one owner thread (the broker's event loop) calls everything except `sync`,
which may run on another thread. `_state_lock` guards what both touch (written index,
which segments are unsynced); `_sync_lock` serialises a sync with the structural
operations (truncate, reset, retention, close), which are rare and durable on return.

Recovery (`open`): every segment but the last is trusted if its index file is intact and
describes the file's size (index files are written only after the segment's fsync), and
otherwise scanned. The last segment is always scanned. A torn tail is cut and reported;
a bad frame followed by valid frames is corruption and raises CorruptLogError. Segments
left over by an interrupted truncation (not contiguous) are removed and reported.

Prefix truncation keeps a start checkpoint (first index, its offset, the term before it)
so the log can start mid-segment and survive restarts; whole segments below it go.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from storage.checkpoint import TEMP_SUFFIX, read_checkpoint, write_checkpoint
from storage.config import FsyncPolicy, LogConfig
from storage.errors import (
    CorruptLogError,
    EntryTooLargeError,
    IndexOutOfRangeError,
    LogClosedError,
    LogFailedError,
    LogFullError,
    LogIOError,
    OffsetOutOfRangeError,
)
from storage.frame import (
    HEADER_BYTES,
    EntryKind,
    FrameHeader,
    FrameStatus,
    LogEntry,
    decode,
    encode_into,
    frame_bytes,
)
from storage.fs import FileSystem, OsFileSystem
from storage.segment import Segment, index_name, log_name

START_CHECKPOINT = "start.checkpoint"
_START = struct.Struct("<QqQ")  # first_index, its Kafka offset, term of first_index - 1
_STAMP_OFFSET = struct.Struct(">q")  # Kafka record batch baseOffset, big endian, byte 0
_STAMP_EPOCH = struct.Struct(">i")  # partitionLeaderEpoch, big endian, byte 12
_STAMP_BYTES_MIN = 16
_LENGTH = struct.Struct("<I")
ENOSPC = 28
_T = TypeVar("_T")


def _wall_clock_ms() -> int:
    # Wall time, not monotonic: segment times are persisted and compared across reboots.
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an appended entry landed: its raft index and Kafka base offset."""

    index: int
    base_offset: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Record batches for a fetch, stamped with base offset and leader epoch.

    `batches` are memoryviews into one buffer per read (no per-batch copy); write them
    with `writelines` or join them with `to_bytes()`. next_offset is the offset after the
    last batch (start_offset if nothing was read).
    """

    batches: list[memoryview]
    next_offset: int
    bytes_total: int

    def to_bytes(self) -> bytes:
        return b"".join(self.batches)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What `open` found and repaired."""

    segments_total: int
    segments_scanned: int
    indexes_rebuilt: int
    bytes_cut: int
    cut_path: str | None
    cut_position: int | None
    segments_removed: tuple[str, ...] = field(default_factory=tuple)


class _RecentOffsets:
    """Exact raft index -> Kafka base offset for the newest entries (bounded)."""

    __slots__ = ("first_index", "limit", "offsets")

    def __init__(self, next_index: int, limit: int) -> None:
        self.first_index = next_index
        self.offsets = array("q")
        self.limit = limit

    def append(self, index: int, offset: int) -> None:
        assert index == self.first_index + len(self.offsets)
        self.offsets.append(offset)
        if len(self.offsets) >= 2 * self.limit:
            # Trim in halves so appends stay O(1) amortised.
            del self.offsets[: self.limit]
            self.first_index += self.limit

    def get(self, index: int) -> int | None:
        slot = index - self.first_index
        if 0 <= slot < len(self.offsets):
            return self.offsets[slot]
        return None

    def truncate_after(self, index: int) -> None:
        if index < self.first_index:
            self.first_index = index + 1
            del self.offsets[:]
        else:
            del self.offsets[index + 1 - self.first_index :]


class PartitionLog:
    """A directory of segments holding one Raft group's entries. See the module doc."""

    def __init__(
        self, directory: str, config: LogConfig, fs: FileSystem, clock_ms: Callable[[], int]
    ) -> None:
        self.directory = directory
        self.config = config
        self.fs = fs
        self.clock_ms = clock_ms
        self.segments: list[Segment] = []
        self.first_index = 1
        self.log_start_offset = 0
        self.prev_term = 0  # term of first_index - 1
        self._recent = _RecentOffsets(1, config.recent_entries_max)
        self._written_index = 0
        self._flushed_index = 0
        self._state_lock = threading.Lock()
        self._sync_lock = threading.RLock()
        self._dir_dirty = False
        self._failure: BaseException | None = None
        self._closed = False
        self._open_sealed: OrderedDict[int, Segment] = OrderedDict()
        self.sync_count = 0
        self.recovery: RecoveryReport | None = None

    # Opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str,
        config: LogConfig | None = None,
        fs: FileSystem | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        initial_index: int = 1,
    ) -> PartitionLog:
        """Open (or create) the log in directory, recovering it; see `recovery` for the report.

        A new log starts at raft index initial_index and Kafka offset 0.
        """
        log = cls(directory, config or LogConfig(), fs or OsFileSystem(), clock_ms)
        log._recover(initial_index)
        return log

    def _recover(self, initial_index: int) -> None:
        fs = self.fs
        fs.make_dirs(self.directory)
        names = fs.list_dir(self.directory)
        for name in names:
            if name.endswith(TEMP_SUFFIX):
                fs.remove(self._path(name))
        start = read_checkpoint(fs, self._path(START_CHECKPOINT))
        bases = sorted(int(name[:-4]) for name in names if name.endswith(".log"))
        for name in names:
            if name.endswith(".index") and int(name[:-6]) not in bases:
                fs.remove(self._path(name))
        removed: list[str] = []
        cut = self._load_segments(bases, removed)
        if start is not None:
            start_index, start_offset, prev_term = _START.unpack(start)
            self._apply_start(start_index, start_offset, prev_term, removed)
        elif self.segments:
            self.first_index = self.segments[0].base_index
            self.log_start_offset = self.segments[0].base_offset
        else:
            self.first_index = initial_index
        if not self.segments:
            self._create_segment(self.first_index, self.log_start_offset)
        active = self.segments[-1]
        if active.sealed:
            self._reactivate(active)
        self._recent = _RecentOffsets(active.last_index + 1, self.config.recent_entries_max)
        self._written_index = active.last_index
        # What we found may sit only in the page cache (a process crash): make it durable.
        self._dir_dirty = True
        active.unsynced = True
        self.sync()
        self.recovery = RecoveryReport(
            segments_total=len(bases),
            segments_scanned=cut[0],
            indexes_rebuilt=cut[1],
            bytes_cut=cut[2],
            cut_path=cut[3],
            cut_position=cut[4],
            segments_removed=tuple(removed),
        )

    def _load_segments(
        self, bases: list[int], removed: list[str]
    ) -> tuple[int, int, int, str | None, int | None]:
        """Load or scan each segment; returns (scanned, rebuilt, bytes cut, cut path, pos)."""
        scanned = rebuilt = bytes_cut = 0
        cut_path: str | None = None
        cut_position: int | None = None
        for slot, base in enumerate(bases):
            previous = self.segments[-1] if self.segments else None
            segment = self._new_segment(base, 0)
            if previous is not None:
                segment.base_offset = segment.next_offset = previous.next_offset
            last = slot == len(bases) - 1
            file_bytes = segment.handle().size()
            trusted = not last and segment.load_index_file(file_bytes)
            if not trusted:
                scanned += 1
                rebuilt += 0 if last else 1
                segment.unsynced = True  # rewrites its index after the next fsync
                result = segment.scan(self.config.index_interval_bytes, self.config.entry_bytes_max)
                if result.valid_bytes < result.file_bytes:
                    segment.handle().truncate(result.valid_bytes)
                    bytes_cut += result.file_bytes - result.valid_bytes
                    cut_path, cut_position = segment.log_path, result.valid_bytes
            if previous is not None and not self._continues(previous, segment):
                segment.close_handle()
                for later in bases[slot:]:
                    self._remove_files(later)
                    removed.append(log_name(later))
                break
            if not last:
                segment.sealed = True
            if trusted:
                segment.release()
            self.segments.append(segment)
            if segment.size_bytes < file_bytes and not last:
                # A sealed segment with a torn tail was never fully flushed: nothing after
                # it can have been flushed either (segments are synced oldest first).
                for later in bases[slot + 1 :]:
                    self._remove_files(later)
                    removed.append(log_name(later))
                segment.sealed = False
                break
        return scanned, rebuilt, bytes_cut, cut_path, cut_position

    def _reactivate(self, segment: Segment) -> None:
        """Make a sealed segment the active one again (its successors were removed)."""
        index = segment.index  # loads a dropped sparse index while still sealed
        segment.sealed = False
        if self.fs.exists(segment.index_path):
            self.fs.remove(segment.index_path)  # it will describe a different size soon
        segment.handle()
        segment.bytes_since_index_entry = (
            segment.size_bytes - index.positions[-1] if len(index) else 0
        )

    def _continues(self, previous: Segment, segment: Segment) -> bool:
        """Whether segment follows previous; False means a leftover of a truncation."""
        if segment.base_index != previous.last_index + 1:
            return False
        if segment.empty:
            segment.base_offset = segment.next_offset = previous.next_offset
            return True
        if segment.base_offset != previous.next_offset:
            raise CorruptLogError(segment.log_path, 0, "offsets do not continue")
        if segment.term_runs[0][1] < previous.last_term:
            raise CorruptLogError(segment.log_path, 0, "terms go backwards")
        return True

    def _apply_start(
        self, start_index: int, start_offset: int, prev_term: int, removed: list[str]
    ) -> None:
        """Adopt the start checkpoint: drop segments wholly below it, check the rest."""
        while self.segments and self.segments[0].last_index < start_index - (
            0 if len(self.segments) > 1 else 1
        ):
            segment = self.segments.pop(0)
            segment.close_handle()
            self._remove_files(segment.base_index)
            removed.append(log_name(segment.base_index))
        if self.segments:
            first = self.segments[0]
            if first.base_index > start_index:
                raise CorruptLogError(first.log_path, 0, "log starts after its checkpoint")
            if first.empty and first.base_index == start_index:
                first.base_offset = first.next_offset = start_offset
            elif first.last_index == start_index - 1 and len(self.segments) == 1:
                if first.next_offset != start_offset:
                    raise CorruptLogError(first.log_path, 0, "end offset != checkpoint")
            elif first.last_index >= start_index:
                header, _ = first.header_at(start_index, self.config.entry_bytes_max)
                if header.base_offset != start_offset:
                    raise CorruptLogError(first.log_path, 0, "start offset != checkpoint")
        self.first_index = start_index
        self.log_start_offset = start_offset
        self.prev_term = prev_term

    # Properties ---------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.segments[-1].last_index

    @property
    def log_end_offset(self) -> int:
        """The next Kafka offset the log will assign."""
        return self.segments[-1].next_offset

    @property
    def appended_index(self) -> int:
        return self.segments[-1].last_index

    @property
    def written_index(self) -> int:
        return self._written_index

    @property
    def flushed_index(self) -> int:
        return self._flushed_index

    @property
    def last_term(self) -> int:
        return self.term_at(self.last_index)

    @property
    def size_bytes(self) -> int:
        return sum(segment.size_bytes for segment in self.segments)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _check_usable(self) -> None:
        if self._closed:
            raise LogClosedError(self.directory)
        if self._failure is not None:
            raise LogFailedError(f"{self.directory}: {self._failure}") from self._failure

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error

    # Appending ----------------------------------------------------------------------------

    def append(self, entries: Sequence[LogEntry]) -> list[AppendResult]:
        """Write entries (one pwrite per segment touched); durable only after sync().

        Raises EntryTooLargeError (nothing written), LogFullError (ENOSPC: nothing of
        this call is kept), LogIOError (the log stops serving).
        """
        self._check_usable()
        self._validate(entries)
        results: list[AppendResult] = []
        before_index = self.last_index
        start = 0
        try:
            while start < len(entries):
                self._maybe_roll(frame_bytes(entries[start]))
                end = self._chunk_end(entries, start)
                results.extend(self._write_chunk(entries[start:end]))
                start = end
        except OSError as error:
            self._undo_append(before_index, error)
        return results

    def _validate(self, entries: Sequence[LogEntry]) -> None:
        expected = self.last_index + 1
        term = self.term_at(self.last_index)
        for entry in entries:
            assert entry.index == expected, f"index {entry.index}, expected {expected}"
            assert entry.term >= term, f"term {entry.term} after {term}"
            assert entry.term < 1 << 31, "terms are Kafka leader epochs (int32)"
            assert entry.record_count >= 0
            if entry.kind != EntryKind.DATA:
                assert entry.record_count == 0, "only DATA entries take Kafka offsets"
            if len(entry.payload) > self.config.entry_bytes_max:
                raise EntryTooLargeError(
                    f"{len(entry.payload)} bytes > {self.config.entry_bytes_max}"
                )
            expected += 1
            term = entry.term

    def _chunk_end(self, entries: Sequence[LogEntry], start: int) -> int:
        """Entries [start, end) fit the active segment (always at least one)."""
        size_bytes = self.segments[-1].size_bytes + frame_bytes(entries[start])
        end = start + 1
        while end < len(entries):
            size_bytes += frame_bytes(entries[end])
            if size_bytes > self.config.segment_bytes_max:
                break
            end += 1
        return end

    def _write_chunk(self, entries: Sequence[LogEntry]) -> list[AppendResult]:
        segment = self.segments[-1]
        buffer = bytearray(sum(frame_bytes(entry) for entry in entries))
        position = 0
        offset = segment.next_offset
        for entry in entries:
            position = encode_into(buffer, position, entry, offset)
            offset += entry.record_count
        try:
            segment.handle().pwrite(segment.size_bytes, buffer)
        except OSError:
            self._cut_back(segment)
            raise
        results = []
        position = segment.size_bytes
        interval = self.config.index_interval_bytes
        for entry in entries:
            length = frame_bytes(entry)
            segment.note_frame(entry.index, entry.term, position, segment.next_offset, length,
                               interval)  # fmt: skip
            results.append(AppendResult(entry.index, segment.next_offset))
            self._recent.append(entry.index, segment.next_offset)
            segment.next_offset += entry.record_count
            position += length
        segment.size_bytes = position
        segment.last_append_ms = self.clock_ms()
        with self._state_lock:
            segment.unsynced = True
            self._written_index = segment.last_index
        return results

    def _cut_back(self, segment: Segment) -> None:
        """Remove whatever part of a failed write reached the file."""
        try:
            segment.handle().truncate(segment.size_bytes)
        except OSError as error:
            self._fail(error)
            raise LogIOError(f"{self.directory}: cannot undo a failed write") from error

    def _undo_append(self, before_index: int, error: OSError) -> None:
        """Put the files back as they were before a failed append, then raise typed."""
        try:
            with self._sync_lock:
                self._truncate_files(before_index)
        except (OSError, CorruptLogError) as undo_error:
            self._fail(undo_error)
            raise LogIOError(f"{self.directory}: append failed, undo failed") from undo_error
        if error.errno == ENOSPC:
            raise LogFullError(f"{self.directory}: {error}") from error
        self._fail(error)
        raise LogIOError(f"{self.directory}: {error}") from error

    def _maybe_roll(self, next_frame_bytes: int) -> None:
        active = self.segments[-1]
        if active.empty:
            return
        too_big = active.size_bytes + next_frame_bytes > self.config.segment_bytes_max
        too_old = self.clock_ms() - active.created_ms >= self.config.segment_age_ms_max
        if too_big or too_old:
            self.roll()

    def roll(self) -> None:
        """Seal the active segment and start a new one (no-op if the active one is empty)."""
        self._check_usable()
        active = self.segments[-1]
        if active.empty:
            return
        with self._state_lock:
            # Under the lock: sync() decides from a consistent view whether the fsync it
            # is about to do covers the whole sealed segment.
            active.sealed = True
            active.unsynced = True  # the next sync writes its index file
        if self.config.fsync_policy is FsyncPolicy.NEVER:
            active.write_index_file()
        self._create_segment(active.last_index + 1, active.next_offset)
        self._remember_open(active)

    def _new_segment(self, base_index: int, base_offset: int) -> Segment:
        return Segment(
            self.fs, self.directory, base_index, base_offset, self.clock_ms(),
            self.config.index_interval_bytes, self.config.entry_bytes_max,
        )  # fmt: skip

    def _create_segment(self, base_index: int, base_offset: int) -> None:
        segment = self._new_segment(base_index, base_offset)
        segment.file = self.fs.open(segment.log_path, create=True)
        assert segment.file.size() == 0, f"{segment.log_path} already exists"
        with self._state_lock:
            self.segments.append(segment)
            self._dir_dirty = True

    # Durability ---------------------------------------------------------------------------

    def sync(self) -> int:
        """Make every written entry durable; returns the flushed index. Thread safe.

        With FsyncPolicy.NEVER nothing is fsynced and written counts as flushed.
        """
        with self._sync_lock:
            with self._state_lock:
                self._check_usable()
                target = self._written_index
                segments = [segment for segment in self.segments if segment.unsynced]
                sealed = [segment for segment in segments if segment.sealed]
                for segment in segments:
                    segment.unsynced = False
                    segment.syncing += 1
                dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                self._sync_files(segments, sealed, dir_dirty)
            except OSError as error:
                self._fail(error)
                raise LogIOError(f"{self.directory}: fsync failed: {error}") from error
            finally:
                with self._state_lock:
                    for segment in segments:
                        segment.syncing -= 1
            with self._state_lock:
                self._flushed_index = max(self._flushed_index, target)
                self.sync_count += 1
                return self._flushed_index

    def _sync_files(self, segments: list[Segment], sealed: list[Segment], dir_dirty: bool) -> None:
        if self.config.fsync_policy is FsyncPolicy.ALWAYS:
            # Oldest first: a crash never leaves a flushed segment after an unflushed one.
            for segment in segments:
                segment.handle().fsync()
            if dir_dirty:
                self.fs.fsync_dir(self.directory)
        for segment in sealed:
            # Written only after an fsync that started after the segment was sealed: an
            # intact index file means the segment it describes is complete on disk.
            segment.write_index_file()

    # Reading ------------------------------------------------------------------------------

    def _segment_for_index(self, index: int) -> Segment:
        bases = [segment.base_index for segment in self.segments]
        slot = bisect.bisect_right(bases, index) - 1
        assert slot >= 0
        return self.segments[slot]

    def _segment_for_offset(self, offset: int) -> Segment:
        offsets = [segment.base_offset for segment in self.segments]
        slot = max(0, bisect.bisect_right(offsets, offset) - 1)
        return self.segments[slot]

    def _open(self, segment: Segment) -> Segment:
        if segment is not self.segments[-1]:
            self._remember_open(segment)
        return segment

    def _remember_open(self, segment: Segment) -> None:
        """Keep at most open_segments_max - 1 sealed segment files open (LRU)."""
        self._open_sealed[segment.base_index] = segment
        self._open_sealed.move_to_end(segment.base_index)
        limit = self.config.open_segments_max - 1
        with self._state_lock:
            for base in list(self._open_sealed):
                if len(self._open_sealed) <= limit:
                    break
                candidate = self._open_sealed[base]
                if not candidate.unsynced and candidate.syncing == 0:
                    candidate.release()
                    del self._open_sealed[base]

    def term_at(self, index: int) -> int:
        """The term of the entry at raft index (first_index - 1 gives the term before)."""
        if index == self.first_index - 1:
            return self.prev_term
        if not self.first_index <= index <= self.last_index:
            raise IndexOutOfRangeError(index, self.first_index, self.last_index)
        return self._segment_for_index(index).term_at(index)

    def offset_for_index(self, index: int) -> int:
        """Kafka base offset of the entry at index; last_index + 1 gives log_end_offset.

        For a commit index c, the high watermark is offset_for_index(c + 1).
        """
        self._check_usable()
        if not self.first_index <= index <= self.last_index + 1:
            raise IndexOutOfRangeError(index, self.first_index, self.last_index)
        if index == self.last_index + 1:
            return self.log_end_offset
        if index == self.first_index:
            return self.log_start_offset
        recent = self._recent.get(index)
        if recent is not None:
            return recent
        segment = self._open(self._segment_for_index(index))
        return self._guard(lambda: segment.header_at(index, self.config.entry_bytes_max))[
            0
        ].base_offset

    def index_for_offset(self, offset: int) -> int:
        """Raft index of the DATA entry holding Kafka offset; log_end_offset -> last_index + 1."""
        self._check_usable()
        if not self.log_start_offset <= offset <= self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        if offset == self.log_end_offset:
            return self.last_index + 1
        segment = self._open(self._segment_for_offset(offset))
        found = self._guard(lambda: segment.find_offset(offset, self.config.entry_bytes_max))
        if found is None:
            error = CorruptLogError(segment.log_path, 0, f"offset {offset} not found")
            self._fail(error)
            raise error
        return max(found[0].index, self.first_index)

    def _guard(self, action: Callable[[], _T]) -> _T:
        """Run a read; corruption stops the log from serving (it is never skipped)."""
        try:
            return action()
        except CorruptLogError as error:
            self._fail(error)
            raise
        except OSError as error:
            self._fail(error)
            raise LogIOError(f"{self.directory}: {error}") from error

    def entry_prefixes(self, prefix_bytes: int) -> Iterator[tuple[FrameHeader, bytes]]:
        """Header and first `prefix_bytes` of payload of every entry, oldest first.

        For state kept in batch headers (the idempotent producers' table), rebuilt at
        start-up: reading whole payloads would read the whole log (seconds per GB).
        Frames were verified when the log was opened; CRCs are not checked again here.
        """
        self._check_usable()
        for segment in list(self.segments):
            walk = segment.headers_from(0, self.config.entry_bytes_max)
            for header, position in walk:
                if header.index >= self.first_index:
                    yield header, walk.payload_prefix(position, header, prefix_bytes)

    def read_entries(self, lo_index: int, hi_index: int, bytes_max: int) -> list[LogEntry]:
        """Entries [lo_index, hi_index) up to about bytes_max of payload (at least one)."""
        self._check_usable()
        if lo_index >= hi_index:
            return []
        if lo_index < self.first_index or hi_index > self.last_index + 1:
            raise IndexOutOfRangeError(lo_index, self.first_index, self.last_index)
        bytes_max = min(bytes_max, self.config.read_bytes_max)
        return self._guard(lambda: self._read_entries(lo_index, hi_index, bytes_max))

    def _read_entries(self, lo_index: int, hi_index: int, bytes_max: int) -> list[LogEntry]:
        entries: list[LogEntry] = []
        budget = bytes_max
        index = lo_index
        while index < hi_index and (budget > 0 or not entries):
            segment = self._open(self._segment_for_index(index))
            first, position = segment.header_at(index, self.config.entry_bytes_max)
            frames = self._frames(segment, position, max(budget, 1), first.length)
            for header, view in frames:
                if header.index >= hi_index or (entries and header.payload_bytes > budget):
                    return entries
                payload = view[HEADER_BYTES:]
                entries.append(LogEntry(header.index, header.term, header.kind,
                                        header.record_count, payload))  # fmt: skip
                budget -= header.payload_bytes
                index = header.index + 1
            if index <= segment.last_index:
                break  # the byte budget ended inside this segment
        return entries

    def _frames(
        self, segment: Segment, position: int, bytes_max: int, length: int | None
    ) -> Iterator[tuple[FrameHeader, memoryview]]:
        """Verified frames from position to the segment end, read in chunks of ~bytes_max.

        length is the byte length of the frame at position. Each chunk is one pread into a
        fresh buffer; frames are memoryviews into it. The caller stops iterating when its
        byte budget is spent.
        """
        file = segment.handle()
        chunk_bytes = max(bytes_max, HEADER_BYTES)
        while position < segment.size_bytes:
            if length is None:
                length = self._length_at(segment, memoryview(b""), position, 0)
            size = min(segment.size_bytes - position, max(length, chunk_bytes))
            length = None
            buffer = bytearray(size)
            got = file.readinto(position, buffer)
            view = memoryview(buffer)[:got]
            at = 0
            while at < got:
                status, decoded = decode(view, at, self.config.entry_bytes_max)
                if status is FrameStatus.TORN and at > 0:
                    length = self._length_at(segment, view, position, at)
                    break  # the frame continues past this chunk
                if status is not FrameStatus.VALID or decoded is None:
                    raise CorruptLogError(segment.log_path, position + at, status.value)
                yield decoded, view[at : at + decoded.length]
                at += decoded.length
            position += at
            chunk_bytes = max(HEADER_BYTES, min(chunk_bytes, 1 << 20))

    def _length_at(self, segment: Segment, view: memoryview, position: int, at: int) -> int:
        """Length of the frame at position + at, from view if its header is there."""
        if len(view) - at >= 8:
            return int(_LENGTH.unpack_from(view, at + 4)[0])
        walk = segment.headers_from(position + at, self.config.entry_bytes_max)
        return next(iter(walk))[0].length

    def read_offsets(
        self, start_offset: int, bytes_max: int, max_offset_exclusive: int | None = None
    ) -> ReadResult:
        """Stored record batches holding offsets from start_offset, stamped for Kafka.

        Batches whose base offset is >= max_offset_exclusive (the high watermark) are not
        returned; the first batch is returned even if it is larger than bytes_max. Reads
        stop at the end of a segment, like Kafka's.
        """
        self._check_usable()
        end_offset = self.log_end_offset
        if max_offset_exclusive is not None:
            end_offset = min(end_offset, max_offset_exclusive)
        if not self.log_start_offset <= start_offset <= self.log_end_offset:
            raise OffsetOutOfRangeError(start_offset, self.log_start_offset, self.log_end_offset)
        if start_offset >= end_offset:
            return ReadResult([], start_offset, 0)
        bytes_max = min(bytes_max, self.config.read_bytes_max)
        return self._guard(lambda: self._read_offsets(start_offset, bytes_max, end_offset))

    def _read_offsets(self, start_offset: int, bytes_max: int, end_offset: int) -> ReadResult:
        segment = self._open(self._segment_for_offset(start_offset))
        found = segment.find_offset(start_offset, self.config.entry_bytes_max)
        if found is None:
            raise CorruptLogError(segment.log_path, 0, f"offset {start_offset} not found")
        batches: list[memoryview] = []
        next_offset = start_offset
        total = 0
        frames = self._frames(segment, found[1], bytes_max, found[0].length)
        for header, frame in frames:
            if header.kind != EntryKind.DATA or header.record_count == 0:
                continue
            if header.base_offset >= end_offset:
                break
            if batches and total + header.payload_bytes > bytes_max:
                break
            batch = frame[HEADER_BYTES:]
            if len(batch) >= _STAMP_BYTES_MIN:
                _STAMP_OFFSET.pack_into(batch, 0, header.base_offset)
                _STAMP_EPOCH.pack_into(batch, 12, header.term)
            batches.append(batch)
            total += len(batch)
            next_offset = header.base_offset + header.record_count
        return ReadResult(batches, next_offset, total)

    # Truncation ---------------------------------------------------------------------------

    def truncate_suffix(self, after_index: int) -> None:
        """Drop every entry with index > after_index (a Raft conflict). Durable on return."""
        self._check_usable()
        assert after_index >= self.first_index - 1, "cannot truncate below the log start"
        if after_index >= self.last_index:
            return
        with self._sync_lock:
            try:
                self._truncate_files(after_index)
                self.sync()
            except OSError as error:
                self._fail(error)
                raise LogIOError(f"{self.directory}: truncate failed: {error}") from error

    def _truncate_files(self, after_index: int) -> None:
        """Cut the files after after_index: fsync the cut segment, then remove later ones."""
        if after_index >= self.last_index:
            return
        keep = self._segment_for_index(after_index + 1)
        keep.truncate_after(after_index, self.config.entry_bytes_max)
        if self.config.fsync_policy is FsyncPolicy.ALWAYS:
            keep.handle().fsync()
        if self.fs.exists(keep.index_path):
            self.fs.remove(keep.index_path)
        with self._state_lock:
            later = self.segments[self.segments.index(keep) + 1 :]
            del self.segments[self.segments.index(keep) + 1 :]
            self._dir_dirty = True
            self._written_index = min(self._written_index, after_index)
            self._flushed_index = min(self._flushed_index, after_index)
            keep.unsynced = True
        for segment in later:
            segment.close_handle()
            self._open_sealed.pop(segment.base_index, None)
            self._remove_files(segment.base_index)
        self._open_sealed.pop(keep.base_index, None)
        if keep.file is None:
            keep.handle()
        self._recent.truncate_after(after_index)

    def _remove_files(self, base_index: int) -> None:
        for name in (log_name(base_index), index_name(base_index)):
            if self.fs.exists(self._path(name)):
                self.fs.remove(self._path(name))

    def truncate_prefix(self, before_index: int) -> None:
        """The log now starts at before_index (retention, DeleteRecords, snapshots).

        Offsets keep their values: log_start_offset becomes offset_for_index(before_index).
        Durable on return (start checkpoint, then whole segments below it are deleted).
        """
        self._check_usable()
        assert self.first_index <= before_index <= self.last_index + 1
        if before_index == self.first_index:
            return
        with self._sync_lock:
            prev_term = self.term_at(before_index - 1)
            start_offset = self.offset_for_index(before_index)
            body = _START.pack(before_index, start_offset, prev_term)
            try:
                write_checkpoint(self.fs, self._path(START_CHECKPOINT), body)
            except OSError as error:
                raise LogIOError(f"{self.directory}: checkpoint failed: {error}") from error
            self.first_index = before_index
            self.log_start_offset = start_offset
            self.prev_term = prev_term
            while len(self.segments) > 1 and self.segments[0].last_index < before_index:
                with self._state_lock:
                    segment = self.segments.pop(0)
                segment.close_handle()
                self._open_sealed.pop(segment.base_index, None)
                self._remove_files(segment.base_index)
                with self._state_lock:
                    self._dir_dirty = True

    def reset(self, next_index: int, next_offset: int, term: int) -> None:
        """Empty the log so it continues at next_index / next_offset (snapshot install).

        term is the term of entry next_index - 1 (the snapshot's last term). Call it only
        after the snapshot itself is durable: a crash mid-way leaves an empty log.
        """
        self._check_usable()
        assert next_index >= 1
        assert next_offset >= 0
        with self._sync_lock:
            with self._state_lock:
                old, self.segments = self.segments, []
            for segment in old:
                segment.close_handle()
                self._remove_files(segment.base_index)
            self._open_sealed.clear()
            self.fs.fsync_dir(self.directory)
            body = _START.pack(next_index, next_offset, term)
            write_checkpoint(self.fs, self._path(START_CHECKPOINT), body)
            self.first_index = next_index
            self.log_start_offset = next_offset
            self.prev_term = term
            self._create_segment(next_index, next_offset)
            self._recent = _RecentOffsets(next_index, self.config.recent_entries_max)
            with self._state_lock:
                self._written_index = self._flushed_index = next_index - 1
            self.sync()

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole sealed segments past retention_bytes / retention_ms.

        Returns the number of segments removed. The active segment is never removed.
        """
        self._check_usable()
        retention_bytes = self.config.retention_bytes
        retention_ms = self.config.retention_ms
        total = self.size_bytes
        drop = 0
        for segment in self.segments[:-1]:
            over_size = (
                retention_bytes is not None and total - segment.size_bytes >= retention_bytes
            )
            too_old = retention_ms is not None and now_ms - segment.last_append_ms > retention_ms
            if not (over_size or too_old):
                break
            total -= segment.size_bytes
            drop += 1
        if drop:
            self.truncate_prefix(max(self.first_index, self.segments[drop].base_index))
        return drop

    def close(self) -> None:
        """Sync and close every file. Further calls raise LogClosedError."""
        if self._closed:
            return
        with self._sync_lock:
            try:
                if self._failure is None:
                    self.sync()
            finally:
                self._closed = True
                for segment in self.segments:
                    segment.close_handle()
                self._open_sealed.clear()
