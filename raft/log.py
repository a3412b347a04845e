"""RaftLog: the durable log (read through LogStorage) fused with the unstable tail.

New entries live in the *unstable* part until the driver persists them and calls
`advance()`. An entry can be handed out in a Ready (`in_progress`) and still be unstable;
`stable_to` moves it to storage's side only if it was not overwritten meanwhile.

Invariants:
  applied <= applying <= committed <= last_index()
  unstable_offset <= in_progress <= last_index() + 1
  unstable entries are contiguous, starting at unstable_offset
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.errors import Compacted, Unavailable
from raft.storage import LogStorage, limit_bytes
from raft.types import Entry, Snapshot


class RaftLog:
    """Log view used by the core; see the module docstring for the invariants."""

    __slots__ = (
        "applied",
        "apply_bytes_max",
        "applying",
        "committed",
        "in_progress",
        "snapshot_in_progress",
        "storage",
        "unstable",
        "unstable_offset",
        "unstable_snapshot",
    )

    def __init__(self, storage: LogStorage, apply_bytes_max: int) -> None:
        self.storage = storage
        #: Entries not yet known to be durable, the first at index unstable_offset.
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        #: First unstable index not yet handed out in a Ready.
        self.in_progress = self.unstable_offset
        #: A snapshot received from the leader and not yet persisted by the driver.
        self.unstable_snapshot: Snapshot | None = None
        self.snapshot_in_progress = False
        first = storage.first_index()
        #: Highest index known to be committed (replicated on a quorum).
        self.committed = first - 1
        #: Highest index handed to the state machine in a Ready.
        self.applying = first - 1
        #: Highest index the state machine reported applied (via advance()).
        self.applied = first - 1
        self.apply_bytes_max = apply_bytes_max

    # -- indices and terms -------------------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable_offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term of `index`; 0 past the last index; raises Compacted before the snapshot."""
        off = self.unstable_offset
        if index >= off and self.unstable:
            i = index - off
            return self.unstable[i].term if i < len(self.unstable) else 0
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            if index < snap.meta.index:
                raise Compacted(f"index {index} is behind the snapshot at {snap.meta.index}")
            return 0
        if index > self.storage.last_index():
            return 0
        try:
            return self.storage.term(index)
        except Unavailable:
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except Compacted:
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: is a candidate's log at least as up-to-date as ours?"""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- appending -----------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> int:
        """Append entries (truncating any conflicting suffix); returns the new last index."""
        if not entries:
            return self.last_index()
        after = entries[0].index
        assert after > self.committed, f"append at {after} would overwrite commit {self.committed}"
        off = self.unstable_offset
        if after == off + len(self.unstable):
            self.unstable.extend(entries)
        elif after <= off:
            # Replaces entries that are (or are being) persisted; the driver truncates storage
            # from the first index of the next Ready's entries.
            self.unstable_offset = after
            self.unstable = list(entries)
            self.in_progress = after
        else:
            del self.unstable[after - off :]
            self.unstable.extend(entries)
            if self.in_progress > after:
                self.in_progress = after
        return self.last_index()

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or disagrees with our log, or 0 if none."""
        last = self.last_index()
        for e in entries:
            if e.index > last:
                return e.index
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Figure 2 AppendEntries receiver rules 2-5; returns the last new index or None."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            assert conflict > self.committed, f"conflict at {conflict} <= commit {self.committed}"
            self.append(list(entries[conflict - index - 1 :]))
        self.commit_to(min(commit, last_new))
        return last_new

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, term(i)) with i <= index and term(i) <= term: the fast back-off hint."""
        while index > 0:
            try:
                t = self.term(index)
            except Compacted:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- commit and apply ------------------------------------------------------------------------
    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} past last {self.last_index()}"
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit `index` only if it carries `term` (the leader's term): figure 8's rule."""
        if index > self.committed and self.term(index) == term:
            self.committed = index
            return True
        return False

    def has_next_committed(self) -> bool:
        return self.applying < self.committed and self.unstable_snapshot is None

    def next_committed(self) -> list[Entry]:
        lo = max(self.applying + 1, self.first_index())
        if lo > self.committed or self.unstable_snapshot is not None:
            return []
        return self.slice(lo, self.committed + 1, self.apply_bytes_max)

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            assert index <= self.committed, f"applied {index} past commit {self.committed}"
            self.applied = index
        if self.applying < index:
            self.applying = index

    # -- reading entries ---------------------------------------------------------------------------
    def slice(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        """Entries [lo, hi) limited to bytes_max (at least one); raises Compacted."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise Compacted(f"index {lo} is behind the first index {first}")
        off = self.unstable_offset
        if lo >= off:
            return limit_bytes(self.unstable[lo - off : hi - off], bytes_max)
        stored = self.storage.entries(lo, min(hi, off), bytes_max)
        if hi <= off or len(stored) < min(hi, off) - lo:
            return stored
        size = sum(len(e.data) for e in stored)
        if size >= bytes_max:
            return stored
        rest = limit_bytes(self.unstable[: hi - off], bytes_max - size)
        if rest and size + len(rest[0].data) > bytes_max:
            return stored
        return stored + rest

    def entries_from(self, lo: int, bytes_max: int) -> list[Entry]:
        last = self.last_index()
        if lo > last:
            return []
        return self.slice(lo, last + 1, bytes_max)

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    # -- unstable bookkeeping ----------------------------------------------------------------------
    def next_unstable(self) -> list[Entry]:
        i = self.in_progress - self.unstable_offset
        if i >= len(self.unstable):
            return []
        return self.unstable[i:]

    def has_next_unstable(self) -> bool:
        return self.in_progress - self.unstable_offset < len(self.unstable)

    def accept_unstable(self, entries: list[Entry]) -> None:
        if entries:
            self.in_progress = entries[-1].index + 1

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to index (with that term) are durable: drop them from the unstable part."""
        i = index - self.unstable_offset
        if i < 0 or i >= len(self.unstable) or self.unstable[i].term != term:
            return  # overwritten since it was handed out; the newer entries come in a new Ready
        del self.unstable[: i + 1]
        self.unstable_offset = index + 1
        if self.in_progress < self.unstable_offset:
            self.in_progress = self.unstable_offset

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log by a snapshot from the leader (it becomes unstable until persisted)."""
        self.committed = snapshot.meta.index
        self.unstable = []
        self.unstable_offset = snapshot.meta.index + 1
        self.in_progress = self.unstable_offset
        self.unstable_snapshot = snapshot
        self.snapshot_in_progress = False

    def stable_snapshot_to(self, index: int) -> None:
        snap = self.unstable_snapshot
        if snap is not None and snap.meta.index == index:
            self.unstable_snapshot = None
            self.snapshot_in_progress = False
        if index > self.applied:
            self.applied = index
        if index > self.applying:
            self.applying = index
