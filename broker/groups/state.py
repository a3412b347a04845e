"""The classic consumer-group state machine, pure: data in, data out, time as an argument.

Why this module exists: the group protocol has many small rules (when a join completes,
who leads, which error a late heartbeat gets) that clients depend on exactly. Keeping them
in one pure module, free of asyncio, clocks and I/O, lets tests drive every rule with an
explicit `now_ms` and lets the asyncio coordinator stay a thin shell.

Theory of operation
-------------------
A group moves through Kafka's states::

    Empty --join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
    CompletingRebalance --leader's SyncGroup stored--> Stable
    Stable / CompletingRebalance --join with new metadata, leave, expiry--> PreparingRebalance
    PreparingRebalance --everyone gone--> Empty;  Empty --deleted / expired--> Dead

Rule 1: every operation returns an `Outcome`: an immediate `reply` for the caller, or the
member id under which the caller is `parked` (JoinGroup and SyncGroup are long polls), plus
the join and sync results that became ready for parked members, plus group metadata to
`store`. The shell completes parked requests from those results; nothing here knows
about futures.

Rule 2: no clock reads. Deadlines (`next_deadline_ms`) are absolute milliseconds computed
from the `now_ms` the caller passed; `poll(now_ms)` fires the ones that are due.

Rule 3: group metadata is persisted like Kafka does it: when the leader's SyncGroup
arrives, the group (with the new assignment) is handed out as `store` with
`store_is_sync=True`; the state stays CompletingRebalance until the shell reports the
append's result through `on_sync_stored`. Only then do members get their assignment.

Rule 4: offsets change only through `apply_offsets`, which the shell calls after the
records are quorum-committed, so an acknowledged commit is always in the log.

Rule 5 (join window): a rebalance completes when every known member has rejoined *and*
no new member (a first JoinGroup that got MEMBER_ID_REQUIRED, or a member admitted) has
arrived for `join_window_ms`; the rebalance timeout still forces it. Why: consumers that
start together reach the coordinator tens of milliseconds apart. Completing the join as
soon as the members known so far have joined hands out a generation that the next
arrival at once invalidates (its join fails the parked SyncGroups with
REBALANCE_IN_PROGRESS), and librdkafka sends at most one JoinGroup per second, so each
such extra round costs its members about a second. This is Kafka's
group.initial.rebalance.delay.ms idea (wait while members keep arriving) with a short,
arrival-driven wait that also applies to later rebalances, so a lone consumer waits only
the window rather than a fixed delay, and a rebalance without newcomers (a leave, a
metadata change) does not wait at all.

Invariant: `leader_id in members` whenever the group has members and is not Empty.
Invariant: a member is awaiting join only in PreparingRebalance and awaiting sync only
in CompletingRebalance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from broker.groups.offsets_log import (
    GroupSnapshot,
    OffsetAndMetadata,
    PersistedMember,
    Record,
    group_record,
    offset_record,
    replay,
)
from client.protocol.errors import ErrorCode

TopicPartition = tuple[str, int]


class GroupState(Enum):
    """Kafka's classic group states; the values are what ListGroups/DescribeGroups show."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Coordinator settings (Kafka's group.* and offsets.* broker configs)."""

    initial_rebalance_delay_ms: int = 0
    #: A rebalance completes only once no new member arrived for this long (see Rule 5).
    join_window_ms: int = 0
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000
    group_members_max: int = 1000
    offset_metadata_bytes_max: int = 4096

    def __post_init__(self) -> None:
        assert self.initial_rebalance_delay_ms >= 0 and self.join_window_ms >= 0
        assert self.offsets_retention_ms > 0
        assert 0 < self.min_session_timeout_ms <= self.max_session_timeout_ms
        assert self.group_members_max > 0


@dataclass(frozen=True, slots=True)
class JoinParams:
    """What a JoinGroup request says, independent of its version."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    require_known_member_id: bool = True  # v4+: MEMBER_ID_REQUIRED round trip
    supports_skip_assignment: bool = False  # v9+


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    member_id: str
    error: ErrorCode
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: tuple[JoinedMember, ...] = ()
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncResult:
    member_id: str
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(slots=True)
class Outcome:
    """What an operation produced; see Rule 1 and Rule 3 of the module docstring."""

    reply: JoinResult | SyncResult | None = None
    parked: str | None = None
    joins: list[JoinResult] = field(default_factory=list)
    syncs: list[SyncResult] = field(default_factory=list)
    store: GroupSnapshot | None = None
    store_is_sync: bool = False


