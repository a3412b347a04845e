"""Raftka's storage engine: segmented, write-ahead-logged partition logs.

Public API (see each module's docstring for its theory of operation):

- `PartitionLog` (storage.log): the Raft log and WAL of one group; `open()` recovers.
- `GroupCommitter` (storage.group_commit): batched fsync off the event loop thread.
- `LogConfig`, `FsyncPolicy` (storage.config); `LogEntry`, `EntryKind` (storage.frame).
- `HardStateFile`, `HardState` (storage.hard_state); atomic small files (storage.checkpoint).
- `OsFileSystem`, `MemoryFileSystem` (storage.fs): the file-system seam.
- Typed errors (storage.errors).
"""

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
    StorageError,
)
from storage.frame import EntryKind, LogEntry
from storage.fs import FileSystem, MemoryFileSystem, OsFileSystem
from storage.group_commit import GroupCommitter
from storage.hard_state import HardState, HardStateFile
from storage.log import AppendResult, PartitionLog, ReadResult, RecoveryReport

SegmentedLog = PartitionLog

__all__ = [
    "AppendResult",
    "CorruptLogError",
    "EntryKind",
    "EntryTooLargeError",
    "FileSystem",
    "FsyncPolicy",
    "GroupCommitter",
    "HardState",
    "HardStateFile",
    "IndexOutOfRangeError",
    "LogClosedError",
    "LogConfig",
    "LogEntry",
    "LogFailedError",
    "LogFullError",
    "LogIOError",
    "MemoryFileSystem",
    "OffsetOutOfRangeError",
    "OsFileSystem",
    "PartitionLog",
    "ReadResult",
    "RecoveryReport",
    "SegmentedLog",
    "StorageError",
]
