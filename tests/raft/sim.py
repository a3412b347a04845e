"""Seeded deterministic simulation of a Raft cluster (VOPR style), with invariants checked
after every step.

One `random.Random(seed)` drives everything; sub-generators for the fault profile, the
network, the workload and each node's election jitter are derived from it in a fixed order,
and iteration is always sorted by node id, so a seed replays exactly.

Model
-----
* Time: virtual. A tick is `SUBSTEPS` sub-steps; messages take 1..`delay_max` sub-steps, so
  they interleave, reorder and can arrive after several ticks.
* Network (per seed, swarm style): loss, duplication, delay; partitions that isolate one
  node, split a minority from a majority, or cut single directions (one-way).
* Disk: `MemoryStorage` is what survived. A crash can strike while a Ready is being
  persisted: only a prefix of its entries (and maybe its hard state) reach the disk, nothing
  of it is sent or applied. The state machine (applied entries + conf state) is checkpointed
  with each apply step, as the broker's partition log would be.
* Workload: proposals at random nodes, membership changes (add learner, promote, remove),
  leader transfers, log compaction (followers behind the log start need snapshots).

Invariants (checked as events happen and after every sub-step)
-------------------------------------------------------------
election safety, log matching (inductively: an (index, term) pair always names the same entry
with the same predecessor term), leader completeness (a new leader holds every applied entry),
state machine safety (one entry per applied index, across nodes and snapshots), committed
entries durable on a quorum, monotonic commit and applied index per node incarnation, no
acknowledged proposal lost; and liveness: once faults stop, a leader is elected and a new
proposal is applied by every member within `LIVENESS_TICKS` ticks.

    python -m tests.raft.sim --seeds 1000          # fresh random seeds
    python -m tests.raft.sim --seed 42 --verbose   # replay one seed with a trace
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from dataclasses import dataclass, field

from raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    PeerNotFound,
    ProposalDropped,
    RawNode,
    Ready,
    Role,
)
from raft.describe import describe_message, describe_ready

SUBSTEPS = 5
ELECTION_TICKS = 10
LIVENESS_TICKS = 30 * ELECTION_TICKS


class InvariantViolation(AssertionError):
    pass


@dataclass
class Profile:
    """The fault mix one seed runs with (swarm testing: each seed picks its own)."""

    n: int
    loss: float
    dup: float
    delay_max: int
    partition_rate: float
    crash_rate: float
    propose_rate: float
    conf_change_rate: float
    transfer_rate: float
    compact_rate: float
    fault_ticks: int
    pre_vote: bool
    check_quorum: bool
    #: Chance per tick that a live follower is told its leader is dead (forget_leader)
    #: although it may be alive: the broker's closed-connection detector can be wrong.
    forget_rate: float

    @staticmethod
    def draw(rng: random.Random, fault_ticks: int) -> Profile:
        return Profile(
            n=rng.choice((3, 5)),
            loss=rng.choice((0.0, 0.02, 0.1, 0.25)),
            dup=rng.choice((0.0, 0.02, 0.1)),
            delay_max=rng.choice((1, 3, 8, 20)),
            partition_rate=rng.choice((0.0, 0.01, 0.03)),
            crash_rate=rng.choice((0.0, 0.003, 0.01)),
            propose_rate=rng.choice((0.1, 0.3, 0.8)),
            conf_change_rate=rng.choice((0.0, 0.005, 0.02)),
            transfer_rate=rng.choice((0.0, 0.002, 0.01)),
            compact_rate=rng.choice((0.0, 0.01, 0.05)),
            fault_ticks=fault_ticks,
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            forget_rate=rng.choice((0.0, 0.002, 0.01)),
        )


@dataclass
class SimNode:
    node_id: int
    storage: MemoryStorage
    raw: RawNode | None
    #: Checkpointed state machine: applied entries as (index, term, kind, data).
    applied: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    applied_index: int = 0
    conf_state: ConfState = field(default_factory=ConfState)
    #: Earlier configurations, newest last: a leader may commit under a config up to a couple
    #: of changes behind the one in force where the entry is applied.
    conf_history: list[ConfState] = field(default_factory=list)
    #: Highest commit index seen from this incarnation (monotonic check).
    commit_seen: int = 0
    incarnation: int = 0


class Sim:
    def __init__(self, seed: int, fault_ticks: int = 300, verbose: bool = False) -> None:
        self.seed = seed
        root = random.Random(seed)
        self.profile = Profile.draw(random.Random(root.getrandbits(64)), fault_ticks)
        self.net_rng = random.Random(root.getrandbits(64))
        self.work_rng = random.Random(root.getrandbits(64))
        self.fault_rng = random.Random(root.getrandbits(64))
        self.node_seeds = [root.getrandbits(64) for _ in range(8)]
        self.verbose = verbose
        p = self.profile
        self.all_ids = list(range(1, p.n + 2))  # one spare node for membership changes
        initial = ConfState(voters=tuple(range(1, p.n + 1)))
        self.nodes: dict[int, SimNode] = {}
        for node_id in self.all_ids:
            if node_id <= p.n:
                st = MemoryStorage.bootstrap(initial)
                node = SimNode(node_id, st, None, conf_state=initial, applied_index=1)
            else:
                node = SimNode(node_id, MemoryStorage(), None)
            self.nodes[node_id] = node
            self._start(node_id)
        self.now = 0  # sub-steps
        self.network: list[tuple[int, int, Message]] = []  # (due, seq, msg)
        self.seq = 0
        self.cut: set[tuple[int, int]] = set()
        self.faults_on = True
        self.loss = p.loss
        self.dup = p.dup
        # Checker state.
        self.leader_of_term: dict[int, int] = {}
        self.entry_ids: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.applied_at: dict[int, tuple[int, int, bytes]] = {}
        self.acked: set[bytes] = set()
        self.proposed = 0
        self.snapshots: dict[bytes, list[tuple[int, int, int, bytes]]] = {b"": []}
        self.trace: list[str] = []
        #: Ticks from heal until a fresh proposal was applied by every member.
        self.liveness_ticks = -1

    # -- node lifecycle -------------------------------------------------------------------------
    def _start(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.incarnation += 1
        snap = node.storage.snapshot()
        if snap.meta.index > node.applied_index:
            # The disk holds a snapshot the state machine never loaded (crash in between):
            # recovery starts the state machine from it, as a real driver must.
            node.applied = list(self.snapshots[snap.data])
            node.applied_index = snap.meta.index
            node.conf_state = snap.meta.conf_state
        p = self.profile
        cfg = Config(
            node_id=node_id,
            election_ticks=ELECTION_TICKS,
            heartbeat_ticks=1,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
            inflight_msgs_max=8,
            msg_bytes_max=256,
            rng=random.Random(self.node_seeds[node_id] + node.incarnation),
            applied_index=node.applied_index,
        )
        node.raw = RawNode(cfg, node.storage)
        node.commit_seen = node.storage.hard_state.commit

    def _crash(self, node_id: int) -> None:
        self._log(f"CRASH {node_id}")
        self.nodes[node_id].raw = None

    def _log(self, line: str) -> None:
        if self.verbose:
            print(f"[{self.now:>6}] {line}")
        else:
            self.trace.append(f"[{self.now:>6}] {line}")
            if len(self.trace) > 400:
                del self.trace[:200]

    # -- network ----------------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        if self.faults_on and self.net_rng.random() < self.loss:
            self._dropped(m)
            return
        copies = 2 if self.faults_on and self.net_rng.random() < self.dup else 1
        for _ in range(copies):
            delay = self.net_rng.randint(1, self.profile.delay_max)
            self.seq += 1
            self.network.append((self.now + delay, self.seq, m))

    def _dropped(self, m: Message) -> None:
        # The transport tells the sender what it could not deliver, as the broker's would.
        sender = self.nodes[m.frm].raw
        if sender is None:
            return
        if m.type == MessageType.SNAP:
            sender.report_snapshot(m.to, False)
        elif m.type == MessageType.APP and self.net_rng.random() < 0.3:
            sender.report_unreachable(m.to)

    def _deliver_due(self) -> None:
        due = [x for x in self.network if x[0] <= self.now]
        if not due:
            return
        self.network = [x for x in self.network if x[0] > self.now]
        due.sort(key=lambda x: (x[0], x[1]))
        for _, _, m in due:
            if (m.frm, m.to) in self.cut:
                self._dropped(m)
                continue
            node = self.nodes[m.to]
            if node.raw is None:
                self._dropped(m)
                continue
            if self.verbose:
                self._log("deliver " + describe_message(m))
            try:
                node.raw.step(m)
            except PeerNotFound:
                continue
            if m.type == MessageType.SNAP:
                sender = self.nodes[m.frm].raw
                if sender is not None:
                    sender.report_snapshot(m.to, True)

    # -- the driver: persist -> send -> apply -> advance ----------------------------------------------
    def _process_ready(self, node_id: int) -> None:
        node = self.nodes[node_id]
        raw = node.raw
        if raw is None or not raw.has_ready():
            return
        rd = raw.ready()
        if self.verbose:
            self._log(f"{node_id} ready: {describe_ready(rd)}")
        if self.faults_on and self.fault_rng.random() < self.profile.crash_rate / 4:
            self._persist_partial(node, rd)
            self._crash(node_id)
            return
        self._persist(node, rd)
        self._check_ready(node, rd)
        for m in rd.messages:
            self._send(m)
        self._apply(node, rd)
        raw.advance(rd)

    def _persist_partial(self, node: SimNode, rd: Ready) -> None:
        """A crash during the write: a prefix of the entries survives, maybe the hard state."""
        st = node.storage
        if rd.snapshot is not None:
            if self.fault_rng.random() < 0.5:
                st.apply_snapshot(rd.snapshot)
            else:
                return
        k = self.fault_rng.randint(0, len(rd.entries))
        if k:
            self._register_entries(node, rd.entries[:k])
            st.append(rd.entries[:k])
        if k == len(rd.entries) and rd.hard_state is not None and self.fault_rng.random() < 0.5:
            st.set_hard_state(rd.hard_state)
        self._log(f"{node.node_id} crashed while persisting: kept {k}/{len(rd.entries)} entries")

    def _persist(self, node: SimNode, rd: Ready) -> None:
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            self._register_entries(node, rd.entries)
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        raw = node.raw
        assert raw is not None
        if rd.snapshot is not None:
            image = self.snapshots[rd.snapshot.data]
            self._check_snapshot_image(image)
            node.applied = list(image)
            node.applied_index = rd.snapshot.meta.index
            node.conf_state = rd.snapshot.meta.conf_state
        for e in rd.committed_entries:
            if e.index != node.applied_index + 1:
                self._fail(f"{node.node_id} applies {e.index} after {node.applied_index}")
            self._check_apply(node, e)
            if e.kind == EntryKind.CONF_CHANGE:
                node.conf_history = [*node.conf_history[-2:], node.conf_state]
                node.conf_state = raw.apply_conf_change(ConfChange.decode(e.data))
                node.storage.set_conf_state(node.conf_state)
            node.applied.append((e.index, e.term, int(e.kind), e.data))
            node.applied_index = e.index
            if e.kind == EntryKind.DATA:
                self.acked.add(e.data)
        if (
            rd.committed_entries
            and self.faults_on
            and self.work_rng.random() < self.profile.compact_rate
        ):
            self._compact(node)

    def _compact(self, node: SimNode) -> None:
        st = node.storage
        index = node.applied_index
        if index < st.first_index() or index > st.last_index():
            return
        key = f"{node.node_id}:{index}:{len(self.snapshots)}".encode()
        self.snapshots[key] = list(node.applied)
        st.create_snapshot(index, node.conf_state, key)
        keep = self.work_rng.choice((0, 2, 10))
        st.compact(max(st.first_index() - 1, index - keep))
        self._log(f"{node.node_id} compacted up to {index - keep} (snapshot at {index})")

    # -- invariant checks -------------------------------------------------------------------------------
    def _fail(self, what: str) -> None:
        raise InvariantViolation(what)

    def _register_entries(self, node: SimNode, entries: list[Entry]) -> None:
        """Log matching, inductively: (index, term) always names the same entry and the same
        predecessor term, in every log, forever."""
        st = node.storage
        first = entries[0].index
        prev_term: int | None
        if first - 1 >= st.first_index() - 1 and first - 1 <= st.last_index():
            prev_term = st.term(first - 1)
        else:
            prev_term = None
        for e in entries:
            key = (e.index, e.term)
            value = (int(e.kind), e.data, -1 if prev_term is None else prev_term)
            seen = self.entry_ids.get(key)
            if seen is None:
                if prev_term is not None:
                    self.entry_ids[key] = value
            elif prev_term is not None and seen != value:
                self._fail(f"log matching: entry {key} is {value} on {node.node_id}, was {seen}")
            prev_term = e.term

    def _check_apply(self, node: SimNode, e: Entry) -> None:
        prior = self.applied_at.get(e.index)
        mine = (e.term, int(e.kind), e.data)
        if prior is None:
            self.applied_at[e.index] = mine
            self._check_durable_on_quorum(node, e)
        elif prior != mine:
            self._fail(f"state machine safety: index {e.index} applied as {mine}, was {prior}")

    def _check_snapshot_image(self, image: list[tuple[int, int, int, bytes]]) -> None:
        for index, term, kind, data in image:
            prior = self.applied_at.get(index)
            if prior is not None and prior != (term, kind, data):
                self._fail(f"state machine safety: snapshot holds {index}={term} differently")

    def _check_durable_on_quorum(self, node: SimNode, e: Entry) -> None:
        durable_on = set()
        for v in self.all_ids:
            st = self.nodes[v].storage
            if e.index < st.first_index():
                durable_on.add(v)  # covered by a snapshot, which holds only committed entries
            elif e.index <= st.last_index() and st.term(e.index) == e.term:
                durable_on.add(v)
        for conf in (node.conf_state, *node.conf_history):
            if len(durable_on.intersection(conf.voters)) > len(conf.voters) // 2:
                return
        self._fail(f"entry {e.index}/{e.term} applied but durable only on {sorted(durable_on)}")

    def _check_ready(self, node: SimNode, rd: Ready) -> None:
        hs = rd.hard_state
        if hs is not None:
            if hs.commit < node.commit_seen:
                self._fail(f"{node.node_id} commit went back {node.commit_seen} -> {hs.commit}")
            node.commit_seen = hs.commit
        if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
            self._check_leader_completeness(node)

    def _check_leader_completeness(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        log = raw.raft.log
        first, last = log.first_index(), log.last_index()
        for index, (term, _kind, _data) in self.applied_at.items():
            if index < first:
                continue
            if index > last or log.term(index) != term:
                self._fail(f"leader completeness: new leader {node.node_id} lacks {index}/{term}")

    def _check_step(self) -> None:
        for node_id in self.all_ids:
            raw = self.nodes[node_id].raw
            if raw is None:
                continue
            r = raw.raft
            if r.role == Role.LEADER:
                seen = self.leader_of_term.setdefault(r.term, node_id)
                if seen != node_id:
                    self._fail(f"election safety: {seen} and {node_id} both lead term {r.term}")
            if r.log.committed < self.nodes[node_id].commit_seen:
                self._fail(f"{node_id} commit index went backwards")

    # -- faults and workload ----------------------------------------------------------------------------
    def _members(self) -> list[int]:
        leader = self._leader()
        conf = self.nodes[leader or 1].conf_state
        return sorted({*conf.voters, *conf.learners})

    def _leader(self) -> int | None:
        """The live leader with the highest term, if any."""
        best, best_term = None, -1
        for node_id in self.all_ids:
            raw = self.nodes[node_id].raw
            if raw is not None and raw.raft.role == Role.LEADER and raw.raft.term > best_term:
                best, best_term = node_id, raw.raft.term
        return best

    def _faults(self) -> None:
        p, rng = self.profile, self.fault_rng
        if rng.random() < p.partition_rate:
            self._new_partition()
        for node_id in self.all_ids:
            node = self.nodes[node_id]
            if node.raw is not None and rng.random() < p.crash_rate / 4:
                self._crash(node_id)
                if p.forget_rate:
                    self._forget(node_id)  # the survivors see its connections close
            elif node.raw is None and rng.random() < 0.05:
                self._log(f"RESTART {node_id}")
                self._start(node_id)

        if p.forget_rate and rng.random() < p.forget_rate:
            live = [i for i in self.all_ids if self.nodes[i].raw is not None]
            if live:
                raw = self.nodes[rng.choice(live)].raw
                assert raw is not None
                if raw.raft.lead:
                    self._log(f"FORGET {raw.raft.id} its leader {raw.raft.lead} (spurious)")
                    raw.forget_leader(raw.raft.lead, campaign_in_ticks=rng.randint(0, 3))

    def _forget(self, dead: int) -> None:
        for node_id in self.all_ids:
            raw = self.nodes[node_id].raw
            if raw is not None and raw.raft.lead == dead:
                ticks = self.fault_rng.randint(1, 4)
                self._log(f"FORGET {node_id} its leader {dead} (campaign in {ticks})")
                raw.forget_leader(dead, campaign_in_ticks=ticks)

    def _new_partition(self) -> None:
        rng, ids = self.fault_rng, self.all_ids
        self.cut = set()
        mode = rng.choice(("heal", "isolate", "split", "oneway"))
        if mode == "isolate":
            x = rng.choice(ids)
            self.cut = {(x, y) for y in ids if y != x} | {(y, x) for y in ids if y != x}
        elif mode == "split":
            shuffled = ids[:]
            rng.shuffle(shuffled)
            minority = set(shuffled[: len(ids) // 2])
            self.cut = {(a, b) for a in ids for b in ids if (a in minority) != (b in minority)}
        elif mode == "oneway":
            for _ in range(rng.randint(1, 3)):
                a, b = rng.sample(ids, 2)
                self.cut.add((a, b))
        self._log(f"PARTITION {mode} cut={sorted(self.cut)}")

    def _workload(self) -> None:
        p, rng = self.profile, self.work_rng
        if rng.random() < p.propose_rate:
            target = rng.choice(self.all_ids)
            raw = self.nodes[target].raw
            if raw is not None:
                self.proposed += 1
                value = f"v{self.proposed}".encode()
                with contextlib.suppress(ProposalDropped):
                    raw.propose(value)
        leader = self._leader()
        if leader is None or not self.faults_on:
            return  # once faults stop, only proposals go on
        raw = self.nodes[leader].raw
        assert raw is not None
        if rng.random() < p.conf_change_rate:
            change = self._pick_conf_change(leader)
            if change is not None:
                try:
                    raw.propose_conf_change(change)
                    self._log(f"PROPOSE conf change {change.type.name} {change.node_id}")
                except ProposalDropped:
                    pass
        if rng.random() < p.transfer_rate:
            voters = [v for v in self.nodes[leader].conf_state.voters if v != leader]
            if voters:
                to = rng.choice(voters)
                self._log(f"TRANSFER {leader} -> {to}")
                raw.transfer_leadership(to)

    def _pick_conf_change(self, leader: int) -> ConfChange | None:
        conf = self.nodes[leader].conf_state
        rng = self.work_rng
        outsiders = [i for i in self.all_ids if i not in conf.voters and i not in conf.learners]
        if conf.learners:
            return ConfChange(ConfChangeType.ADD_VOTER, rng.choice(conf.learners))
        if outsiders and len(conf.voters) <= self.profile.n:
            return ConfChange(ConfChangeType.ADD_LEARNER, rng.choice(outsiders))
        if len(conf.voters) > self.profile.n:
            return ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(conf.voters))
        return None

    # -- main loop -------------------------------------------------------------------------------------
    def _substep(self) -> None:
        self._deliver_due()
        for node_id in self.all_ids:
            self._process_ready(node_id)
        self._check_step()
        self.now += 1

    def _tick(self) -> None:
        for node_id in self.all_ids:
            raw = self.nodes[node_id].raw
            if raw is not None:
                raw.tick()
        if self.faults_on:
            self._faults()
        self._workload()
        for _ in range(SUBSTEPS):
            self._substep()

    def run(self) -> None:
        for _ in range(self.profile.fault_ticks):
            self._tick()
        self._heal()
        self._check_liveness()

    def _heal(self) -> None:
        self._log("HEAL: faults stop")
        self.faults_on = False
        self.cut = set()
        for node_id in self.all_ids:
            if self.nodes[node_id].raw is None:
                self._start(node_id)

    def _check_liveness(self) -> None:
        probe = b"liveness-probe"
        proposed_at = None
        for tick in range(LIVENESS_TICKS):
            self._tick()
            leader = self._leader()
            if leader is None:
                continue
            if proposed_at is None or tick - proposed_at > 5 * ELECTION_TICKS:
                try:
                    self.nodes[leader].raw.propose(probe)  # type: ignore[union-attr]
                    proposed_at = tick
                except ProposalDropped:
                    continue
            members = self._members()
            if all(probe in self._applied_data(m) for m in members):
                # Everything applied anywhere (and so acknowledged) must reach every member.
                applied_max = max(self.applied_at)
                if all(self.nodes[m].applied_index >= applied_max for m in members):
                    self._check_no_ack_lost(members)
                    self.liveness_ticks = tick + 1
                    return
        self._fail(f"liveness: no leader committed a proposal {LIVENESS_TICKS} ticks after heal")

    def _applied_data(self, node_id: int) -> set[bytes]:
        return {d for _i, _t, k, d in self.nodes[node_id].applied if k == EntryKind.DATA}

    def _check_no_ack_lost(self, members: list[int]) -> None:
        for m in members:
            missing = self.acked - self._applied_data(m)
            if missing:
                self._fail(f"acknowledged proposals lost on {m}: {sorted(missing)[:5]}")


def replay_command(seed: int) -> str:
    return f"python -m tests.raft.sim --seed {seed} --verbose"


def run_seed(seed: int, fault_ticks: int = 300, verbose: bool = False) -> Sim:
    sim = Sim(seed, fault_ticks=fault_ticks, verbose=verbose)
    try:
        sim.run()
    except Exception as exc:
        tail = "\n".join(sim.trace[-40:])
        raise InvariantViolation(
            f"seed {seed} failed: {exc!r}\nprofile: {sim.profile}\n"
            f"last events:\n{tail}\nreplay: {replay_command(seed)}"
        ) from exc
    return sim


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Seeded Raft simulation")
    ap.add_argument("--seeds", type=int, default=100, help="number of fresh random seeds")
    ap.add_argument("--seed", type=int, help="replay one seed")
    ap.add_argument("--fault-ticks", type=int, default=300)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.seed is not None:
        seeds = [args.seed]
    else:
        base = random.SystemRandom().getrandbits(32)
        seeds = [base + i for i in range(args.seeds)]
    t0 = time.perf_counter()
    failures = 0
    for i, seed in enumerate(seeds):
        try:
            run_seed(seed, args.fault_ticks, args.verbose)
        except InvariantViolation as exc:
            failures += 1
            print(f"FAIL {exc}", file=sys.stderr)
            print(f"replay: {replay_command(seed)}", file=sys.stderr)
        if (i + 1) % 100 == 0:
            print(f"{i + 1} seeds, {failures} failures, {time.perf_counter() - t0:.0f}s")
    print(f"{len(seeds)} seeds, {failures} failures, {time.perf_counter() - t0:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["InvariantViolation", "Sim", "main", "run_seed"]
