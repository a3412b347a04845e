"""The Raft core's view of a group's durable state, over the segmented log.

The core reads its log through `raft.storage.LogStorage` and never writes it; the driver
persists what a Ready hands out. This adapter is the one place that translates between
the two vocabularies: a raft `Entry(term, index, kind, data)` is a storage
`LogEntry(index, term, kind, record_count, payload)`. For a Kafka partition the payload
of a DATA entry is the producer's record batch and `record_count` is the number of
offsets it spans (lastOffsetDelta + 1), which is how the log keeps Kafka offsets dense
while no-op and config entries take raft indexes but no offsets.

It lives in broker/ because storage/ must not know raft's types and raft/ must do no I/O.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence

import msgpack

from raft.errors import Compacted, Unavailable
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from storage.frame import EntryKind as StorageKind
from storage.frame import LogEntry
from storage.hard_state import FILE_NAME as LEGACY_HARD_STATE_FILE
from storage.hard_state import HardStateFile
from storage.hard_state_log import GroupHardState, HardStateLog
from storage.log import PartitionLog

_LAST_OFFSET_DELTA = struct.Struct(">i")
_BATCH_HEADER_BYTES = 61


def kafka_record_count(data: bytes | memoryview) -> int:
    """Offsets spanned by a record batch: lastOffsetDelta + 1 (0 for anything shorter)."""
    if len(data) < _BATCH_HEADER_BYTES:
        return 0
    return int(_LAST_OFFSET_DELTA.unpack_from(data, 23)[0]) + 1


def no_records(data: bytes | memoryview) -> int:
    """For logs that are not Kafka partitions (the metadata group): no Kafka offsets."""
    return 0


#: Bytes of recently appended entries a group keeps in memory (see `EntryCache`).
ENTRY_CACHE_BYTES_MAX = 8 << 20


class EntryCache:
    """The newest appended entries, kept in memory until applied and replicated.

    Right after an append the core asks for the same entries again: to apply them once
    committed, and (on a leader) to send them to followers that were not sent them at
    once. Without this cache each of those reads a whole batch back from the page cache,
    decodes its frame and copies its payload: ~15% of a replicating node's CPU. Entries
    are the objects the core appended (no copy); the cache is contiguous, trimmed from the
    front by `release` and by its byte bound, and cut where a conflicting append or a
    snapshot replaces the log's tail. A miss falls back to the log.
    """

    __slots__ = ("_bytes", "_bytes_max", "_entries", "_start")

    def __init__(self, bytes_max: int) -> None:
        self._entries: list[Entry] = []
        self._start = 0  # position in _entries of the oldest live entry
        self._bytes = 0
        self._bytes_max = bytes_max

    def clear(self) -> None:
        self._entries, self._start, self._bytes = [], 0, 0

    def _first(self) -> int:
        return self._entries[self._start].index if self._start < len(self._entries) else 0

    def append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        live = len(self._entries) - self._start
        if live and not self._first() < first <= self._entries[-1].index + 1:
            self.clear()  # not contiguous with what we hold (or replaces all of it)
        elif live and first <= self._entries[-1].index:
            cut = self._start + (first - self._first())
            self._bytes -= sum(len(e.data) for e in self._entries[cut:])
            del self._entries[cut:]
        self._entries.extend(entries)
        self._bytes += sum(len(e.data) for e in entries)
        while self._bytes > self._bytes_max and len(self._entries) - self._start > 1:
            self._drop_oldest()
        self._compact()

    def release(self, index: int) -> None:
        while self._start < len(self._entries) and self._entries[self._start].index <= index:
            self._drop_oldest()
        self._compact()

    def _drop_oldest(self) -> None:
        self._bytes -= len(self._entries[self._start].data)
        self._start += 1

    def _compact(self) -> None:
        if self._start == len(self._entries):
            self.clear()
        elif self._start > 64 and self._start * 2 > len(self._entries):
            del self._entries[: self._start]
            self._start = 0

    def slice(self, lo: int, hi: int, bytes_max: int) -> list[Entry] | None:
        """Entries [lo, hi) within bytes_max (at least one), or None on a miss."""
        first = self._first()
        if not first or lo < first or hi - 1 > self._entries[-1].index:
            return None
        at = self._start + (lo - first)
        out = [self._entries[at]]
        size = len(out[0].data)
        for e in self._entries[at + 1 : self._start + (hi - first)]:
            size += len(e.data)
            if size > bytes_max:
                break
            out.append(e)
        return out


class RaftLogStorage:
    """`raft.storage.LogStorage` over a `PartitionLog` and the node's `HardStateLog`.

    Invariant: storage holds exactly the entries the driver has persisted; the core's
    unstable tail lives in the core until `advance`.
    """

    def __init__(
        self,
        log: PartitionLog,
        hard_states: HardStateLog,
        group_id: int,
        conf_state: ConfState,
        record_count: Callable[[bytes | memoryview], int] = kafka_record_count,
        snapshot_data: Callable[[], bytes] = lambda: b"",
    ) -> None:
        self.log = log
        self.hard_states = hard_states
        self.group_id = group_id
        self.conf_state = conf_state
        self.record_count = record_count
        self.snapshot_data = snapshot_data
        self._cache = EntryCache(ENTRY_CACHE_BYTES_MAX)
        stored = hard_states.get(group_id)
        if stored is not None:
            self.hard_state = HardState(stored.term, stored.vote, stored.commit)
        elif os.path.exists(os.path.join(log.directory, LEGACY_HARD_STATE_FILE)):
            legacy = HardStateFile(log.directory).load()  # data written before the node log
            self.hard_state = HardState(legacy.term, legacy.vote or 0, legacy.commit)
        else:
            self.hard_state = HardState()
        self._saved_commit = self.hard_state.commit

    # -- read side ------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = self.hard_state
        # A commit index beyond the log (e.g. the log lost an unsynced tail) must not be trusted.
        commit = min(hs.commit, self.log.last_index)
        return HardState(hs.term, hs.vote, commit), self.conf_state

    def first_index(self) -> int:
        return self.log.first_index

    def last_index(self) -> int:
        return self.log.last_index

    def term(self, index: int) -> int:
        log = self.log
        if index < log.first_index - 1:
            raise Compacted(f"index {index} is before the log start {log.first_index}")
        if index > log.last_index:
            raise Unavailable(f"index {index} is past the last index {log.last_index}")
        return log.term_at(index)

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        log = self.log
        if lo < log.first_index:
            raise Compacted(f"index {lo} is before the log start {log.first_index}")
        if hi > log.last_index + 1:
            raise Unavailable(f"entries up to {hi} requested, last index {log.last_index}")
        cached = self._cache.slice(lo, hi, bytes_max)
        if cached is not None:
            return cached
        return [
            Entry(e.term, e.index, EntryKind(e.kind), bytes(e.payload))
            for e in log.read_entries(lo, hi, bytes_max)
        ]

    def release_cache(self, index: int) -> None:
        """Entries up to `index` will not be asked for again soon (applied, and every
        follower has them): drop them from the entry cache."""
        self._cache.release(index)

    def snapshot(self) -> Snapshot:
        """The log's start as a snapshot: where it begins, in index, term and Kafka offset."""
        log = self.log
        index = log.first_index - 1
        meta = SnapshotMeta(index, log.prev_term if index > 0 else 0, self.conf_state)
        data = msgpack.packb(
            {"next_offset": log.log_start_offset, "state": self.snapshot_data()}, use_bin_type=True
        )
        return Snapshot(meta, data)

    # -- write side (called by the driver, on its storage thread) -------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Persist entries, first dropping any persisted suffix they replace (Raft conflict)."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.log.last_index:
            self.log.truncate_suffix(first - 1)
        count = self.record_count
        self.log.append(
            [
                LogEntry(
                    e.index,
                    e.term,
                    StorageKind(int(e.kind)),
                    count(e.data) if e.kind == EntryKind.DATA else 0,
                    e.data,
                )
                for e in entries
            ]
        )
        self._cache.append(entries)

    def stage_hard_state(self, hard_state: HardState) -> bool:
        """Remember the new hard state; True when its file must be rewritten.

        Term and vote must be durable before any vote leaves; the commit index alone
        may lag on disk safely (it is re-learned from the leader), so it does not
        cost an fsync of its own.
        """
        old = self.hard_state
        self.hard_state = hard_state
        if hard_state.term == old.term and hard_state.vote == old.vote:
            return False
        self._saved_commit = hard_state.commit
        self.hard_states.stage(
            self.group_id, GroupHardState(hard_state.term, hard_state.vote, hard_state.commit)
        )
        return True

    def stage_commit(self, durable_index: int) -> bool:
        """Stage the commit index, up to `durable_index`, if it moved since last saved.

        The commit index only rides along with term and vote changes otherwise, so after
        a crash a replica would re-apply (read back) its whole log from a stale commit.
        The driver calls this about once a second and syncs the node's hard-state log.
        """
        hs = self.hard_state
        commit = min(hs.commit, durable_index)
        if commit <= self._saved_commit:
            return False
        self.hard_states.stage(self.group_id, GroupHardState(hs.term, hs.vote, commit))
        self._saved_commit = commit
        return True

    def install_snapshot(self, snapshot: Snapshot) -> bytes:
        """Replace the whole log by the snapshot's start point; returns its state bytes."""
        body = msgpack.unpackb(snapshot.data, raw=False) if snapshot.data else {}
        next_offset = int(body.get("next_offset", 0))
        self.log.reset(snapshot.meta.index + 1, next_offset, snapshot.meta.term)
        self._cache.clear()
        self.conf_state = snapshot.meta.conf_state
        state = body.get("state", b"")
        return bytes(state) if state else b""

    def sync(self) -> int:
        return self.log.sync()
