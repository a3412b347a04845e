"""The core's read-only view of durable state, and an in-memory implementation for tests.

The core never writes storage: the driver persists what a Ready hands out, then calls
`advance()`. Reads must reflect everything persisted so far. `storage/raft_adapter.py` will
implement these protocols over the segmented log; `MemoryStorage` serves tests and sims.

Index conventions (etcd's): the log holds entries `first_index() .. last_index()`; the entry
just before `first_index()` is covered by the latest snapshot, and its term stays readable
through `term(first_index() - 1)` so appends right after the snapshot can be checked.
"""

from __future__ import annotations

from typing import Protocol

from raft.errors import Compacted, SnapshotTemporarilyUnavailable, Unavailable
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class HardStateStorage(Protocol):
    """Where the node's term, vote, commit index and membership survive restarts."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...


class LogStorage(HardStateStorage, Protocol):
    """Read side of the durable log."""

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """Term of entry `index`; raises Compacted below first_index()-1, Unavailable past
        last_index()."""
        ...

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        """Entries [lo, hi), stopping before `bytes_max` payload bytes (but at least one)."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot; may raise SnapshotTemporarilyUnavailable."""
        ...


def limit_bytes(entries: list[Entry], bytes_max: int) -> list[Entry]:
    """Keep a prefix of `entries` whose payload fits `bytes_max`; always keep the first one."""
    total = 0
    for i, e in enumerate(entries):
        total += len(e.data)
        if total > bytes_max and i > 0:
            return entries[:i]
    return entries


class MemoryStorage:
    """LogStorage in memory, with the write helpers a driver would implement on disk.

    Invariant: `_ents[0]` is a dummy entry whose index/term are those of the snapshot.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        #: Membership as of the last applied conf change (the driver persists it on apply).
        self._conf_state = conf_state or ConfState()
        self._ents: list[Entry] = [Entry(0, 0)]

    @staticmethod
    def bootstrap(conf_state: ConfState, index: int = 1, term: int = 1) -> MemoryStorage:
        """A new cluster member's storage: a snapshot at (index, term) holding the initial
        membership. Nodes added later then catch up by snapshot, so they learn the membership
        they are joining even though no log entry ever recorded it."""
        st = MemoryStorage(conf_state)
        st.apply_snapshot(Snapshot(SnapshotMeta(index, term, conf_state), b""))
        st.set_hard_state(HardState(term, 0, index))
        return st

    # -- read side (LogStorage) -------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise Compacted(f"index {index} is compacted (snapshot at {offset})")
        if index - offset >= len(self._ents):
            raise Unavailable(f"index {index} is past the last index {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise Compacted(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries up to {hi} requested, last index {self.last_index()}")
        return limit_bytes(self._ents[lo - offset : hi - offset], bytes_max)

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:  # pragma: no cover - kept for subclasses that fail
            raise SnapshotTemporarilyUnavailable("no snapshot")
        return self._snapshot

    # -- write side (the driver's job) ------------------------------------------------------
    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def set_conf_state(self, conf_state: ConfState) -> None:
        self._conf_state = conf_state

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Persist entries, truncating any persisted suffix from the first new index."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all already covered by the snapshot
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        assert offset <= len(self._ents), (
            f"gap: appending {entries[0].index} after {self.last_index()}"
        )
        del self._ents[offset:]
        self._ents.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        if snapshot.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snapshot
        self._conf_state = snapshot.meta.conf_state
        self._ents = [Entry(snapshot.meta.term, snapshot.meta.index)]
        if self._hard_state.commit < snapshot.meta.index:
            hs = self._hard_state
            self._hard_state = HardState(hs.term, hs.vote, snapshot.meta.index)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a state-machine image at an applied index (the app calls this, then compact)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        assert index <= self.last_index(), f"snapshot {index} past last index {self.last_index()}"
        meta = SnapshotMeta(index, self.term(index), conf_state)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index` (keeps its term in the dummy entry)."""
        offset = self._ents[0].index
        if index <= offset:
            return
        assert index <= self.last_index(), f"compact {index} past last index {self.last_index()}"
        i = index - offset
        self._ents = [Entry(self._ents[i].term, index), *self._ents[i + 1 :]]
