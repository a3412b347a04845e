"""Single-server membership changes (§4.1), validated without touching live state.

A change is proposed as a CONF_CHANGE entry whose data is `ConfChange.encode()`, takes effect
when the driver applies it (`RawNode.apply_conf_change`), and the leader allows only one
unapplied change at a time. New members join as learners, catch up, then are promoted.

The encoding carries a list of single changes so joint consensus (§4.3, several changes at
once) can later reuse it; `apply_changes` refuses more than one voter change per step today.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from raft.errors import InvalidConfChange
from raft.types import ConfState


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change. `context` is opaque to the core (e.g. the new node's address)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return encode_changes((self,))

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        changes = decode_changes(data)
        if len(changes) != 1:
            raise InvalidConfChange(f"expected one change, got {len(changes)}")
        return changes[0]


_VERSION = 1
_HEAD = struct.Struct(">BH")
_ITEM = struct.Struct(">BQI")


def encode_changes(changes: tuple[ConfChange, ...]) -> bytes:
    out = bytearray(_HEAD.pack(_VERSION, len(changes)))
    for c in changes:
        out += _ITEM.pack(int(c.type), c.node_id, len(c.context))
        out += c.context
    return bytes(out)


def decode_changes(data: bytes) -> tuple[ConfChange, ...]:
    try:
        version, count = _HEAD.unpack_from(data, 0)
        if version != _VERSION:
            raise InvalidConfChange(f"unknown conf change version {version}")
        pos = _HEAD.size
        out = []
        for _ in range(count):
            kind, node_id, ctx_len = _ITEM.unpack_from(data, pos)
            pos += _ITEM.size
            ctx = bytes(data[pos : pos + ctx_len])
            if len(ctx) != ctx_len:
                raise InvalidConfChange("truncated conf change context")
            pos += ctx_len
            out.append(ConfChange(ConfChangeType(kind), node_id, ctx))
        if pos != len(data):
            raise InvalidConfChange("trailing bytes after conf change")
        return tuple(out)
    except (struct.error, ValueError) as exc:
        raise InvalidConfChange(f"malformed conf change: {exc}") from None


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The membership after `change`; raises InvalidConfChange if it would be unsafe."""
    if conf.voters_outgoing:
        raise InvalidConfChange("joint consensus is not supported yet")
    if change.node_id <= 0:
        raise InvalidConfChange("node id must be >= 1")
    voters = [v for v in conf.voters if v != change.node_id]
    learners = [v for v in conf.learners if v != change.node_id]
    if change.type == ConfChangeType.ADD_VOTER:
        voters.append(change.node_id)
    elif change.type == ConfChangeType.ADD_LEARNER:
        learners.append(change.node_id)
    if not voters:
        raise InvalidConfChange("the change would remove the last voter")
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
