"""The only place where asyncio meets the Raft core: one scheduler drives every group.

Each Raft group (group 0 for metadata, one per hosted partition replica) is a pure
`RawNode` plus its durable storage and a state machine. The driver feeds them time
(one timer ticks every group), peer messages (from the transport) and proposals, and
runs the Ready loop of `raft.ready` for all of them together, once per loop turn:

1. collect a Ready from every group that has one;
2. persist all of them in ONE call on a dedicated storage thread: append entries, save
   term/vote, then fsync each written log once (group commit across partitions: every
   append that arrived while the previous fsync ran is covered by this one). The event
   loop keeps serving clients meanwhile;
3. send their messages (the transport batches them per peer into one frame);
4. apply their committed entries (the state machines resolve produce futures, move high
   watermarks, apply metadata records);
5. advance them, and go round again if more work arrived.

Messages that promise durability (vote grants, append acks) are handed out by the core
only in the Ready whose state they depend on, and step 3 runs after step 2, so no such
promise leaves this node before the fsync that backs it (Raft thesis 3.8).

The storage thread is single: writes of one group stay ordered, and the driver never
hands a group to it twice at once.

Quiescence. A thousand idle partitions must not cost a thousand heartbeats per tick.
A leader whose group is idle (every follower has every entry, everything committed,
nothing proposed for `quiesce_after_ticks`) tells its followers to *quiesce*: all of
them stop ticking the group. Failure detection then moves to the node level: every
node sends one liveness beat per peer per heartbeat interval, and a quiesced follower
whose leader's node has been silent for an election timeout wakes up and ticks again
(and so elects a new leader as usual). Any message, proposal or campaign for a
quiesced group wakes it. This is CockroachDB's scheme, with the transport's liveness
beats standing in for its node-liveness records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from broker.failpoints import DurabilityJournal, Failpoints
from broker.raft_storage import RaftLogStorage
from raft.errors import ProposalDropped, RaftError
from raft.messages import Message, MessageType
from raft.raw_node import RawNode
from raft.ready import Ready
from raft.types import Entry, HardState, Role, Snapshot, SoftState
from storage.config import FsyncPolicy
from storage.hard_state_log import HardStateLog

log = logging.getLogger("raftka.raft")
_T = TypeVar("_T")

#: Ticks between the early campaigns of successive survivors of a dead leader (one
#: tick apart is too close on a loaded machine: both could pre-vote at once and split).
FORGET_STAGGER_TICKS = 2
#: What a re-syncing replica ignores: it must neither vote nor be told to campaign.
_NO_VOTE_WHILE_RESYNCING = frozenset(
    {MessageType.VOTE, MessageType.PRE_VOTE, MessageType.TIMEOUT_NOW}
)
#: How often each group's commit index is saved (it otherwise rides on term changes).
COMMIT_SAVE_INTERVAL_MS = 1000
#: Messages held for a group while its Ready is persisted (more are dropped; Raft retries).
DEFERRED_MESSAGES_MAX = 10_000


class StateMachine(Protocol):
    """What a group's owner (a partition or the metadata controller) implements."""

    def on_soft_state(self, soft: SoftState, term: int) -> None: ...

    def apply(self, entries: list[Entry]) -> None: ...

    def apply_snapshot(self, snapshot: Snapshot, state: bytes) -> None: ...


class Transport(Protocol):
    def send(self, peer_id: int, group_id: int, payload: Any) -> None: ...


@dataclass(slots=True)
class Resync:
    """A replica whose log was lost or quarantined must not vote or campaign until it
    holds everything that could have been committed with its help.

    Raft's safety assumes a voter never forgets what it acknowledged: a replica that
    lost its log could otherwise vote for a candidate missing a committed entry, which
    the two of them would then overwrite. The target is the commit index announced in
    an append from a leader that has committed an entry of its own term (its commit then
    covers everything committed before, by Leader Completeness); the replica is whole
    again once it has persisted and committed up to that index.
    """

    target_index: int = 0
    target_term: int = 0
    dropped_votes: int = 0

    def note_append(self, term: int, commit: int) -> None:
        if commit > self.target_index:
            self.target_index, self.target_term = commit, term

    def done(self, node: RawNode, persisted_index: int) -> bool:
        log = node.raft.log
        index = self.target_index
        if index == 0 or log.committed < index or persisted_index < index:
            return False
        try:
            return log.term(index) == self.target_term
        except RaftError:
            return False  # compacted meanwhile: wait for the next append's commit


