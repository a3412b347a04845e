"""Helpers shared by the storage tests: build entries and logs on a MemoryFileSystem."""

from __future__ import annotations

from storage import EntryKind, LogConfig, LogEntry, MemoryFileSystem, PartitionLog

DIRECTORY = "/data/p0"


def payload_for(index: int, size: int = 70) -> bytes:
    return bytes((index * 31 + i) % 256 for i in range(size))


def data_entries(first: int, count: int, term: int = 1, size: int = 70) -> list[LogEntry]:
    return [
        LogEntry(index, term, EntryKind.DATA, 2, payload_for(index, size))
        for index in range(first, first + count)
    ]


def open_log(fs: MemoryFileSystem, **config: int) -> PartitionLog:
    settings = {"segment_bytes_max": 1024, "index_interval_bytes": 128, **config}
    return PartitionLog.open(DIRECTORY, LogConfig(**settings), fs=fs, clock_ms=lambda: 0)


def segment_paths(fs: MemoryFileSystem) -> list[str]:
    return [f"{DIRECTORY}/{n}" for n in fs.list_dir(DIRECTORY) if n.endswith(".log")]
