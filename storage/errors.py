"""Typed operating errors of the storage engine.

Programmer errors (a caller breaking a contract, such as non-contiguous raft indexes)
are AssertionError and crash. Everything here is an operating error the broker handles:
a full disk, a corrupt file, an offset outside the log.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage operating error."""


class CorruptLogError(StorageError):
    """A log file holds bytes that fail verification somewhere other than a torn tail.

    The log that raised it stops serving: corruption in the middle is never skipped.
    """

    def __init__(self, path: str, position: int, reason: str) -> None:
        super().__init__(f"corrupt log {path} at byte {position}: {reason}")
        self.path = path
        self.position = position
        self.reason = reason


class LogFullError(StorageError):
    """The disk refused a write (ENOSPC). Nothing of the refused append is kept."""


class LogIOError(StorageError):
    """The disk failed (EIO, or a failed fsync): the log stops serving until reopened.

    After a failed fsync the kernel may have dropped dirty pages, so retrying it could
    report success for lost data; the only safe recovery is to reopen and re-scan.
    """


class LogFailedError(StorageError):
    """The log stopped serving after an earlier corruption or I/O failure."""


class LogClosedError(StorageError):
    """The log was closed."""


class EntryTooLargeError(StorageError):
    """An entry's payload is larger than LogConfig.entry_bytes_max."""


class OffsetOutOfRangeError(StorageError):
    """A Kafka offset lies outside [log_start_offset, log_end_offset]."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(f"offset {offset} outside [{log_start_offset}, {log_end_offset}]")
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class IndexOutOfRangeError(StorageError):
    """A raft index lies outside the entries the log holds (it was truncated away)."""

    def __init__(self, index: int, first_index: int, last_index: int) -> None:
        super().__init__(f"raft index {index} outside [{first_index}, {last_index}]")
        self.index = index
        self.first_index = first_index
        self.last_index = last_index
