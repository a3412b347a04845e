"""Raftka's Raft core: a pure, deterministic consensus state machine (no I/O, no clocks).

Public surface: `RawNode` (drive it), `Config`, `Ready` (what to persist, send, apply),
`Message`/`MessageType` (the wire), the value types, the errors, and `MemoryStorage` for tests.
"""

from raft.confchange import ConfChange, ConfChangeType
from raft.config import Config
from raft.errors import (
    Compacted,
    InvalidConfChange,
    MessageDecodeError,
    PeerNotFound,
    ProposalDropped,
    RaftError,
    StepLocalMessage,
    Unavailable,
)
from raft.messages import Message, MessageType
from raft.raw_node import RawNode, Status
from raft.ready import Ready
from raft.storage import HardStateStorage, LogStorage, MemoryStorage
from raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "Compacted",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "HardStateStorage",
    "InvalidConfChange",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageDecodeError",
    "MessageType",
    "PeerNotFound",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "StepLocalMessage",
    "Unavailable",
]
