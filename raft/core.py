"""The Raft state machine (etcd-io/raft shape): one class, role behaviour swapped on transitions.

Theory of operation
-------------------
Everything that changes a node's state enters through `step(message)`: network messages,
and local pseudo-messages for timers and driver reports. `tick()` counts time in ticks and,
when a timeout fires, takes the same path. Nothing here does I/O. Outputs accumulate in:

* the log's unstable tail (entries to persist),
* `msgs` (messages that may leave at once, after the Ready's state is persisted),
* `msgs_after_append` (APP_RESP / VOTE_RESP / PRE_VOTE_RESP: they acknowledge durable state, so
  they leave only after the Ready that carries that state is persisted, thesis §3.8; the ones
  addressed to ourselves, such as the leader's own append ack, are stepped on `advance()`),
* `read_states`, and the committed index.

RawNode turns these into a Ready. Roles:

* follower / pre-candidate / candidate tick with `_tick_election`; a leader ticks with
  `_tick_heartbeat` (heartbeats, CheckQuorum, leader-transfer timeout).
* A new leader appends a NOOP of its term at once: it commits entries only by counting
  replicas of an entry of its own term (figure 8, §5.4.2), and the NOOP lets it do so promptly.
* PreVote (§9.6): a pre-candidate asks "would you vote for me at term+1?" without bumping any
  term, so a node that was cut off cannot disrupt a healthy leader when it comes back.
* CheckQuorum (§6.2): a leader that has not heard from a quorum for an election timeout steps
  down; a follower that heard from a leader within the timeout ignores vote requests (leader
  stickiness, "lease"), unless the candidate was told to campaign by a leadership transfer.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from raft.confchange import ConfChange, apply_change, decode_changes
from raft.config import Config
from raft.errors import Compacted, ProposalDropped, SnapshotTemporarilyUnavailable
from raft.log import RaftLog
from raft.messages import AFTER_PERSIST_TYPES, Message, MessageType
from raft.progress import Inflights, Progress, ProgressState
from raft.quorum import JointConfig, VoteResult
from raft.read_only import ReadOnly
from raft.storage import LogStorage
from raft.types import (
    NONE,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)

MT = MessageType
#: Vote context marking a campaign started by leadership transfer: it bypasses the lease.
CAMPAIGN_TRANSFER = b"transfer"


class Campaign(enum.Enum):
    PRE_ELECTION = "pre-election"
    ELECTION = "election"
    TRANSFER = "transfer"


class Raft:
    """One node's consensus state. Not thread-safe; driven through RawNode."""

    def __init__(self, config: Config, storage: LogStorage) -> None:
        config.validate()
        self.id = config.node_id
        self.config = config
        self.log = RaftLog(storage, config.apply_bytes_max)
        hard_state, conf_state = storage.initial_state()
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.election_timeout = config.election_ticks
        self.heartbeat_timeout = config.heartbeat_ticks
        self.randomized_election_timeout = config.election_ticks
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.rng = config.rng
        self.logger = config.logger
        self.msgs: list[Message] = []
        self.msgs_after_append: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_index: list[Message] = []
        self.votes: dict[int, bool] = {}
        #: Invariant: a leader has at most one unapplied conf change, at index <= this.
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.lead_transferee = NONE
        self.prs: dict[int, Progress] = {}
        self.voters = JointConfig(frozenset())
        self.learners: frozenset[int] = frozenset()
        self.peer_ids: tuple[int, ...] = ()
        self._apply_conf_state(conf_state)
        if hard_state.term or hard_state.vote or hard_state.commit:
            self.term = hard_state.term
            self.vote = hard_state.vote
            self.log.commit_to(min(hard_state.commit, self.log.last_index()))
        if config.applied_index:
            self.log.applied_to(min(config.applied_index, self.log.committed))
        self.become_follower(self.term, NONE)

    # -- small helpers ------------------------------------------------------------------------
    def _info(self, msg: str) -> None:
        if self.logger is not None:
            self.logger.info(f"{self.id} {msg}")

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=tuple(sorted(self.voters.incoming)),
            learners=tuple(sorted(self.learners)),
            voters_outgoing=tuple(sorted(self.voters.outgoing)),
        )

    def promotable(self) -> bool:
        """Can this node campaign? It must be a voter and not be installing a snapshot."""
        return self.id in self.voters.incoming and self.log.unstable_snapshot is None

    def _send(self, m: Message) -> None:
        if m.type in AFTER_PERSIST_TYPES:
            self.msgs_after_append.append(m)
        else:
            self.msgs.append(m)

    # -- ticks ----------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self.promotable():
            self.election_elapsed = 0
            self.step(Message(MT.HUP, self.id, self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, self.id, self.id))
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self._info(f"abandons transfer to {self.lead_transferee}: timed out")
                self.lead_transferee = NONE
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(b"")

    # -- role transitions ---------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.lead_transferee = NONE
        self.votes = {}
        last = self.log.last_index()
        for node_id, pr in self.prs.items():
            pr.match_index = last if node_id == self.id else 0
            pr.next_index = last + 1
            pr.state = ProgressState.PROBE
            pr.msg_app_flow_paused = False
            pr.pending_snapshot = 0
            pr.recent_active = node_id == self.id
            pr.inflights.reset()
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only = ReadOnly()
        self.pending_read_index = []

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._info(f"became follower at term {self.term}")

    def _become_pre_candidate(self) -> None:
        assert self.role != Role.LEADER, "invalid transition leader -> pre-candidate"
        # A pre-election changes neither term nor vote.
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE
        self._info(f"became pre-candidate at term {self.term}")

    def _become_candidate(self) -> None:
        assert self.role != Role.LEADER, "invalid transition leader -> candidate"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._info(f"became candidate at term {self.term}")

    def _become_leader(self) -> None:
        assert self.role != Role.FOLLOWER, "invalid transition follower -> leader"
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        me = self.prs[self.id]
        me.become_replicate()
        me.recent_active = True
        # Conservatively assume the tail may hold an unapplied conf change.
        self.pending_conf_index = self.log.last_index()
        self._info(f"became leader at term {self.term}")
        # The NOOP of this term: lets the leader commit earlier entries (figure 8) promptly.
        self._append_entries([(EntryKind.NOOP, b"")])

    # -- campaigning ------------------------------------------------------------------------------
    def _has_unapplied_conf_change(self) -> bool:
        log = self.log
        lo, hi = log.applied + 1, log.committed + 1
        while lo < hi:
            try:
                ents = log.slice(lo, hi, 1 << 20)
            except Compacted:
                return False
            for e in ents:
                if e.kind == EntryKind.CONF_CHANGE:
                    return True
            lo = ents[-1].index + 1
        return False

    def _hup(self, campaign: Campaign) -> None:
        if self.role == Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            self._info("cannot campaign: unapplied conf change pending")
            return
        self._campaign(campaign)

    def _campaign(self, campaign: Campaign) -> None:
        if campaign == Campaign.PRE_ELECTION:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        resp_type = MT.PRE_VOTE_RESP if vote_type == MT.PRE_VOTE else MT.VOTE_RESP
        ctx = CAMPAIGN_TRANSFER if campaign == Campaign.TRANSFER else b""
        last = self.log.last_index()
        last_term = self.log.last_term()
        for node_id in sorted(self.voters.ids()):
            if node_id == self.id:
                # Our own vote counts once it is durable: stepped on advance().
                self._send(Message(resp_type, self.id, self.id, term=term))
                continue
            self._send(Message(vote_type, node_id, self.id, term, last_term, last, context=ctx))

    def _poll(self, node_id: int, granted: bool) -> VoteResult:
        self.votes.setdefault(node_id, granted)
        return self.voters.vote_result(self.votes)

    # -- step ---------------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local message (or a forwarded proposal / read / transfer request)
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if in_lease and not force:
                    # Leader stickiness: we heard from a leader within the election timeout.
                    if self.logger is not None:
                        self._info(
                            f"ignores {m.type.name} from {m.frm} at term {m.term}: lease "
                            f"not expired (remaining ticks: "
                            f"{self.election_timeout - self.election_elapsed})"
                        )
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes are about a future term; they change nobody's term
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            # A stale sender: reply with our term so it catches up (figure 2: "reply false if
            # term < currentTerm"). A leader cut off by a partition learns it must step down;
            # with PreVote/CheckQuorum nothing else would ever tell it.
            if m.type in (MT.HEARTBEAT, MT.APP):
                self._send(Message(MT.APP_RESP, m.frm, self.id, self.term))
            elif m.type in (MT.PRE_VOTE, MT.VOTE):
                resp = MT.PRE_VOTE_RESP if m.type == MT.PRE_VOTE else MT.VOTE_RESP
                self._send(Message(resp, m.frm, self.id, self.term, reject=True))
            return

        t = m.type
        if t == MT.HUP:
            self._hup(Campaign.PRE_ELECTION if self.pre_vote else Campaign.ELECTION)
        elif t == MT.FORGET_LEADER:
            self._forget_leader(m)
        elif t == MT.VOTE or t == MT.PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        resp_type = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._info(f"grants {m.type.name} to {m.frm} at term {m.term}")
            self._send(Message(resp_type, m.frm, self.id, m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._info(f"rejects {m.type.name} from {m.frm} at term {m.term}")
            self._send(Message(resp_type, m.frm, self.id, self.term, reject=True))

    # -- leader -------------------------------------------------------------------------------------
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            try:
                self.propose([(e.kind, e.data) for e in m.entries], forwarded=True)
            except ProposalDropped as exc:
                self._info(f"dropped proposal forwarded by {m.frm}: {exc}")
            return
        if t == MT.CHECK_QUORUM:
            self._check_quorum()
            return
        if t == MT.READ_INDEX:
            self._handle_read_index(m)
            return
        if t == MT.BEAT:
            self._bcast_heartbeat(b"")
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.msg_app_flow_paused = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # Appends may have been lost: free a slot so replication can make progress
                # (a gap makes the follower reject, which sends us back to probing).
                pr.inflights.free_first()
            if pr.match_index < self.log.last_index() or pr.state == ProgressState.PROBE:
                self._send_append(m.frm)
            if m.context:
                self._handle_read_ack(m)
        elif t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for a heartbeat response before probing again.
            pr.msg_app_flow_paused = True
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.TRANSFER_LEADER:
            self._handle_transfer_leader(m, pr)

    def _check_quorum(self) -> None:
        votes = {i: pr.recent_active for i, pr in self.prs.items()}
        votes[self.id] = True
        if self.voters.vote_result(votes) != VoteResult.WON:
            self._info("stepped down: no quorum heard from within an election timeout")
            self.become_follower(self.term, NONE)
        for node_id, pr in self.prs.items():
            if node_id != self.id:
                pr.recent_active = False

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of a term the follower does not have (fast back-off).
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not (
            pr.maybe_update(m.index)
            or (pr.match_index == m.index and pr.state == ProgressState.PROBE)
        ):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match_index + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._release_pending_read_index()
            self._bcast_append()
        elif m.frm != self.id and old_paused:
            self._send_append(m.frm)
        if m.frm != self.id:
            # Flow control may now allow several messages; send what we have.
            while self._maybe_send_append(m.frm, send_if_empty=False):
                pass
            if m.frm == self.lead_transferee and pr.match_index == self.log.last_index():
                self._send_timeout_now(m.frm)

    def _maybe_commit(self) -> bool:
        if len(self.prs) == 1:
            index = self.prs[self.id].match_index
        else:
            index = self.voters.committed_index({i: p.match_index for i, p in self.prs.items()})
        # Only an entry of the current term commits by counting replicas (figure 8).
        return self.log.maybe_commit(index, self.term)

    def propose(self, items: Sequence[tuple[EntryKind, bytes]], forwarded: bool = False) -> None:
        """Append (kind, data) items as new entries, or forward them to the leader."""
        if self.role != Role.LEADER:
            if self.role != Role.FOLLOWER or self.lead == NONE:
                raise ProposalDropped(f"node {self.id} has no leader (role {self.role.name})")
            ents = tuple(Entry(0, 0, k, d) for k, d in items)
            self._send(Message(MT.PROP, self.lead, self.id, entries=ents))
            return
        if self.id not in self.prs:
            raise ProposalDropped("leader was removed from the configuration")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
        items = self._check_conf_changes(items, forwarded)
        if not self._append_entries(items):
            raise ProposalDropped("too many uncommitted bytes")
        self._bcast_append()

    def _check_conf_changes(
        self, items: Sequence[tuple[EntryKind, bytes]], forwarded: bool
    ) -> Sequence[tuple[EntryKind, bytes]]:
        if not any(k == EntryKind.CONF_CHANGE for k, _ in items):
            return items
        out = []
        last = self.log.last_index()
        for i, (kind, data) in enumerate(items):
            if kind == EntryKind.CONF_CHANGE:
                refuse = ""
                if self.pending_conf_index > self.log.applied:
                    refuse = "a conf change is pending"
                else:
                    try:
                        decode_changes(data)
                    except Exception as exc:
                        refuse = f"malformed: {exc}"
                if refuse:
                    if not forwarded:
                        raise ProposalDropped(f"conf change refused: {refuse}")
                    # A forwarded batch keeps its shape: the refused change becomes a NOOP.
                    kind, data = EntryKind.NOOP, b""
                else:
                    self.pending_conf_index = last + 1 + i
            out.append((kind, data))
        return out

    def _append_entries(self, items: Sequence[tuple[EntryKind, bytes]]) -> bool:
        limit = self.config.uncommitted_bytes_max
        if limit:
            size = sum(len(d) for _, d in items)
            if self.uncommitted_bytes > 0 and size > 0 and self.uncommitted_bytes + size > limit:
                return False
            self.uncommitted_bytes += size
        term = self.term
        first = self.log.last_index() + 1
        ents = [Entry(term, first + i, kind, data) for i, (kind, data) in enumerate(items)]
        last = self.log.append(ents)
        # Our own ack counts once the entries are durable: stepped on advance().
        self._send(Message(MT.APP_RESP, self.id, self.id, term, index=last))
        return True

    def reduce_uncommitted(self, entries: list[Entry]) -> None:
        if self.role != Role.LEADER or not self.config.uncommitted_bytes_max:
            return
        size = sum(len(e.data) for e in entries)
        self.uncommitted_bytes = max(0, self.uncommitted_bytes - size)

    # -- sending appends / snapshots / heartbeats ------------------------------------------------
    def _bcast_append(self) -> None:
        for node_id in self.peer_ids:
            self._maybe_send_append(node_id, send_if_empty=True)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next_index - 1
        try:
            prev_term = log.term(prev_index)
            ents: list[Entry] = []
            if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
                ents = log.entries_from(pr.next_index, self.config.msg_bytes_max)
        except Compacted:
            return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.msgs.append(
            Message(MT.APP, to, self.id, self.term, prev_term, prev_index, ents, log.committed)
        )
        size = sum(len(e.data) for e in ents) if pr.inflights.bytes_max else 0
        pr.sent_entries(len(ents), size)
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node we have not heard from
        try:
            snapshot = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        assert not snapshot.is_empty, "need a non-empty snapshot to catch up a follower"
        pr.become_snapshot(snapshot.meta.index)
        self._info(f"sends snapshot at {snapshot.meta.index} to {to}")
        self.msgs.append(Message(MT.SNAP, to, self.id, self.term, snapshot=snapshot))
        return True

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        committed = self.log.committed
        for node_id in self.peer_ids:
            pr = self.prs[node_id]
            commit = min(pr.match_index, committed)
            self.msgs.append(
                Message(MT.HEARTBEAT, node_id, self.id, self.term, commit=commit, context=ctx)
            )

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(MT.TIMEOUT_NOW, to, self.id, self.term))

    # -- leadership transfer ------------------------------------------------------------------------
    def _handle_transfer_leader(self, m: Message, pr: Progress) -> None:
        transferee = m.frm
        if pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return
            self.lead_transferee = NONE
        if transferee == self.id:
            return
        # The transfer must finish within an election timeout, or it is abandoned (§3.10).
        self.election_elapsed = 0
        self.lead_transferee = transferee
        self._info(f"starts transferring leadership to {transferee}")
        if pr.match_index == self.log.last_index():
            self._send_timeout_now(transferee)
        else:
            self._send_append(transferee)

    # -- read index -------------------------------------------------------------------------------
    def _handle_read_index(self, m: Message) -> None:
        if len(self.voters.ids()) == 1:
            self._answer_read(m, self.log.committed)
            return
        if self.log.term(self.log.committed) != self.term:
            # Until an entry of our term commits we do not know the true commit index (§6.4).
            self.pending_read_index.append(m)
            return
        self._start_read(m)

    def _start_read(self, m: Message) -> None:
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self._bcast_heartbeat(m.context)

    def _release_pending_read_index(self) -> None:
        if self.pending_read_index and self.log.term(self.log.committed) == self.term:
            pending, self.pending_read_index = self.pending_read_index, []
            for m in pending:
                self._start_read(m)

    def _handle_read_ack(self, m: Message) -> None:
        acks = self.read_only.recv_ack(m.frm, m.context)
        if acks is None or self.voters.vote_result(acks) != VoteResult.WON:
            return
        for status in self.read_only.advance(m.context):
            self._answer_read(status.request, status.index)

    def _answer_read(self, req: Message, index: int) -> None:
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(index, req.context))
        else:
            self.msgs.append(
                Message(
                    MT.READ_INDEX_RESP,
                    req.frm,
                    self.id,
                    self.term,
                    index=index,
                    context=req.context,
                )
            )

    # -- candidate ------------------------------------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
        if t == MT.PROP:
            return  # dropped: no leader to forward to
        if t == MT.APP:
            self.become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            result = self._poll(m.frm, not m.reject)
            if result == VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(Campaign.ELECTION)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif result == VoteResult.LOST:
                self.become_follower(self.term, NONE)

    # -- follower ---------------------------------------------------------------------------------------
    def _forget_leader(self, m: Message) -> None:
        """A failure detector outside Raft says leader `m.frm` is gone (its process closed
        its connections): stop honouring its lease, so pre-votes can be granted at once,
        and campaign in `m.index` ticks instead of a whole randomized election timeout.

        Safe because it changes no term and no vote: it only gives up the leader stickiness
        of CheckQuorum, and a PreVote still needs a quorum of nodes that also let go of
        the leader (or never heard from it). If the leader is in fact alive, its next
        heartbeat makes it our leader again. (etcd's MsgForgetLeader, plus the early
        campaign that makes it useful when the detector is a closed TCP connection.)
        """
        if self.role != Role.FOLLOWER or self.lead != m.frm:
            return  # (m.frm NONE: only hasten the campaign of a follower without leader)
        if self.lead != NONE:
            self._info(f"forgets leader {self.lead} at term {self.term}")
            self.lead = NONE
        if m.index > 0 and self.promotable():
            remaining = min(m.index, self.randomized_election_timeout)
            self.election_elapsed = max(
                self.election_elapsed, self.randomized_election_timeout - remaining
            )

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MT.PROP:
            if self.lead != NONE:
                self.msgs.append(Message(MT.PROP, self.lead, m.frm, entries=m.entries))
        elif t in (MT.TRANSFER_LEADER, MT.READ_INDEX):
            if self.lead != NONE:
                self.msgs.append(Message(t, self.lead, m.frm, context=m.context))
        elif t == MT.TIMEOUT_NOW:
            self._info(f"received TIMEOUT_NOW from {m.frm}: campaigning at once")
            self._hup(Campaign.TRANSFER)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=last_new))
            return
        # Reject with a hint: the largest index <= m.index whose term is <= m.log_term, so the
        # leader can skip the whole conflicting term instead of one entry per round trip.
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.index, log.last_index()), m.log_term
        )
        self._send(
            Message(
                MT.APP_RESP,
                m.frm,
                self.id,
                self.term,
                hint_term,
                m.index,
                reject=True,
                reject_hint=hint_index,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self.msgs.append(Message(MT.HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        snap = m.snapshot
        if self.restore(snap):
            self._info(f"restored snapshot at {snap.meta.index} (term {snap.meta.term})")
            index = self.log.last_index()
        else:
            index = self.log.committed
        self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=index))

    def restore(self, snap: Snapshot) -> bool:
        """Install a snapshot from the leader; False if our log already covers it."""
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        if self.role != Role.FOLLOWER:
            # Defense in depth: only followers install snapshots.
            self.become_follower(self.term + 1, NONE)
            return False
        cs = meta.conf_state
        # We may be missing from the snapshot's membership: a node added after the snapshot
        # was taken learns of its own addition from the log entries that follow. Until then it
        # is not a voter in its own eyes, so it cannot campaign.
        if self.log.match_term(meta.index, meta.term):
            # We already have the entries: just fast-forward the commit index.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self.prs = {}
        self._apply_conf_state(cs)
        return True

    # -- membership -------------------------------------------------------------------------------------
    def _apply_conf_state(self, cs: ConfState) -> None:
        """Make the tracker match `cs`, keeping progress of members that stay."""
        self.voters = JointConfig(frozenset(cs.voters), frozenset(cs.voters_outgoing))
        self.learners = frozenset(cs.learners)
        members = self.voters.ids() | self.learners
        last = self.log.last_index()
        prs: dict[int, Progress] = {}
        for node_id in sorted(members):
            pr = self.prs.get(node_id)
            if pr is None:
                pr = Progress(
                    last + 1,
                    Inflights(self.config.inflight_msgs_max, self.config.inflight_bytes_max),
                )
                if node_id == self.id:
                    pr.match_index = last
                # A new member counts as active so CheckQuorum does not fire before it speaks.
                pr.recent_active = True
            pr.is_learner = node_id in self.learners
            prs[node_id] = pr
        self.prs = prs
        self.peer_ids = tuple(i for i in sorted(prs) if i != self.id)

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        cs = apply_change(self.conf_state(), change)
        self._apply_conf_state(cs)
        self._info(f"applied conf change {change.type.name} {change.node_id}: {cs}")
        if self.role != Role.LEADER:
            return cs
        if self.id not in self.voters.ids():
            # Removed (or demoted) leader: step down so the rest elects a new one.
            self.become_follower(self.term, NONE)
            return cs
        if self.lead_transferee != NONE and self.lead_transferee not in self.voters.ids():
            self.lead_transferee = NONE
        if self._maybe_commit():
            self._bcast_append()
        else:
            for node_id in self.peer_ids:
                self._maybe_send_append(node_id, send_if_empty=False)
        return cs
