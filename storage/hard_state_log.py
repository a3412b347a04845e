"""One hard-state log for every Raft group of a node: one fsync per batch, not four per group.

Raft needs a group's term and vote on disk before any vote or append ack leaves the
node. Writing one atomic file per group (temp file, fsync, rename, fsync directory)
costs four syncs per group, and when hundreds of partition groups elect at once (topic
creation, failover of a node that led a third of them) those syncs queue up past the
election timeout and the elections never settle. So every group's hard state goes
into one append-only file of small CRC-framed records; a batch of changes, however
many groups it covers, is one write and one fsync.

Format: records of `crc32c(u32) group(i64) term(i64) vote(i64) commit(i64)`, little
endian. The last record of a group wins; a record with term -1 forgets the group (its
topic was deleted). A torn or corrupt tail (a crash mid-append) ends the log on load:
it was never fsynced, so nothing depending on it was ever sent. When the file holds many
more records than groups, it is rewritten with one record per group through an atomic
checkpoint, so it stays small.

Invariant: after `sync()` returns, `load()` in a new process returns every staged state.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass

from crc32c import crc32c

from storage.checkpoint import read_checkpoint, write_checkpoint
from storage.fs import FileSystem, OsFileSystem

_RECORD = struct.Struct("<qqqq")
_CRC = struct.Struct("<I")
RECORD_BYTES = _CRC.size + _RECORD.size
LOG_NAME = "hard_state.log"
SNAPSHOT_NAME = "hard_state.snapshot"
#: Rewrite the log once it holds this many times more records than live groups.
COMPACT_RATIO = 8
COMPACT_RECORDS_MIN = 4096
_FORGET = -1


@dataclass(frozen=True, slots=True)
class GroupHardState:
    term: int
    vote: int
    commit: int


class HardStateLog:
    """Hard states of all groups of a node. `stage` from any thread; `sync` from one."""

    def __init__(self, directory: str, fs: FileSystem | None = None) -> None:
        self._fs = fs if fs is not None else OsFileSystem()
        self._fs.make_dirs(directory)
        self.directory = directory
        self.log_path = os.path.join(directory, LOG_NAME)
        self.snapshot_path = os.path.join(directory, SNAPSHOT_NAME)
        self._states: dict[int, GroupHardState] = {}
        self._staged: dict[int, GroupHardState | None] = {}
        self._lock = threading.Lock()
        self._records = 0
        self._load()
        existed = self._fs.exists(self.log_path)
        self._file = self._fs.open(self.log_path, create=True)
        if not existed:
            self._fs.fsync_dir(directory)  # the new file's name must survive a crash too
        self._size = self._file.size()

    # -- reading --------------------------------------------------------------------------
    def _load(self) -> None:
        snapshot = read_checkpoint(self._fs, self.snapshot_path)
        if snapshot is not None:
            self._apply_records(snapshot)
        if self._fs.exists(self.log_path):
            f = self._fs.open(self.log_path, create=False)
            try:
                data = f.pread(0, f.size())
                valid = self._apply_records(data)
                if valid < len(data):
                    # A torn tail: drop it so later appends follow the last good record.
                    f.truncate(valid)
                    f.fsync()
            finally:
                f.close()

    def _apply_records(self, data: bytes) -> int:
        """Fold records into the state; returns the length of the valid prefix."""
        at = 0
        while at + RECORD_BYTES <= len(data):
            (crc,) = _CRC.unpack_from(data, at)
            body = data[at + _CRC.size : at + RECORD_BYTES]
            if crc32c(body) != crc:
                break
            group, term, vote, commit = _RECORD.unpack(body)
            if term == _FORGET:
                self._states.pop(group, None)
            else:
                self._states[group] = GroupHardState(term, vote, commit)
            self._records += 1
            at += RECORD_BYTES
        return at

    def get(self, group_id: int) -> GroupHardState | None:
        with self._lock:
            staged = self._staged.get(group_id, self._states.get(group_id))
            return staged

    # -- writing --------------------------------------------------------------------------
    def stage(self, group_id: int, state: GroupHardState | None) -> None:
        """Remember a change (None forgets the group); durable after the next `sync`."""
        with self._lock:
            self._staged[group_id] = state

    def sync(self) -> int:
        """Append every staged change as one write and fsync it; returns records written."""
        with self._lock:
            staged, self._staged = self._staged, {}
        if not staged:
            return 0
        out = bytearray()
        for group, state in staged.items():
            body = (
                _RECORD.pack(group, _FORGET, 0, 0)
                if state is None
                else _RECORD.pack(group, state.term, state.vote, state.commit)
            )
            out += _CRC.pack(crc32c(body)) + body
        self._file.pwrite(self._size, bytes(out))
        self._file.fsync()
        self._size += len(out)
        with self._lock:
            for group, state in staged.items():
                if state is None:
                    self._states.pop(group, None)
                else:
                    self._states[group] = state
            self._records += len(staged)
            live = len(self._states)
        if self._records > max(COMPACT_RECORDS_MIN, COMPACT_RATIO * live):
            self._compact()
        return len(staged)

    def _compact(self) -> None:
        """Write one record per live group as an atomic snapshot, then empty the log."""
        with self._lock:
            states = dict(self._states)
        body = bytearray()
        for group, state in states.items():
            record = _RECORD.pack(group, state.term, state.vote, state.commit)
            body += _CRC.pack(crc32c(record)) + record
        write_checkpoint(self._fs, self.snapshot_path, bytes(body))
        # The snapshot holds everything the log did: the log can restart empty.
        self._file.truncate(0)
        self._file.fsync()
        self._size = 0
        self._records = len(states)

    def close(self) -> None:
        self._file.close()