@dataclass(eq=False, slots=True)
class RaftGroup:
    group_id: int
    node: RawNode
    storage: RaftLogStorage
    machine: StateMachine
    peers: tuple[int, ...]
    #: Set while its Ready is being persisted: the group must not be touched then.
    busy: bool = False
    removed: bool = False
    persisted_index: int = 0
    #: Futures of callers waiting for the local log to grow (acks=1).
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Inputs that arrived while busy: the core must not be stepped between ready() and
    #: advance(), so they run right after advance().
    deferred: list[Message] = field(default_factory=list)
    idle_waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Proposals enter the log in the order they were made (asyncio.Lock is FIFO-fair).
    propose_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Not ticked while quiesced (see the module docstring).
    quiesced: bool = False
    idle_ticks: int = 0
    #: (dead leader, campaign in ticks) reported while busy: applied after advance().
    forget: tuple[int, int] | None = None
    #: Set while the replica re-syncs after losing records it may have acknowledged.
    resync: Resync | None = None

    @property
    def term(self) -> int:
        return self.node.raft.term

    @property
    def is_leader(self) -> bool:
        return self.node.raft.role == Role.LEADER

    @property
    def leader_id(self) -> int:
        return self.node.raft.lead

    @property
    def commit_index(self) -> int:
        return self.node.raft.log.committed


