"""Ready: everything a node needs its driver to do, handed out in one batch.

The contract (etcd-io/raft's, thesis §3.8). For each Ready, in this order:

1. **Persist.** Write `snapshot` (if any), then `entries`, truncating any persisted entries at
   or after `entries[0].index` first, then `hard_state` (if not None). If `must_sync`, fsync
   before going on. (`must_sync` is False when only the commit index moved: losing that write
   in a crash is harmless, the commit index is re-learned from the leader.)
2. **Send** `messages`. Some of them (vote grants, append acks) promise that the state above is
   durable; that is why they are only handed out here, after the state they depend on.
3. **Apply** `snapshot` and then `committed_entries` to the state machine, in order. For a
   CONF_CHANGE entry call `RawNode.apply_conf_change(ConfChange.decode(entry.data))` and persist
   the ConfState it returns together with the applied index. Serve `read_states` once the
   applied index reaches their index.
4. Call `RawNode.advance(ready)`. Only then ask for the next Ready. Do not call `step`, `tick`
   or `propose` between `ready()` and `advance()`.

`soft_state` and `hard_state` are None when unchanged since the previous Ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from raft.messages import Message
from raft.types import Entry, HardState, ReadState, Snapshot, SoftState


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver; see the module docstring for the order of steps."""

    soft_state: SoftState | None
    hard_state: HardState | None
    #: Entries to persist before sending `messages`.
    entries: list[Entry]
    #: Entries to apply (after persisting; they may overlap `entries`).
    committed_entries: list[Entry]
    #: Messages to send after persisting.
    messages: list[Message]
    #: A snapshot from the leader to persist and apply, replacing the whole log.
    snapshot: Snapshot | None
    #: ReadIndex answers.
    read_states: list[ReadState]
    #: Whether persisting must fsync (entries, snapshot, term or vote changed).
    must_sync: bool
