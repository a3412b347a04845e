"""One deterministic line per message, entry, hard state and Ready, for logs and golden tests.

The format borrows etcd's DescribeMessage: `1->2 MsgApp Term:1 Log:1/2 Commit:2 Entries:[...]`.
Fields at their zero value are left out, so lines stay short and stable.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft.confchange import decode_changes
from raft.errors import InvalidConfChange
from raft.messages import Message, MessageType
from raft.ready import Ready
from raft.types import Entry, EntryKind, HardState, Snapshot, SoftState

_NAMES = {
    MessageType.HUP: "MsgHup",
    MessageType.BEAT: "MsgBeat",
    MessageType.PROP: "MsgProp",
    MessageType.APP: "MsgApp",
    MessageType.APP_RESP: "MsgAppResp",
    MessageType.VOTE: "MsgVote",
    MessageType.VOTE_RESP: "MsgVoteResp",
    MessageType.SNAP: "MsgSnap",
    MessageType.HEARTBEAT: "MsgHeartbeat",
    MessageType.HEARTBEAT_RESP: "MsgHeartbeatResp",
    MessageType.UNREACHABLE: "MsgUnreachable",
    MessageType.SNAP_STATUS: "MsgSnapStatus",
    MessageType.CHECK_QUORUM: "MsgCheckQuorum",
    MessageType.TRANSFER_LEADER: "MsgTransferLeader",
    MessageType.TIMEOUT_NOW: "MsgTimeoutNow",
    MessageType.READ_INDEX: "MsgReadIndex",
    MessageType.READ_INDEX_RESP: "MsgReadIndexResp",
    MessageType.PRE_VOTE: "MsgPreVote",
    MessageType.PRE_VOTE_RESP: "MsgPreVoteResp",
    MessageType.FORGET_LEADER: "MsgForgetLeader",
}


def _data(data: bytes) -> str:
    if len(data) > 32:
        return repr(data[:32])[1:] + f"...({len(data)}B)"
    return repr(data)[1:]


def describe_entry(e: Entry) -> str:
    if e.kind == EntryKind.NOOP:
        return f"{e.term}/{e.index} NOOP"
    if e.kind == EntryKind.CONF_CHANGE:
        try:
            parts = [f"{c.type.name} {c.node_id}" for c in decode_changes(e.data)]
            body = ",".join(parts)
        except InvalidConfChange:
            body = _data(e.data)
        return f"{e.term}/{e.index} CONF[{body}]"
    return f"{e.term}/{e.index} {_data(e.data)}"


def describe_entries(entries: Sequence[Entry]) -> str:
    return "[" + ", ".join(describe_entry(e) for e in entries) + "]"


def describe_snapshot(s: Snapshot) -> str:
    m = s.meta
    cs = m.conf_state
    text = f"Index:{m.index} Term:{m.term} Voters:{list(cs.voters)}"
    if cs.learners:
        text += f" Learners:{list(cs.learners)}"
    return text


def describe_message(m: Message) -> str:
    parts = [f"{m.frm}->{m.to} {_NAMES[m.type]} Term:{m.term} Log:{m.log_term}/{m.index}"]
    if m.reject:
        parts.append(f"Rejected (Hint: {m.reject_hint})")
    if m.commit:
        parts.append(f"Commit:{m.commit}")
    if m.entries:
        parts.append("Entries:" + describe_entries(m.entries))
    if m.snapshot is not None:
        parts.append("Snapshot:[" + describe_snapshot(m.snapshot) + "]")
    if m.context:
        parts.append(f"Context:{_data(m.context)}")
    return " ".join(parts)


def describe_hard_state(hs: HardState) -> str:
    return f"HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def describe_soft_state(ss: SoftState) -> str:
    return f"Lead:{ss.leader_id} State:{ss.role.name}"


def describe_ready(rd: Ready) -> str:
    """The whole Ready on one line (use describe_ready_lines for a multi-line form)."""
    return " | ".join(describe_ready_lines(rd)) or "<empty Ready>"


def describe_ready_lines(rd: Ready) -> list[str]:
    lines = []
    if rd.soft_state is not None:
        lines.append(describe_soft_state(rd.soft_state))
    if rd.hard_state is not None:
        lines.append(describe_hard_state(rd.hard_state))
    if rd.entries:
        lines.append("Entries:" + describe_entries(rd.entries))
    if rd.snapshot is not None:
        lines.append("Snapshot " + describe_snapshot(rd.snapshot))
    if rd.committed_entries:
        lines.append("CommittedEntries:" + describe_entries(rd.committed_entries))
    for m in rd.messages:
        lines.append("Msg " + describe_message(m))
    for rs in rd.read_states:
        lines.append(f"ReadState Index:{rs.index} Context:{_data(rs.context)}")
    if lines and rd.must_sync:
        lines.append("MustSync")
    return lines
