"""Settings of one partition log, validated on construction.

Every limit the log has lives here, with its unit in its name, so the broker can pass
them explicitly from its own configuration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FsyncPolicy(enum.Enum):
    """When the log makes written data durable.

    ALWAYS (the default): `sync()` / the group committer fdatasync the segment files, and
    `flushed_index` only counts entries that reached stable storage. This is what acks=all
    relies on.

    NEVER: for throwaway development data. `sync()` does no fsync and reports everything
    written to the OS as flushed; a power loss or kernel crash may lose acknowledged data.
    """

    ALWAYS = "always"
    NEVER = "never"


# Segment positions are stored as u32 in the sparse index, so a segment must stay below 4 GiB.
SEGMENT_BYTES_LIMIT = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Limits and policies of a PartitionLog.

    retention_bytes / retention_ms of None mean "keep forever". Retention only ever
    deletes whole sealed segments (the active segment is never deleted by retention).
    """

    segment_bytes_max: int = 128 * 1024 * 1024
    segment_age_ms_max: int = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    entry_bytes_max: int = 16 * 1024 * 1024
    fsync_policy: FsyncPolicy = FsyncPolicy.ALWAYS
    open_segments_max: int = 8
    retention_bytes: int | None = None
    retention_ms: int | None = None
    # Exact index -> offset map kept in memory for the newest entries, so the hot path
    # (high watermark = offset of the commit index) never touches the disk.
    recent_entries_max: int = 8192
    # Upper bound of one read's buffer beyond bytes_max (the first entry is always served).
    read_bytes_max: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        assert 0 < self.segment_bytes_max <= SEGMENT_BYTES_LIMIT, self.segment_bytes_max
        assert self.segment_age_ms_max > 0
        assert self.index_interval_bytes > 0
        assert 0 < self.entry_bytes_max < SEGMENT_BYTES_LIMIT
        assert self.open_segments_max >= 1
        assert self.retention_bytes is None or self.retention_bytes >= 0
        assert self.retention_ms is None or self.retention_ms >= 0
        assert self.recent_entries_max >= 1
        assert isinstance(self.fsync_policy, FsyncPolicy)
