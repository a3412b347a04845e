"""Plain data the Raft core reads and writes: entries, hard and soft state, membership, snapshots.

Everything here is an immutable value. The core never mutates an `Entry` once built, so the
driver may hand the same objects to storage and to the state machine without copying.
The numeric values of `EntryKind` are shared with the storage layer's frame format
(data / no-op / config), so they must never be renumbered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Node id 0 means "nobody" (no vote, no known leader); real node ids are >= 1.
NONE = 0


class EntryKind(enum.IntEnum):
    """What an entry's payload means; the numbers are part of the on-disk format."""

    DATA = 0
    NOOP = 1
    CONF_CHANGE = 2


class Role(enum.IntEnum):
    """The role a node plays in its current term."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. Invariant: `index >= 1` and `term >= 1` for every entry in a log."""

    term: int
    index: int
    kind: EntryKind = EntryKind.DATA
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before any message depending on it leaves the node (§3.8)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to observe (who leads, what we are); never persisted."""

    leader_id: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ConfState:
    """Cluster membership. `voters_outgoing` is non-empty only during joint consensus (§4.3),
    which this core does not start yet; the field keeps the format ready for it."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot ends: the log index and term it covers and the membership at that index."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image up to `meta.index`. For a partition, `data` says where the log
    starts (plus producer state and the like); the core treats it as opaque bytes."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: reads tagged `context` are linearizable once `index` is applied."""

    index: int
    context: bytes


EMPTY_SNAPSHOT = Snapshot()
EMPTY_HARD_STATE = HardState()
