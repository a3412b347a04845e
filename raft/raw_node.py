"""RawNode: the public, single-threaded facade over the Raft state machine.

The driver feeds it time (`tick`), peer messages (`step`), proposals and commands, and
drains `ready()` / `advance()` as described in `raft.ready`. One RawNode per Raft group;
an idle group costs a counter increment per tick and a few comparisons in `has_ready()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raft.confchange import ConfChange
from raft.config import Config
from raft.core import Raft
from raft.errors import PeerNotFound, ProposalDropped, StepLocalMessage
from raft.messages import LOCAL_TYPES, RESPONSE_TYPES, Message, MessageType
from raft.progress import ProgressState
from raft.ready import Ready
from raft.storage import LogStorage
from raft.types import NONE, ConfState, EntryKind, HardState, Role, SoftState

MT = MessageType


@dataclass(frozen=True, slots=True)
class ProgressView:
    """A leader's view of one member, for status()."""

    match_index: int
    next_index: int
    state: ProgressState
    is_learner: bool
    recent_active: bool
    inflight: int


@dataclass(frozen=True, slots=True)
class Status:
    node_id: int
    hard_state: HardState
    soft_state: SoftState
    applied_index: int
    conf_state: ConfState
    lead_transferee: int
    #: Only on the leader: every member's replication progress.
    progress: dict[int, ProgressView]


