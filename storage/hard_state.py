"""HardStateFile: the Raft term, vote and commit index of one group, stored atomically.

Raft's safety rests on this state surviving crashes (a node must never vote twice in a
term), so every save is durable before it returns: temp file, fsync, rename, fsync dir.
Saving runs on the caller's thread; the broker calls it from its storage executor.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from storage.checkpoint import read_checkpoint, write_checkpoint
from storage.fs import FileSystem, OsFileSystem

_BODY = struct.Struct("<QqQ")  # term, vote (-1 = none), commit
FILE_NAME = "hard_state"


@dataclass(frozen=True, slots=True)
class HardState:
    """Invariant: term >= 0; vote is None or a node id >= 0; commit >= 0."""

    term: int = 0
    vote: int | None = None
    commit: int = 0


class HardStateFile:
    """The hard state of one Raft group, in `directory/hard_state`."""

    def __init__(self, directory: str, fs: FileSystem | None = None) -> None:
        self._fs = fs if fs is not None else OsFileSystem()
        self._fs.make_dirs(directory)
        self.path = os.path.join(directory, FILE_NAME)

    def load(self) -> HardState:
        """The saved state, or the zero state if nothing was ever saved."""
        body = read_checkpoint(self._fs, self.path)
        if body is None:
            return HardState()
        term, vote, commit = _BODY.unpack(body)
        return HardState(term, None if vote < 0 else vote, commit)

    def save(self, state: HardState) -> None:
        assert state.term >= 0
        assert state.commit >= 0
        assert state.vote is None or state.vote >= 0
        vote = -1 if state.vote is None else state.vote
        write_checkpoint(self._fs, self.path, _BODY.pack(state.term, vote, state.commit))
