"""Messages between Raft nodes, and the local pseudo-messages that drive a node.

Timer expiry (`HUP`, `BEAT`, `CHECK_QUORUM`) and driver reports (`UNREACHABLE`, `SNAP_STATUS`)
travel through the same `step()` path as network messages, as in etcd-io/raft, so there is
exactly one place where a node's state changes. Local types must never arrive from a peer:
`from_wire` rejects them, and `RawNode.step` rejects them too.

The wire form is a flat list of msgpack-friendly primitives (ints, bools, bytes, lists) so the
broker's transport can pack it without knowing the core's classes. `from_wire` validates every
field: a peer's garbage raises `MessageDecodeError`, never an AssertionError deep in the core.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raft.errors import MessageDecodeError
from raft.types import ConfState, Entry, EntryKind, Snapshot, SnapshotMeta

WIRE_VERSION = 1
_U64_MAX = (1 << 64) - 1


class MessageType(enum.IntEnum):
    """Message kinds; the numbers are part of the wire format (append only)."""

    HUP = 0
    BEAT = 1
    PROP = 2
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10
    SNAP_STATUS = 11
    CHECK_QUORUM = 12
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18
    FORGET_LEADER = 19


#: Types only the node itself creates; they never cross the network.
LOCAL_TYPES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
        MessageType.FORGET_LEADER,
    }
)

#: Responses: a leader drops those from nodes it does not track.
RESPONSE_TYPES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)

#: Responses that acknowledge durable state; they leave only after the Ready that carries
#: that state has been persisted (thesis §3.8).
AFTER_PERSIST_TYPES = frozenset(
    {MessageType.APP_RESP, MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP}
)


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. Field meanings follow etcd's raftpb.Message.

    `index`/`log_term` name the entry preceding `entries` (APP), the candidate's last entry
    (VOTE), or the acknowledged index (APP_RESP). `reject_hint` and `log_term` on a rejected
    APP_RESP let the leader skip a whole conflicting term at once (fast back-off).
    """

    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: Sequence[Entry] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""

    def to_wire(self) -> list[Any]:
        """Encode as a list of primitives (ints, bools, bytes, lists) for msgpack."""
        snap = self.snapshot
        snap_wire: list[Any] | None = None
        if snap is not None:
            cs = snap.meta.conf_state
            snap_wire = [
                snap.meta.index,
                snap.meta.term,
                list(cs.voters),
                list(cs.learners),
                list(cs.voters_outgoing),
                snap.data,
            ]
        return [
            WIRE_VERSION,
            int(self.type),
            self.to,
            self.frm,
            self.term,
            self.log_term,
            self.index,
            [[e.term, e.index, int(e.kind), e.data] for e in self.entries],
            self.commit,
            self.reject,
            self.reject_hint,
            snap_wire,
            self.context,
        ]

    @staticmethod
    def from_wire(obj: object) -> Message:
        """Decode and validate; raises MessageDecodeError on anything malformed."""
        if not isinstance(obj, (list, tuple)) or len(obj) != 13:
            raise MessageDecodeError("message must be a 13-element list")
        if obj[0] != WIRE_VERSION:
            raise MessageDecodeError(f"unsupported wire version {obj[0]!r}")
        raw_type = _u64(obj[1], "type")
        try:
            mtype = MessageType(raw_type)
        except ValueError:
            raise MessageDecodeError(f"unknown message type {raw_type}") from None
        if mtype in LOCAL_TYPES:
            raise MessageDecodeError(f"local message type {mtype.name} on the wire")
        term = _u64(obj[4], "term")
        index = _u64(obj[6], "index")
        entries = _entries(obj[7], mtype, index, term)
        if not isinstance(obj[9], bool):
            raise MessageDecodeError("reject must be a bool")
        context = obj[12]
        if not isinstance(context, bytes):
            raise MessageDecodeError("context must be bytes")
        return Message(
            type=mtype,
            to=_u64(obj[2], "to"),
            frm=_u64(obj[3], "frm"),
            term=term,
            log_term=_u64(obj[5], "log_term"),
            index=index,
            entries=entries,
            commit=_u64(obj[8], "commit"),
            reject=obj[9],
            reject_hint=_u64(obj[10], "reject_hint"),
            snapshot=_snapshot(obj[11], mtype),
            context=context,
        )


def _u64(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        raise MessageDecodeError(f"{name} must be an unsigned 64-bit int, got {value!r}")
    return value


def _ids(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise MessageDecodeError(f"{name} must be a list")
    ids = tuple(_u64(v, name) for v in value)
    if 0 in ids or len(set(ids)) != len(ids):
        raise MessageDecodeError(f"{name} must hold distinct non-zero ids")
    return ids


def _entries(value: object, mtype: MessageType, index: int, term: int) -> tuple[Entry, ...]:
    if not isinstance(value, (list, tuple)):
        raise MessageDecodeError("entries must be a list")
    out = []
    for raw in value:
        if not isinstance(raw, (list, tuple)) or len(raw) != 4:
            raise MessageDecodeError("entry must be a 4-element list")
        e_term, e_index, e_kind, data = raw
        try:
            kind = EntryKind(_u64(e_kind, "entry kind"))
        except ValueError:
            raise MessageDecodeError(f"unknown entry kind {e_kind!r}") from None
        if not isinstance(data, bytes):
            raise MessageDecodeError("entry data must be bytes")
        out.append(Entry(_u64(e_term, "entry term"), _u64(e_index, "entry index"), kind, data))
    if out and mtype is MessageType.APP:
        # The core assumes an append is a contiguous run right after (index, log_term),
        # with terms that never exceed the sender's term: check it here, not deep inside.
        expect = index + 1
        for e in out:
            if e.index != expect or e.term == 0 or e.term > term:
                raise MessageDecodeError("append entries are not contiguous or have bad terms")
            expect += 1
    elif out and mtype is not MessageType.PROP:
        raise MessageDecodeError(f"{mtype.name} carries no entries")
    return tuple(out)


def _snapshot(value: object, mtype: MessageType) -> Snapshot | None:
    if value is None:
        if mtype is MessageType.SNAP:
            raise MessageDecodeError("SNAP without a snapshot")
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 6:
        raise MessageDecodeError("snapshot must be a 6-element list")
    if not isinstance(value[5], bytes):
        raise MessageDecodeError("snapshot data must be bytes")
    conf = ConfState(
        voters=_ids(value[2], "voters"),
        learners=_ids(value[3], "learners"),
        voters_outgoing=_ids(value[4], "voters_outgoing"),
    )
    meta = SnapshotMeta(_u64(value[0], "snapshot index"), _u64(value[1], "snapshot term"), conf)
    if meta.index == 0 or meta.term == 0:
        raise MessageDecodeError("snapshot index and term must be non-zero")
    return Snapshot(meta, value[5])