@dataclass(slots=True)
class Member:
    """A member as the coordinator tracks it (mutable: deadlines and flags move)."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    heartbeat_deadline_ms: int
    assignment: bytes = b""
    awaiting_join: bool = False
    awaiting_sync: bool = False

    def metadata_for(self, protocol_name: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol_name:
                return metadata
        return b""


class Group:
    """One group's membership state machine and its committed offsets."""

    def __init__(self, group_id: str, config: GroupConfig, now_ms: int) -> None:
        self.group_id = group_id
        self.config = config
        self.state = GroupState.EMPTY
        self.state_timestamp_ms = now_ms
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group_instance_id -> member_id
        self.pending_members: dict[
            str, int
        ] = {}  # member_id -> expiry deadline (MEMBER_ID_REQUIRED)
        self.join_deadline_ms: int | None = None
        self.initial_delay_deadline_ms: int | None = None
        self.initial_delay_remaining_ms = 0
        self.initial_delay_new_member = False
        self.join_window_deadline_ms: int | None = None
        self.sync_deadline_ms: int | None = None
        self.pending_sync: set[str] = set()
        self.storing_generation: int | None = None
        self.pending_assignments: dict[str, bytes] = {}
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self.commits_in_flight = 0

    # --- queries -------------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        """The earliest time at which `poll` has something to do, or None."""
        times = list(self.pending_members.values())
        times += [
            m.heartbeat_deadline_ms
            for m in self.members.values()
            if not (m.awaiting_join or m.awaiting_sync)
        ]
        for t in (
            self.initial_delay_deadline_ms,
            self.join_window_deadline_ms,
            self.join_deadline_ms,
            self.sync_deadline_ms,
        ):
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def snapshot(self, assignments: dict[str, bytes] | None = None) -> GroupSnapshot:
        """The group metadata value to persist (current members; assignments if given)."""
        members = tuple(
            PersistedMember(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.rebalance_timeout_ms,
                m.session_timeout_ms,
                m.metadata_for(self.protocol_name),
                m.assignment if assignments is None else assignments.get(m.member_id, b""),
            )
            for m in self.members.values()
        )
        return GroupSnapshot(
            self.protocol_type or "",
            self.generation_id,
            self.protocol_name,
            self.leader_id,
            self.state_timestamp_ms,
            members,
        )

    def _is_fenced(self, member_id: str, group_instance_id: str | None) -> bool:
        if group_instance_id is None:
            return False
        known = self.static_members.get(group_instance_id)
        return known is not None and known != member_id

    def _rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def _transition(self, state: GroupState, now_ms: int) -> None:
        self.state = state
        self.state_timestamp_ms = now_ms

    # --- JoinGroup -----------------------------------------------------------------------

    def join(self, now_ms: int, p: JoinParams, new_member_id: str) -> Outcome:
        """Handle a JoinGroup. `new_member_id` is used if the request needs a fresh id."""
        out = Outcome()
        error = self._check_join(p)
        if error is not ErrorCode.NONE:
            out.reply = JoinResult(p.member_id, error)
        elif p.member_id == "":
            self._join_unknown(now_ms, p, new_member_id, out)
        else:
            self._join_known(now_ms, p, out)
        return out

    def _check_join(self, p: JoinParams) -> ErrorCode:
        cfg = self.config
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if not cfg.min_session_timeout_ms <= p.session_timeout_ms <= cfg.max_session_timeout_ms:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        if not self._supports(p):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        is_new = p.member_id == "" or p.member_id in self.pending_members
        size = len(self.members) + len(self.pending_members)
        if (
            is_new
            and p.group_instance_id not in self.static_members
            and size >= cfg.group_members_max
        ):
            return ErrorCode.GROUP_MAX_SIZE_REACHED
        return ErrorCode.NONE

    def _supports(self, p: JoinParams) -> bool:
        if not p.protocol_type or not p.protocols:
            return False
        if not self.members:
            return True
        if p.protocol_type != self.protocol_type and self.protocol_type is not None:
            return False
        others = [m for m in self.members.values() if m.member_id != p.member_id]
        names = {name for name, _ in p.protocols}
        for m in others:
            names &= {name for name, _ in m.protocols}
        return bool(names)

    def _join_unknown(self, now_ms: int, p: JoinParams, new_id: str, out: Outcome) -> None:
        if p.group_instance_id is not None:
            old_id = self.static_members.get(p.group_instance_id)
            if old_id is not None:
                self._replace_static(now_ms, p, old_id, new_id, out)
            else:
                self._add_member_and_rebalance(now_ms, p, new_id, out)
        elif p.require_known_member_id:
            # KIP-394: hand out the id first; the member only counts once it rejoins with it.
            self.pending_members[new_id] = now_ms + p.session_timeout_ms
            self._note_arrival(now_ms)
            out.reply = JoinResult(new_id, ErrorCode.MEMBER_ID_REQUIRED)
        else:
            self._add_member_and_rebalance(now_ms, p, new_id, out)

    def _join_known(self, now_ms: int, p: JoinParams, out: Outcome) -> None:
        member_id = p.member_id
        if member_id in self.pending_members:
            del self.pending_members[member_id]
            self._add_member_and_rebalance(now_ms, p, member_id, out)
            return
        member = self.members.get(member_id)
        if member is None:
            out.reply = JoinResult(member_id, ErrorCode.UNKNOWN_MEMBER_ID)
        elif self._is_fenced(member_id, p.group_instance_id):
            out.reply = JoinResult(member_id, ErrorCode.FENCED_INSTANCE_ID)
        elif self.state is GroupState.PREPARING_REBALANCE:
            self._update_member_and_rebalance(now_ms, member, p, out)
        elif self.state is GroupState.COMPLETING_REBALANCE and member.protocols == p.protocols:
            # The member lost our JoinGroup response: give it the same generation again.
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            out.reply = self._join_result(member)
        elif (
            self.state is GroupState.STABLE
            and member_id != self.leader_id
            and member.protocols == p.protocols
        ):
            # A follower with unchanged metadata: no rebalance, just the current generation.
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            out.reply = self._join_result(member)
        elif self.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
            self._update_member_and_rebalance(now_ms, member, p, out)
        else:
            out.reply = JoinResult(member_id, ErrorCode.UNKNOWN_MEMBER_ID)

    def _replace_static(
        self, now_ms: int, p: JoinParams, old_id: str, new_id: str, out: Outcome
    ) -> None:
        """A known static member came back with a new id (KIP-345): fence the old id."""
        old = self.members.pop(old_id)
        if old.awaiting_join:
            out.joins.append(JoinResult(old_id, ErrorCode.FENCED_INSTANCE_ID))
        if old.awaiting_sync:
            out.syncs.append(SyncResult(old_id, ErrorCode.FENCED_INSTANCE_ID))
        old.member_id = new_id
        old.awaiting_sync = False
        self.members[new_id] = old
        self.static_members[p.group_instance_id or ""] = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        was_leader = self.leader_id == old_id
        if was_leader:
            self.leader_id = new_id
        unchanged = old.protocols == p.protocols and old.protocol_type == p.protocol_type
        if self.state is GroupState.STABLE and unchanged:
            if was_leader and not p.supports_skip_assignment:
                # Before JoinGroup v9 a leader cannot be told to skip assignment: rebalance.
                self._update_member_and_rebalance(now_ms, old, p, out)
                return
            old.heartbeat_deadline_ms = now_ms + old.session_timeout_ms
            old.session_timeout_ms = p.session_timeout_ms
            old.rebalance_timeout_ms = p.rebalance_timeout_ms
            out.reply = self._join_result(old, skip_assignment=was_leader)
            out.store = self.snapshot()
        else:
            self._update_member_and_rebalance(now_ms, old, p, out)

    def _add_member_and_rebalance(
        self, now_ms: int, p: JoinParams, member_id: str, out: Outcome
    ) -> None:
        assert member_id not in self.members, f"member id {member_id} handed out twice"
        member = Member(
            member_id=member_id,
            group_instance_id=p.group_instance_id,
            client_id=p.client_id,
            client_host=p.client_host,
            session_timeout_ms=p.session_timeout_ms,
            rebalance_timeout_ms=p.rebalance_timeout_ms,
            protocol_type=p.protocol_type,
            protocols=p.protocols,
            heartbeat_deadline_ms=now_ms + p.session_timeout_ms,
            awaiting_join=True,
        )
        self.members[member_id] = member
        if p.group_instance_id is not None:
            self.static_members[p.group_instance_id] = member_id
        if self.leader_id is None:
            self.leader_id = member_id
        if self.protocol_type is None:
            self.protocol_type = p.protocol_type
        self.initial_delay_new_member = True
        self._note_arrival(now_ms)
        out.parked = member_id
        self._maybe_prepare_rebalance(now_ms, out)
        self._maybe_complete_join(now_ms, out)

    def _note_arrival(self, now_ms: int) -> None:
        """A new member showed up: hold the join open for the join window (Rule 5)."""
        if self.config.join_window_ms > 0:
            self.join_window_deadline_ms = now_ms + self.config.join_window_ms

    def _update_member_and_rebalance(
        self, now_ms: int, member: Member, p: JoinParams, out: Outcome
    ) -> None:
        member.protocols = p.protocols
        member.protocol_type = p.protocol_type
        member.session_timeout_ms = p.session_timeout_ms
        member.rebalance_timeout_ms = p.rebalance_timeout_ms
        member.client_id = p.client_id
        member.client_host = p.client_host
        member.heartbeat_deadline_ms = now_ms + p.session_timeout_ms
        member.awaiting_join = True
        out.parked = member.member_id
        self._maybe_prepare_rebalance(now_ms, out)
        self._maybe_complete_join(now_ms, out)

    def _join_result(self, member: Member, skip_assignment: bool = False) -> JoinResult:
        is_leader = member.member_id == self.leader_id
        members: tuple[JoinedMember, ...] = ()
        if is_leader:
            members = tuple(
                JoinedMember(m.member_id, m.group_instance_id, m.metadata_for(self.protocol_name))
                for m in self.members.values()
            )
        return JoinResult(
            member.member_id,
            ErrorCode.NONE,
            self.generation_id,
            self.protocol_type,
            self.protocol_name,
            self.leader_id or "",
            members,
            skip_assignment,
        )

    # --- rebalance ------------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, now_ms: int, out: Outcome) -> None:
        if self.state in (
            GroupState.EMPTY,
            GroupState.STABLE,
            GroupState.COMPLETING_REBALANCE,
        ):
            self._prepare_rebalance(now_ms, out)

    def _prepare_rebalance(self, now_ms: int, out: Outcome) -> None:
        if self.state is GroupState.COMPLETING_REBALANCE:
            self._fail_pending_syncs(ErrorCode.REBALANCE_IN_PROGRESS, out)
        self.pending_sync.clear()
        self.sync_deadline_ms = None
        rebalance_timeout_ms = self._rebalance_timeout_ms()
        delay_ms = min(self.config.initial_rebalance_delay_ms, rebalance_timeout_ms)
        if self.state is GroupState.EMPTY and delay_ms > 0:
            # Kafka's InitialDelayedJoin: let a starting group gather before generation 1.
            self.initial_delay_deadline_ms = now_ms + delay_ms
            self.initial_delay_remaining_ms = rebalance_timeout_ms - delay_ms
            self.initial_delay_new_member = False
        else:
            self.join_deadline_ms = now_ms + rebalance_timeout_ms
        self._transition(GroupState.PREPARING_REBALANCE, now_ms)

    def _fail_pending_syncs(self, error: ErrorCode, out: Outcome) -> None:
        for m in self.members.values():
            if m.awaiting_sync:
                out.syncs.append(SyncResult(m.member_id, error))
                m.awaiting_sync = False
        self.storing_generation = None
        self.pending_assignments = {}

    def _maybe_complete_join(self, now_ms: int, out: Outcome, force: bool = False) -> None:
        if self.state is not GroupState.PREPARING_REBALANCE:
            return
        if self.initial_delay_deadline_ms is not None:
            return
        window = self.join_window_deadline_ms
        if window is not None and now_ms < window and not force:
            return
        all_joined = not self.pending_members and all(
            m.awaiting_join for m in self.members.values()
        )
        if not (all_joined or force):
            return
        for m in [m for m in self.members.values() if not m.awaiting_join]:
            self._remove_member(m.member_id, out)
        self._complete_join(now_ms, out)

    def _complete_join(self, now_ms: int, out: Outcome) -> None:
        self.join_deadline_ms = None
        self.join_window_deadline_ms = None
        self.generation_id += 1
        if not self.members:
            self.protocol_name = None
            self.leader_id = None
            self._transition(GroupState.EMPTY, now_ms)
            out.store = self.snapshot()
            return
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        self.protocol_name = self._select_protocol()
        self.protocol_type = self.members[self.leader_id].protocol_type
        self._transition(GroupState.COMPLETING_REBALANCE, now_ms)
        self.pending_sync = set(self.members)
        self.sync_deadline_ms = now_ms + self._rebalance_timeout_ms()
        for m in self.members.values():
            m.awaiting_join = False
            m.heartbeat_deadline_ms = now_ms + m.session_timeout_ms
            out.joins.append(self._join_result(m))

    def _select_protocol(self) -> str:
        """Kafka's vote: each member votes for its most preferred protocol that all support.

        Ties go to the leader's order of preference, so the choice is deterministic.
        """
        members = list(self.members.values())
        candidates = {name for name, _ in members[0].protocols}
        for m in members[1:]:
            candidates &= {name for name, _ in m.protocols}
        assert candidates, "join admitted a member without a common protocol"
        votes: dict[str, int] = dict.fromkeys(candidates, 0)
        for m in members:
            votes[next(name for name, _ in m.protocols if name in candidates)] += 1
        leader = self.members[self.leader_id or ""]
        ranked = [name for name, _ in leader.protocols if name in candidates]
        return max(ranked, key=lambda name: (votes[name], -ranked.index(name)))

    def _remove_member(self, member_id: str, out: Outcome) -> None:
        member = self.members.pop(member_id)
        instance_id = member.group_instance_id
        if instance_id is not None and self.static_members.get(instance_id) == member_id:
            del self.static_members[instance_id]
        if member.awaiting_join:
            out.joins.append(JoinResult(member_id, ErrorCode.UNKNOWN_MEMBER_ID))
        if member.awaiting_sync:
            out.syncs.append(SyncResult(member_id, ErrorCode.UNKNOWN_MEMBER_ID))
        self.pending_sync.discard(member_id)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)

    def _after_removal(self, now_ms: int, out: Outcome) -> None:
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(now_ms, out)
        self._maybe_complete_join(now_ms, out)

    # --- SyncGroup -----------------------------------------------------------------------

    def sync(
        self,
        now_ms: int,
        member_id: str,
        generation_id: int,
        group_instance_id: str | None = None,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
        assignments: Iterable[tuple[str, bytes]] = (),
    ) -> Outcome:
        """Handle a SyncGroup; the leader's carries the assignment of every member."""
        out = Outcome()
        error = self._check_sync(member_id, generation_id, group_instance_id)
        if error is ErrorCode.NONE and (
            (protocol_type is not None and protocol_type != self.protocol_type)
            or (protocol_name is not None and protocol_name != self.protocol_name)
        ):
            error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if error is not ErrorCode.NONE:
            out.reply = SyncResult(member_id, error)
            return out
        member = self.members[member_id]
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        self.pending_sync.discard(member_id)
        if self.state is GroupState.STABLE:
            out.reply = self._sync_result(member)
            return out
        member.awaiting_sync = True
        out.parked = member_id
        if member_id == self.leader_id and self.storing_generation != generation_id:
            given = dict(assignments)
            self.pending_assignments = {m: given.get(m, b"") for m in self.members}
            self.storing_generation = generation_id
            out.store = self.snapshot(self.pending_assignments)
            out.store_is_sync = True
        return out

    def _check_sync(
        self, member_id: str, generation_id: int, group_instance_id: str | None
    ) -> ErrorCode:
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if self._is_fenced(member_id, group_instance_id):
            return ErrorCode.FENCED_INSTANCE_ID
        if generation_id != self.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if self.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        if self.state is GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    def _sync_result(self, member: Member) -> SyncResult:
        return SyncResult(
            member.member_id,
            ErrorCode.NONE,
            self.protocol_type,
            self.protocol_name,
            member.assignment,
        )

    def on_sync_stored(self, now_ms: int, generation_id: int, error: ErrorCode) -> Outcome:
        """The append of the leader's assignment finished (`error` NONE) or failed."""
        out = Outcome()
        if (
            self.state is not GroupState.COMPLETING_REBALANCE
            or self.generation_id != generation_id
            or self.storing_generation != generation_id
        ):
            return out  # the group moved on; the waiters were already answered
        if error is not ErrorCode.NONE:
            self._fail_pending_syncs(error, out)
            self._prepare_rebalance(now_ms, out)
            return out
        for m in self.members.values():
            m.assignment = self.pending_assignments.get(m.member_id, b"")
        self.storing_generation = None
        self.pending_assignments = {}
        self._transition(GroupState.STABLE, now_ms)
        for m in self.members.values():
            if m.awaiting_sync:
                m.awaiting_sync = False
                out.syncs.append(self._sync_result(m))
        return out

    # --- Heartbeat and LeaveGroup ---------------------------------------------------------

    def heartbeat(
        self, now_ms: int, member_id: str, generation_id: int, group_instance_id: str | None
    ) -> ErrorCode:
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if member_id in self.pending_members:
            return ErrorCode.REBALANCE_IN_PROGRESS
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if self._is_fenced(member_id, group_instance_id):
            return ErrorCode.FENCED_INSTANCE_ID
        if generation_id != self.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if self.state is GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if self.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave(
        self, now_ms: int, leaving: Iterable[tuple[str, str | None]]
    ) -> tuple[list[ErrorCode], Outcome]:
        """Remove members given as (member_id, group_instance_id); one error per member."""
        out = Outcome()
        errors = [
            self._leave_one(member_id, instance_id, out) for member_id, instance_id in leaving
        ]
        if any(e is ErrorCode.NONE for e in errors):
            self._after_removal(now_ms, out)
        return errors, out

    def _leave_one(self, member_id: str, instance_id: str | None, out: Outcome) -> ErrorCode:
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if instance_id is not None:
            known = self.static_members.get(instance_id)
            if known is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if member_id and member_id != known:
                return ErrorCode.FENCED_INSTANCE_ID
            member_id = known
        elif member_id in self.pending_members:
            del self.pending_members[member_id]
            return ErrorCode.NONE
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove_member(member_id, out)
        return ErrorCode.NONE

    # --- timers --------------------------------------------------------------------------

    def poll(self, now_ms: int) -> Outcome:
        """Fire every deadline that is due at `now_ms`."""
        out = Outcome()
        expired = [m for m, t in self.pending_members.items() if t <= now_ms]
        for member_id in expired:
            del self.pending_members[member_id]
        if self.initial_delay_deadline_ms is not None and self.initial_delay_deadline_ms <= now_ms:
            self._fire_initial_delay(now_ms, out)
        window_closed = False
        if self.join_window_deadline_ms is not None and self.join_window_deadline_ms <= now_ms:
            self.join_window_deadline_ms = None
            window_closed = True
        if self.join_deadline_ms is not None and self.join_deadline_ms <= now_ms:
            self._maybe_complete_join(now_ms, out, force=True)
        if self.sync_deadline_ms is not None and self.sync_deadline_ms <= now_ms:
            self._fire_sync_deadline(now_ms, out)
        removed = False
        for m in list(self.members.values()):
            if not (m.awaiting_join or m.awaiting_sync) and m.heartbeat_deadline_ms <= now_ms:
                self._remove_member(m.member_id, out)
                removed = True
        if removed:
            self._after_removal(now_ms, out)
        elif expired or window_closed:
            # A pending member or the join window no longer holds the join up.
            self._maybe_complete_join(now_ms, out)
        return out

    def _fire_initial_delay(self, now_ms: int, out: Outcome) -> None:
        if self.initial_delay_new_member and self.initial_delay_remaining_ms > 0:
            delay_ms = min(self.config.initial_rebalance_delay_ms, self.initial_delay_remaining_ms)
            self.initial_delay_deadline_ms = now_ms + delay_ms
            self.initial_delay_remaining_ms -= delay_ms
            self.initial_delay_new_member = False
            return
        self.initial_delay_deadline_ms = None
        self._maybe_complete_join(now_ms, out, force=True)

    def _fire_sync_deadline(self, now_ms: int, out: Outcome) -> None:
        """Members that never sent SyncGroup within the rebalance timeout are removed."""
        self.sync_deadline_ms = None
        if self.state not in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
            return
        late = [m for m in self.pending_sync if m in self.members]
        self.pending_sync.clear()
        for member_id in late:
            self._remove_member(member_id, out)
        if late:
            self._after_removal(now_ms, out)

    # --- offsets -------------------------------------------------------------------------

    def validate_offset_commit(
        self, now_ms: int, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> ErrorCode:
        """May this commit proceed? Members must match the generation; others need Empty."""
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation_id >= 0 or member_id or group_instance_id is not None:
            if self._is_fenced(member_id, group_instance_id):
                return ErrorCode.FENCED_INSTANCE_ID
            member = self.members.get(member_id)
            if member is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if generation_id != self.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
            if self.state is GroupState.COMPLETING_REBALANCE:
                return ErrorCode.REBALANCE_IN_PROGRESS
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            return ErrorCode.NONE
        if self.state is not GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID  # a simple consumer may not commit for a live group
        return ErrorCode.NONE

    def apply_offsets(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Record commits that are now durable (Rule 4)."""
        self.offsets.update(offsets)

    def fetch_offsets(
        self, partitions: Iterable[TopicPartition] | None
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """Committed offsets; every partition when `partitions` is None, else the ones named."""
        if partitions is None:
            return dict(self.offsets)
        return {tp: self.offsets.get(tp) for tp in partitions}

    def expired_offsets(self, now_ms: int, retention_ms: int) -> list[TopicPartition]:
        """Offsets past retention (KIP-211: clocks start when a consumer group turns Empty)."""
        if self.state is not GroupState.EMPTY or self.commits_in_flight:
            return []
        expired = []
        for tp, o in self.offsets.items():
            if o.expire_timestamp_ms is not None:
                due = now_ms >= o.expire_timestamp_ms
            else:
                base = self.state_timestamp_ms if self.protocol_type else o.commit_timestamp_ms
                due = now_ms - base >= retention_ms
            if due:
                expired.append(tp)
        return expired

    # --- persistence ---------------------------------------------------------------------

    @classmethod
    def from_snapshot(
        cls, group_id: str, snap: GroupSnapshot, config: GroupConfig, now_ms: int
    ) -> Group:
        """Rebuild a group from its stored metadata, as Kafka's loadGroup does."""
        group = cls(group_id, config, now_ms)
        group.generation_id = snap.generation_id
        group.protocol_type = snap.protocol_type or None
        group.protocol_name = snap.protocol_name
        group.leader_id = snap.leader_id
        if snap.current_state_timestamp_ms >= 0:
            group.state_timestamp_ms = snap.current_state_timestamp_ms
        for pm in snap.members:
            member = Member(
                member_id=pm.member_id,
                group_instance_id=pm.group_instance_id,
                client_id=pm.client_id,
                client_host=pm.client_host,
                session_timeout_ms=pm.session_timeout_ms,
                rebalance_timeout_ms=pm.rebalance_timeout_ms,
                protocol_type=snap.protocol_type,
                protocols=((snap.protocol_name or "", pm.subscription),),
                heartbeat_deadline_ms=now_ms + pm.session_timeout_ms,
                assignment=pm.assignment,
            )
            group.members[pm.member_id] = member
            if pm.group_instance_id is not None:
                group.static_members[pm.group_instance_id] = pm.member_id
        if group.members:
            group.state = GroupState.STABLE
            if group.leader_id not in group.members:
                group.leader_id = next(iter(group.members))
        else:
            group.leader_id = None
        return group


class GroupCoordinatorShard:
    """The groups of one `__consumer_offsets` partition (pure; the shell adds I/O)."""

    def __init__(self, partition: int, config: GroupConfig) -> None:
        self.partition = partition
        self.config = config
        self.groups: dict[str, Group] = {}

    @classmethod
    def load(
        cls,
        partition: int,
        records: Iterable[Record],
        config: GroupConfig,
        now_ms: int,
    ) -> GroupCoordinatorShard:
        """Replay the partition's records: last value per key wins, a tombstone deletes."""
        shard = cls(partition, config)
        replayed = replay(records)
        for group_id, snap in replayed.groups.items():
            shard.groups[group_id] = Group.from_snapshot(group_id, snap, config, now_ms)
        for group_id, offsets in replayed.offsets.items():
            shard.get_or_create(group_id, now_ms).offsets.update(offsets)
        return shard

    def get(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def get_or_create(self, group_id: str, now_ms: int) -> Group:
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            group = Group(group_id, self.config, now_ms)
            self.groups[group_id] = group
        return group

    def discard_if_unused(self, group_id: str) -> None:
        """Forget a group that holds nothing (created for a request that then failed)."""
        g = self.groups.get(group_id)
        if (
            g is not None
            and g.state is GroupState.EMPTY
            and g.generation_id == 0
            and not (g.members or g.pending_members or g.offsets or g.commits_in_flight)
        ):
            del self.groups[group_id]

    def next_deadline_ms(self) -> int | None:
        times = [t for g in self.groups.values() if (t := g.next_deadline_ms()) is not None]
        return min(times) if times else None

    def poll(self, now_ms: int) -> list[tuple[Group, Outcome]]:
        """Fire the due deadlines of every group."""
        fired = []
        for group in list(self.groups.values()):
            deadline = group.next_deadline_ms()
            if deadline is not None and deadline <= now_ms:
                fired.append((group, group.poll(now_ms)))
        return fired

    def expire_offsets(self, now_ms: int) -> list[Record]:
        """Drop expired offsets, and Empty groups left with none; return the tombstones.

        Memory changes at once. If the tombstones fail to commit, a later replay brings
        the offsets back and they simply expire again.
        """
        records: list[Record] = []
        for group_id, group in list(self.groups.items()):
            expired = group.expired_offsets(now_ms, self.config.offsets_retention_ms)
            for topic, partition in expired:
                del group.offsets[(topic, partition)]
                records.append(offset_record(group_id, topic, partition, None))
            if (
                group.state is GroupState.EMPTY
                and not group.offsets
                and not group.commits_in_flight
                and not group.pending_members
            ):
                group.state = GroupState.DEAD
                del self.groups[group_id]
                records.append(group_record(group_id, None))
        return records