class RawNode:
    """Drive one Raft node; see raft.ready for the persist -> send -> apply -> advance loop."""

    def __init__(self, config: Config, storage: LogStorage) -> None:
        self.raft = Raft(config, storage)
        r = self.raft
        self._prev_soft = r.soft_state()
        self._prev_hard = r.hard_state()
        self._steps_on_advance: list[Message] = []
        self._awaiting_advance = False

    # -- inputs ---------------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def step(self, m: Message) -> None:
        """Feed a message from a peer. Raises StepLocalMessage / PeerNotFound on misuse."""
        if m.type in LOCAL_TYPES:
            raise StepLocalMessage(f"{m.type.name} cannot come from the network")
        if m.type in RESPONSE_TYPES and m.frm not in self.raft.prs:
            raise PeerNotFound(f"response from unknown node {m.frm}")
        self.raft.step(m)

    def campaign(self) -> None:
        """Start an election now (still subject to PreVote)."""
        self.raft.step(Message(MT.HUP, self.raft.id, self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose one data entry; raises ProposalDropped if it cannot be appended or forwarded."""
        self.raft.propose(((EntryKind.DATA, data),))

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Propose a batch of data entries at once (cheaper than one call each)."""
        if datas:
            self.raft.propose([(EntryKind.DATA, d) for d in datas])

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose a membership change; only one may be unapplied at a time."""
        self.raft.propose(((EntryKind.CONF_CHANGE, change.encode()),))

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        """Apply a committed CONF_CHANGE entry; persist the returned ConfState."""
        return self.raft.apply_conf_change(change)

    def transfer_leadership(self, to: int) -> None:
        """Ask the leader to hand leadership to `to` (sends TIMEOUT_NOW once it caught up)."""
        r = self.raft
        if r.role == Role.LEADER:
            r.step(Message(MT.TRANSFER_LEADER, r.id, to))
        elif r.lead != NONE:
            r.msgs.append(Message(MT.TRANSFER_LEADER, r.lead, to))
        else:
            raise ProposalDropped("no leader to transfer leadership from")

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; the answer arrives as a ReadState with this context."""
        r = self.raft
        if r.role == Role.LEADER:
            r.step(Message(MT.READ_INDEX, r.id, NONE, context=context))
        elif r.lead != NONE and r.role == Role.FOLLOWER:
            r.msgs.append(Message(MT.READ_INDEX, r.lead, r.id, context=context))
        else:
            raise ProposalDropped("no leader to confirm a read index")

    def report_unreachable(self, peer: int) -> None:
        """The transport failed to deliver to `peer`: stop pipelining to it."""
        self.raft.step(Message(MT.UNREACHABLE, self.raft.id, peer))

    def forget_leader(self, leader: int, campaign_in_ticks: int = 0) -> None:
        """A side channel says `leader` is dead: if it is this follower's leader, forget
        it (grant pre-votes at once) and, if `campaign_in_ticks` > 0, campaign after that
        many ticks instead of a full election timeout. No-op on any other node or role."""
        self.raft.step(Message(MT.FORGET_LEADER, self.raft.id, leader, index=campaign_in_ticks))

    def campaign_soon(self, within_ticks: int) -> None:
        """A follower that knows no leader campaigns within `within_ticks` ticks instead
        of a whole randomized election timeout (at start-up: stagger by rank). Still
        subject to PreVote, so a node joining a group that has a leader disturbs nothing."""
        self.raft.step(Message(MT.FORGET_LEADER, self.raft.id, NONE, index=within_ticks))

    def reset_peer_progress(self, peer: int) -> None:
        """The peer restarted (possibly with an empty disk): forget what it acknowledged.

        The leader probes it again from its own last index; the peer's rejection hint
        then walks it back to wherever the peer's log really ends, even to nothing.
        Without this, a leader would keep ignoring rejections at or below the old
        match index, and a wiped follower would never catch up. Commit never moves back.
        """
        r = self.raft
        pr = r.prs.get(peer)
        if r.role != Role.LEADER or pr is None or peer == r.id:
            return
        pr.match_index = 0
        pr.become_probe()
        pr.next_index = r.log.last_index() + 1

    def report_snapshot(self, peer: int, ok: bool) -> None:
        """The transport finished (or failed) sending a snapshot to `peer`."""
        self.raft.step(Message(MT.SNAP_STATUS, self.raft.id, peer, reject=not ok))

    # -- outputs --------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        return bool(
            r.msgs
            or r.msgs_after_append
            or log.has_next_unstable()
            or log.has_next_committed()
            or (log.unstable_snapshot is not None and not log.snapshot_in_progress)
            or r.read_states
            or r.term != self._prev_hard.term
            or r.vote != self._prev_hard.vote
            or log.committed != self._prev_hard.commit
            or r.lead != self._prev_soft.leader_id
            or r.role != self._prev_soft.role
        )

    def ready(self) -> Ready:
        assert not self._awaiting_advance, "ready() called twice without advance()"
        r = self.raft
        log = r.log
        entries = log.next_unstable()
        committed = log.next_committed() if log.has_next_committed() else []
        msgs = r.msgs
        r.msgs = []
        if r.msgs_after_append:
            for m in r.msgs_after_append:
                if m.to == r.id:
                    self._steps_on_advance.append(m)
                else:
                    msgs.append(m)
            r.msgs_after_append = []
        soft: SoftState | None = None
        if r.lead != self._prev_soft.leader_id or r.role != self._prev_soft.role:
            soft = r.soft_state()
            self._prev_soft = soft
        hard: HardState | None = None
        must_sync = bool(entries)
        prev = self._prev_hard
        if r.term != prev.term or r.vote != prev.vote or log.committed != prev.commit:
            hard = r.hard_state()
            must_sync = must_sync or hard.term != prev.term or hard.vote != prev.vote
            self._prev_hard = hard
        snapshot = None
        if log.unstable_snapshot is not None and not log.snapshot_in_progress:
            snapshot = log.unstable_snapshot
            log.snapshot_in_progress = True
            must_sync = True
        read_states = r.read_states
        if read_states:
            r.read_states = []
        log.accept_unstable(entries)
        if committed:
            log.applying = committed[-1].index
        self._awaiting_advance = True
        return Ready(soft, hard, entries, committed, msgs, snapshot, read_states, must_sync)

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied `rd`."""
        assert self._awaiting_advance, "advance() without ready()"
        self._awaiting_advance = False
        r = self.raft
        log = r.log
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
            r.reduce_uncommitted(rd.committed_entries)
        if self._steps_on_advance:
            steps, self._steps_on_advance = self._steps_on_advance, []
            for m in steps:
                r.step(m)

    # -- inspection -----------------------------------------------------------------------------
    def status(self) -> Status:
        r = self.raft
        progress: dict[int, ProgressView] = {}
        if r.role == Role.LEADER:
            for node_id, pr in r.prs.items():
                progress[node_id] = ProgressView(
                    pr.match_index,
                    pr.next_index,
                    pr.state,
                    pr.is_learner,
                    pr.recent_active,
                    pr.inflights.count(),
                )
        return Status(
            r.id,
            r.hard_state(),
            r.soft_state(),
            r.log.applied,
            r.conf_state(),
            r.lead_transferee,
            progress,
        )

    def compactable_index(self) -> int:
        """Highest index the driver may compact (snapshot + drop the prefix) right now: what
        this node has applied. On a leader, compacting past a follower's match index means
        that follower will need a snapshot; `status().progress` tells how far each one is."""
        return self.raft.log.applied