class RaftDriver:
    """Runs the Ready loop for every group on this node. See the module docstring."""

    def __init__(
        self,
        node_id: int,
        transport: Transport,
        tick_ms: int,
        on_fsync: Callable[[float], None] | None = None,
        *,
        election_ticks: int = 10,
        heartbeat_ticks: int = 2,
        control_group_id: int = -1,
        peers: Callable[[], set[int]] = set,
        clock_s: Callable[[], float] | None = None,
        failpoints: Failpoints | None = None,
        journal: DurabilityJournal | None = None,
        on_election: Callable[[], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.tick_ms = tick_ms
        self.on_fsync = on_fsync
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.control_group_id = control_group_id
        self.peers = peers
        #: Idle ticks before a leader quiesces its group.
        self.quiesce_after_ticks = 2 * election_ticks
        self._clock_s = clock_s
        self.failpoints = failpoints or Failpoints()
        #: Called for every election this node starts (pre-vote or vote), for metrics.
        self.on_election = on_election
        self.journal = journal
        #: When each peer node was last heard from (any message at all).
        self.last_heard_s: dict[int, float] = {}
        #: This process's incarnation (random per start) and the peers' last known ones.
        self.incarnation = random.getrandbits(63)
        self.incarnations: dict[int, int] = {}
        self._ticks = 0
        #: Save every group's commit index this often (see RaftLogStorage.stage_commit).
        self.commit_save_ticks = max(1, COMMIT_SAVE_INTERVAL_MS // self.tick_ms)
        self._commit_save_due = False
        self.groups: dict[int, RaftGroup] = {}
        self._dirty: set[RaftGroup] = set()
        self._wake = asyncio.Event()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-storage")
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.elections = 0
        self.dropped_inbound = 0
        #: Groups re-syncing after a lost log (they neither vote nor campaign meanwhile).
        self.resyncing = 0
        #: While set, no group votes, campaigns or ticks: a node that starts on an empty
        #: disk holds its votes until its peers said whether it was a member before.
        self.votes_held = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name="raft-ready"),
            asyncio.create_task(self._tick_loop(), name="raft-tick"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._io.shutdown(wait=True)
        hard_states = self._stage_commits()  # a restart after a clean stop replays nothing
        if hard_states is not None:
            hard_states.sync()

    # -- groups ---------------------------------------------------------------------------
    def add_group(self, group: RaftGroup) -> None:
        assert group.group_id not in self.groups, group.group_id
        group.persisted_index = group.storage.last_index()
        self.groups[group.group_id] = group
        self.mark(group)

    async def remove_group(self, group_id: int) -> RaftGroup | None:
        group = self.groups.pop(group_id, None)
        if group is None:
            return None
        group.removed = True
        self._dirty.discard(group)
        for fut in group.waiters + group.idle_waiters:
            if not fut.done():
                fut.set_result(None)
        # Let any persist in flight finish before the caller closes the files.
        await asyncio.get_running_loop().run_in_executor(self._io, lambda: None)
        return group

    def mark(self, group: RaftGroup) -> None:
        self._dirty.add(group)
        self._wake.set()

    # -- inputs ---------------------------------------------------------------------------
    def on_incarnation(self, peer_id: int, incarnation: int) -> None:
        """A liveness beat carries the peer process's random incarnation id; a new one
        means it restarted, perhaps with an empty disk: re-probe it in every group we lead."""
        known = self.incarnations.get(peer_id)
        self.incarnations[peer_id] = incarnation
        if known is None or known == incarnation:
            return
        for group in self.groups.values():
            if peer_id in group.peers and group.is_leader and not group.busy:
                group.node.reset_peer_progress(peer_id)
                self.wake(group)
                self.mark(group)

    def on_peer_lost(self, peer_id: int) -> None:
        """The peer's process closed its connection to us: it exited or restarted.

        In every group it leads here, forget it and campaign within a few ticks instead
        of a randomized election timeout (0.5-1 s by default): this is most of a SIGKILLed
        leader's failover time. The survivors campaign at different ticks, staggered by
        their rank rotated by group id, so they do not split the vote and new leaders
        spread over the nodes. PreVote keeps this harmless when the detector is wrong.
        """
        for group in self.groups.values():
            raft = group.node.raft
            if raft.lead != peer_id or raft.role != Role.FOLLOWER or group.removed:
                continue
            if group.resync is not None or self.votes_held:
                continue  # it may not campaign yet
            survivors = sorted({self.node_id, *group.peers} - {peer_id})
            rank = (survivors.index(self.node_id) - group.group_id) % len(survivors)
            ticks = 1 + FORGET_STAGGER_TICKS * rank
            self.wake(group)
            if group.busy:
                group.forget = (peer_id, ticks)
                continue
            group.node.forget_leader(peer_id, ticks)
            self.mark(group)

    def require_resync(self, group: RaftGroup) -> None:
        """The group's replica lost its log: no votes, campaigns or ticks until it has
        caught up (see `Resync`)."""
        voters = len(group.peers) + 1
        if voters < 2 or group.resync is not None:
            return  # a lone replica has nobody to copy from: it must lead what it has
        if 2 * (voters // 2 + 1) - 1 > voters:
            # With an even number of voters, every election quorum that includes this
            # replica also holds a replica from every commit quorum: its vote is safe.
            return
        group.resync = Resync()
        self.resyncing += 1

    def heard_from(self, peer_id: int) -> None:
        """Any traffic from a peer proves its node is alive (liveness for quiescence)."""
        self.last_heard_s[peer_id] = self._now_s()

    def _now_s(self) -> float:
        return self._clock_s() if self._clock_s is not None else asyncio.get_running_loop().time()

    def wake(self, group: RaftGroup) -> None:
        """Activity on the group: tick it again and restart its idle count."""
        group.quiesced = False
        group.idle_ticks = 0

    def on_quiesce(self, from_id: int, group_id: int, term: int, commit: int) -> None:
        """The leader of `group_id` asks this follower to stop ticking it."""
        group = self.groups.get(group_id)
        if group is None or group.busy:
            return
        raft = group.node.raft
        caught_up = raft.log.committed >= commit and raft.log.last_index() == commit
        if raft.term == term and raft.lead == from_id and raft.role != Role.LEADER and caught_up:
            group.quiesced = True

    def step(self, from_id: int, group_id: int, payload: Any) -> None:
        """An inbound message from the transport."""
        group = self.groups.get(group_id)
        if group is None:
            self.dropped_inbound += 1  # not (yet) hosted here; Raft retries
            return
        try:
            message = Message.from_wire(payload)
            if message.frm != from_id:
                raise RaftError(f"message claims sender {message.frm} on node {from_id}'s link")
            if (group.resync is not None or self.votes_held) and not self._resync_filter(
                group, message
            ):
                return
            if message.type != MessageType.HEARTBEAT_RESP:
                # The answer to a leader's last heartbeat must not undo its quiescence.
                self.wake(group)
            if group.busy:
                if len(group.deferred) >= DEFERRED_MESSAGES_MAX:
                    self.dropped_inbound += 1
                    return
                group.deferred.append(message)
                return
            group.node.step(message)
        except RaftError as error:
            log.warning("dropped raft message group=%d from=%d: %s", group_id, from_id, error)
            return
        self.mark(group)

    @staticmethod
    def _resync_filter(group: RaftGroup, message: Message) -> bool:
        """While re-syncing: drop vote requests and campaign orders, note leaders' commits."""
        resync = group.resync
        if message.type in _NO_VOTE_WHILE_RESYNCING:
            if resync is not None:
                resync.dropped_votes += 1
            return False
        if message.type == MessageType.APP and resync is not None:
            resync.note_append(message.term, message.commit)
        return True

    async def propose(self, group: RaftGroup, datas: list[bytes]) -> tuple[int, int]:
        """Append data entries on the leader; returns (last index, term). Raises ProposalDropped.

        Waits while the group's previous Ready is being persisted: those entries could
        not join that fsync anyway, and the core must not be stepped meanwhile. Refuses
        once this node no longer leads: a follower's core would forward the entries to
        the new leader, past every check the caller made as leader (an idempotent
        producer's batch would be appended twice).
        """
        async with group.propose_lock:
            await self.until_idle(group)
            node = group.node
            if node.raft.role != Role.LEADER:
                raise ProposalDropped("this node no longer leads the group")
            self.wake(group)
            node.propose_many(datas)
            self.mark(group)
            return node.raft.log.last_index(), node.raft.term

    async def until_idle(self, group: RaftGroup) -> None:
        while group.busy and not group.removed:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            group.idle_waiters.append(fut)
            await fut

    def campaign(self, group: RaftGroup) -> None:
        assert not group.busy
        if group.resync is not None or self.votes_held:
            return  # it may not lead before it holds what it lost
        self.wake(group)
        group.node.campaign()
        self.mark(group)

    def campaign_soon(self, group: RaftGroup, within_ticks: int) -> None:
        """If the group knows no leader, campaign within `within_ticks` ticks (PreVote)."""
        if group.busy or group.resync is not None or self.votes_held:
            return
        self.wake(group)
        group.node.campaign_soon(within_ticks)
        self.mark(group)

    def transfer_leadership(self, group: RaftGroup, to: int) -> None:
        assert not group.busy
        self.wake(group)
        group.node.transfer_leadership(to)
        self.mark(group)

    def report_unreachable(self, peer_id: int) -> None:
        for group in self.groups.values():
            if peer_id in group.peers and not group.busy:
                group.node.report_unreachable(peer_id)
                self.mark(group)

    async def wait_persisted(self, group: RaftGroup, index: int) -> None:
        """Resolve once the local log holds `index` durably (acks=1 uses it)."""
        while group.persisted_index < index and not group.removed:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            group.waiters.append(fut)
            await fut

    # -- the loops ------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        interval_s = self.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stopping:
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self._ticks += 1
            if self._ticks % self.commit_save_ticks == 0:
                self._commit_save_due = True
                self._wake.set()
            beat = self._ticks % self.heartbeat_ticks == 0
            if beat:
                self._send_liveness()
            silent = self._silent_peers() if beat else set()
            for group in list(self.groups.values()) if not self.votes_held else ():
                if group.busy or group.resync is not None:
                    # Busy: it ticks again next time (a missed tick only delays timers).
                    # Re-syncing: a follower's ticks only time elections it may not start.
                    continue
                if group.quiesced:
                    if group.node.raft.lead not in silent:
                        continue
                    group.quiesced = False  # the leader's node went quiet: resume timers
                group.node.tick()
                if beat:
                    self._maybe_quiesce(group)
                if group.node.has_ready():
                    self._dirty.add(group)
            if self._dirty:
                self._wake.set()
            if loop.time() - next_at > 10 * interval_s:
                next_at = loop.time()  # we fell far behind: do not try to catch up in a burst

    async def _save_commits(self) -> None:
        """Between Readys (no group busy): stage every group's durable commit index and
        sync the node's hard-state log once."""
        self._commit_save_due = False
        hard_states = self._stage_commits()
        if hard_states is not None:
            await asyncio.get_running_loop().run_in_executor(self._io, hard_states.sync)

    def _stage_commits(self) -> HardStateLog | None:
        staged = None
        for group in self.groups.values():
            if group.removed or group.busy:
                continue  # its Ready may be half persisted; the next save takes it
            if group.storage.stage_commit(group.persisted_index):
                staged = group.storage.hard_states
        return staged

    def _send_liveness(self) -> None:
        for peer in self.peers():
            self.transport.send(peer, self.control_group_id, ["alive", self.incarnation])

    def _silent_peers(self) -> set[int]:
        """Peers not heard from for two election timeouts.

        Two, not one: a node whose event loop is briefly overloaded (hundreds of groups
        electing at once) must not look dead, or its quiesced followers would all wake
        and start elections that load it further.
        """
        now = self._now_s()
        timeout_s = 2 * self.election_ticks * self.tick_ms / 1000
        return {p for p in self.peers() if now - self.last_heard_s.get(p, 0.0) > timeout_s}

    def _maybe_quiesce(self, group: RaftGroup) -> None:
        """On an idle leader whose followers hold everything: stop heartbeating it."""
        raft = group.node.raft
        if raft.role != Role.LEADER or not group.peers:
            return
        group.idle_ticks += self.heartbeat_ticks
        if group.idle_ticks < self.quiesce_after_ticks:
            return
        last = raft.log.last_index()
        if raft.log.committed != last or raft.lead_transferee:
            return
        for peer in group.peers:
            progress = raft.prs.get(peer)
            if progress is None or progress.match_index != last:
                return
        group.quiesced = True
        message = ["quiesce", group.group_id, raft.term, last]
        for peer in group.peers:
            self.transport.send(peer, self.control_group_id, message)

    async def _ready_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty and not self._stopping:
                if self._commit_save_due:
                    await self._save_commits()
                batch = self._collect()
                if not batch:
                    break
                states, to_sync, hard_states = _write(batch)
                if to_sync or hard_states:
                    self.failpoints.hit("append_before_fsync")
                    started = loop.time()
                    await loop.run_in_executor(
                        self._io, _sync, to_sync, hard_states, self.failpoints, self.journal
                    )
                    if self.on_fsync is not None:
                        self.on_fsync(loop.time() - started)
                    self.failpoints.hit("fsync_before_ack")
                for (group, rd), state in zip(batch, states):
                    self._finish(group, rd, state)
            if self._commit_save_due and not self._stopping:
                await self._save_commits()

    @staticmethod
    def _release_cache(group: RaftGroup) -> None:
        """Applied entries that every follower holds will not be read again soon."""
        raft = group.node.raft
        upto = raft.log.applied
        if raft.role == Role.LEADER:
            for progress in raft.prs.values():
                upto = min(upto, progress.match_index)
        group.storage.release_cache(upto)

    def _collect(self) -> list[tuple[RaftGroup, Ready]]:
        batch = []
        dirty, self._dirty = self._dirty, set()
        for group in dirty:
            if group.removed:
                continue
            if group.node.has_ready():
                group.busy = True
                batch.append((group, group.node.ready()))
        return batch

    def _finish(self, group: RaftGroup, rd: Ready, snapshot_state: bytes) -> None:
        group.busy = False
        if group.removed:
            return
        if rd.entries or rd.committed_entries or rd.soft_state is not None:
            group.idle_ticks = 0
        if rd.entries:
            group.persisted_index = rd.entries[-1].index
        elif rd.snapshot is not None:
            group.persisted_index = rd.snapshot.meta.index
        if group.waiters:
            waiters, group.waiters = group.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        send = self.transport.send
        for m in rd.messages:
            if m.to != self.node_id:
                send(m.to, group.group_id, m.to_wire())
        if rd.soft_state is not None:
            if rd.soft_state.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
                self.elections += 1
                if self.on_election is not None:
                    self.on_election()
            elif rd.soft_state.role == Role.LEADER:
                # One parseable line per won election: the chaos checker reads these
                # from every node's log to check election safety (one leader per term).
                log.info(
                    "raft-leader group=%d term=%d node=%d",
                    group.group_id,
                    group.node.raft.term,
                    self.node_id,
                )
            group.machine.on_soft_state(rd.soft_state, group.node.raft.term)
        if rd.snapshot is not None:
            group.machine.apply_snapshot(rd.snapshot, snapshot_state)
        if rd.committed_entries:
            group.machine.apply(rd.committed_entries)
        group.node.advance(rd)
        if rd.committed_entries:
            self._release_cache(group)
        if group.deferred:
            deferred, group.deferred = group.deferred, []
            for message in deferred:
                try:
                    group.node.step(message)
                except RaftError as error:
                    log.warning("dropped raft message group=%d: %s", group.group_id, error)
        if group.resync is not None and group.resync.done(group.node, group.persisted_index):
            log.warning(
                "raft group=%d re-synced up to index %d (term %d); it votes again",
                group.group_id,
                group.resync.target_index,
                group.resync.target_term,
            )
            group.resync = None
            self.resyncing -= 1
        if group.forget is not None:
            leader, ticks = group.forget
            group.forget = None
            group.node.forget_leader(leader, ticks)
        if group.idle_waiters:
            idle, group.idle_waiters = group.idle_waiters, []
            for fut in idle:
                if not fut.done():
                    fut.set_result(None)
        if group.node.has_ready():
            self._dirty.add(group)


def _write(
    batch: list[tuple[RaftGroup, Ready]],
) -> tuple[list[bytes], list[RaftLogStorage], list[tuple[RaftLogStorage, HardState]]]:
    """On the event loop: install snapshots and append entries (page-cache writes).

    The loop thread is the only owner of every log (storage requires one owner); only
    the fsyncs and the small hard-state files go to the storage thread, in `_sync`.
    """
    states: list[bytes] = []
    to_sync: list[RaftLogStorage] = []
    hard_states: list[tuple[RaftLogStorage, HardState]] = []
    for group, rd in batch:
        storage = group.storage
        state = b""
        if rd.snapshot is not None:
            state = storage.install_snapshot(rd.snapshot)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None and storage.stage_hard_state(rd.hard_state):
            hard_states.append((storage, rd.hard_state))
        if rd.must_sync and (rd.entries or rd.snapshot is not None):
            to_sync.append(storage)
        states.append(state)
    return states, to_sync, hard_states


def _sync(
    to_sync: list[RaftLogStorage],
    hard_states: list[tuple[RaftLogStorage, HardState]],
    failpoints: Failpoints,
    journal: DurabilityJournal | None,
) -> None:
    """On the storage thread: one fsync per written log, then term/vote files."""
    for storage in to_sync:
        storage.sync()
    if journal is not None and to_sync:
        # With fsync=never a sync only counts bytes as flushed: nothing became durable.
        journal.record(
            (segment.log_path, segment.size_bytes)
            for storage in to_sync
            if storage.log.config.fsync_policy is FsyncPolicy.ALWAYS
            for segment in storage.log.segments
        )
    if hard_states:
        # Every group shares the node's hard-state log: one append and one fsync for all.
        failpoints.hit("vote_before_persist")
        hard_states[0][0].hard_states.sync()
        failpoints.hit("vote_after_persist")
