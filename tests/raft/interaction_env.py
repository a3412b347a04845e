"""The interaction environment behind tests/raft/testdata/*.txt (etcd's InteractionEnv, ported
in spirit): N RawNodes over MemoryStorage, an explicit in-flight message list, and commands.

Commands (ids are node ids; `[..]` optional):
  add-nodes N [voters=(1,2,3)] [learners=(4)] [index=1] [pre-vote=true] [check-quorum=true]
  add-node ID                       a new, empty node (to be added by a conf change)
  campaign ID | propose ID DATA | propose-conf-change ID add-learner|add-voter|remove NODE
  tick ID [n=1] | tick-election ID | tick-heartbeat ID
  process-ready ID... | deliver-msgs [ID...] [type=MsgApp] [drop=true] | stabilize [ID...]
  isolate ID | cut FROM TO | heal | crash ID | restart ID
  transfer-leadership FROM TO | read-index ID CONTEXT | compact ID INDEX
  raft-log ID | raft-state | status ID | log-level none|info
"""

from __future__ import annotations

import random

from raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    PeerNotFound,
    ProposalDropped,
    RawNode,
    Ready,
    StepLocalMessage,
)
from raft.describe import (
    describe_entry,
    describe_message,
    describe_ready_lines,
)
from tests.raft.datadriven import Directive

_TYPES = {
    "MsgApp": MessageType.APP,
    "MsgAppResp": MessageType.APP_RESP,
    "MsgVote": MessageType.VOTE,
    "MsgVoteResp": MessageType.VOTE_RESP,
    "MsgPreVote": MessageType.PRE_VOTE,
    "MsgPreVoteResp": MessageType.PRE_VOTE_RESP,
    "MsgHeartbeat": MessageType.HEARTBEAT,
    "MsgHeartbeatResp": MessageType.HEARTBEAT_RESP,
    "MsgSnap": MessageType.SNAP,
    "MsgProp": MessageType.PROP,
    "MsgTimeoutNow": MessageType.TIMEOUT_NOW,
}

_CHANGES = {
    "add-learner": ConfChangeType.ADD_LEARNER,
    "add-voter": ConfChangeType.ADD_VOTER,
    "remove": ConfChangeType.REMOVE_NODE,
}


_ALWAYS_PRINT = frozenset({"raft-state", "raft-log", "status"})


class FixedJitter(random.Random):
    """No election jitter: every randomized timeout equals election_ticks, so transcripts do not
    depend on random draws (etcd's env pins the timeout the same way)."""

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return 0


class Recorder:
    """A Logger that writes into the current command's output."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.enabled = True

    def debug(self, msg: str, /) -> None:
        pass

    def info(self, msg: str, /) -> None:
        if self.enabled:
            self.lines.append(f"INFO {msg}")

    def warning(self, msg: str, /) -> None:
        if self.enabled:
            self.lines.append(f"WARN {msg}")


class InteractionEnv:
    def __init__(self) -> None:
        self.log = Recorder()
        self.nodes: dict[int, RawNode | None] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.configs: dict[int, Config] = {}
        self.applied_index: dict[int, int] = {}
        self.conf_states: dict[int, ConfState] = {}
        self.msgs: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.out: list[str] = []
        self.options: dict[str, str] = {}

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, d: Directive) -> str:
        self.out = []
        self.log.lines = self.out  # log lines interleave with command output
        fn = getattr(self, "cmd_" + d.command.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"line {d.line}: unknown command {d.command}")
        fn(d)
        if not self.log.enabled and d.command not in _ALWAYS_PRINT:
            return ""  # setup steps run quietly under `log-level none`
        return "\n".join(self.out)

    # -- nodes ----------------------------------------------------------------------------------
    def _config(self, node_id: int) -> Config:
        opts = self.options
        return Config(
            node_id=node_id,
            election_ticks=int(opts.get("election-ticks", "10")),
            heartbeat_ticks=1,
            pre_vote=opts.get("pre-vote", "true") == "true",
            check_quorum=opts.get("check-quorum", "true") == "true",
            rng=FixedJitter(node_id),
            applied_index=self.applied_index.get(node_id, 0),
            logger=self.log,
            inflight_msgs_max=int(opts.get("inflight", "256")),
            msg_bytes_max=int(opts.get("max-msg-bytes", str(1 << 20))),
        )

    def _start(self, node_id: int) -> None:
        cfg = self._config(node_id)
        self.configs[node_id] = cfg
        self.nodes[node_id] = RawNode(cfg, self.storages[node_id])

    def cmd_add_nodes(self, d: Directive) -> None:
        n = int(d.args[0])
        for k in ("pre-vote", "check-quorum", "election-ticks", "inflight", "max-msg-bytes"):
            if k in d.kwargs:
                self.options[k] = d.kwargs[k]
        start = max(self.nodes, default=0) + 1
        ids = list(range(start, start + n))
        voters = d.list_arg("voters") if "voters" in d.kwargs else ids
        learners = d.list_arg("learners")
        index = d.int_arg("index", 1)
        conf = ConfState(tuple(voters), tuple(learners))
        for node_id in ids:
            self.storages[node_id] = MemoryStorage.bootstrap(conf, index=index, term=1)
            self.applied_index[node_id] = index
            self.conf_states[node_id] = conf
            self._start(node_id)

    def cmd_add_node(self, d: Directive) -> None:
        node_id = d.ids()[0]
        self.storages[node_id] = MemoryStorage()
        self.applied_index[node_id] = 0
        self.conf_states[node_id] = ConfState()
        self._start(node_id)

    def _node(self, node_id: int) -> RawNode:
        raw = self.nodes[node_id]
        assert raw is not None, f"node {node_id} is down"
        return raw

    def cmd_crash(self, d: Directive) -> None:
        for node_id in d.ids():
            self.nodes[node_id] = None
            # In-flight messages to it are lost with its connections.
            self.msgs = [m for m in self.msgs if m.to != node_id]
            self.out.append(f"{node_id} crashed (unpersisted state lost)")

    def cmd_restart(self, d: Directive) -> None:
        for node_id in d.ids():
            self._start(node_id)

    def cmd_log_level(self, d: Directive) -> None:
        self.log.enabled = d.args[0] != "none"

    # -- inputs ---------------------------------------------------------------------------------
    def cmd_campaign(self, d: Directive) -> None:
        self._node(d.ids()[0]).campaign()

    def cmd_propose(self, d: Directive) -> None:
        node_id, data = int(d.args[0]), d.args[1]
        try:
            self._node(node_id).propose(data.encode())
        except ProposalDropped as exc:
            self.out.append(f"raft: proposal dropped: {exc}")

    def cmd_propose_conf_change(self, d: Directive) -> None:
        node_id, kind, target = int(d.args[0]), d.args[1], int(d.args[2])
        try:
            self._node(node_id).propose_conf_change(ConfChange(_CHANGES[kind], target))
        except ProposalDropped as exc:
            self.out.append(f"raft: proposal dropped: {exc}")

    def cmd_tick(self, d: Directive) -> None:
        node_id = d.ids()[0]
        for _ in range(d.int_arg("n", 1)):
            self._node(node_id).tick()

    def cmd_set_randomized_election_timeout(self, d: Directive) -> None:
        """Override one node's jittered timeout (until its next role change)."""
        node_id, ticks = int(d.args[0]), int(d.args[1])
        self._node(node_id).raft.randomized_election_timeout = ticks

    def cmd_tick_election(self, d: Directive) -> None:
        for node_id in d.ids():
            raw = self._node(node_id)
            for _ in range(raw.raft.election_timeout):
                raw.tick()

    def cmd_tick_heartbeat(self, d: Directive) -> None:
        for node_id in d.ids():
            raw = self._node(node_id)
            for _ in range(raw.raft.heartbeat_timeout):
                raw.tick()

    def cmd_transfer_leadership(self, d: Directive) -> None:
        frm, to = int(d.args[0]), int(d.args[1])
        try:
            self._node(frm).transfer_leadership(to)
        except ProposalDropped as exc:
            self.out.append(f"raft: {exc}")

    def cmd_read_index(self, d: Directive) -> None:
        try:
            self._node(int(d.args[0])).read_index(d.args[1].encode())
        except ProposalDropped as exc:
            self.out.append(f"raft: {exc}")

    def cmd_compact(self, d: Directive) -> None:
        node_id, index = int(d.args[0]), int(d.args[1])
        st = self.storages[node_id]
        st.create_snapshot(index, self.conf_states[node_id], f"snap@{index}".encode())
        st.compact(index)
        self.out.append(f"{node_id} compacted: log starts at {st.first_index()}")

    # -- the Ready loop -------------------------------------------------------------------------
    def _process_ready(self, node_id: int) -> bool:
        raw = self.nodes[node_id]
        if raw is None or not raw.has_ready():
            return False
        rd = raw.ready()
        self.out.append(f"> {node_id} handling Ready")
        self.out.extend("  " + line for line in describe_ready_lines(rd))
        self._persist_and_apply(node_id, raw, rd)
        # A partition drops messages as they leave: nothing crossing a cut link is queued.
        # So does a crashed recipient.
        self.msgs.extend(
            m
            for m in rd.messages
            if (m.frm, m.to) not in self.cut and self.nodes.get(m.to) is not None
        )
        raw.advance(rd)
        return True

    def _persist_and_apply(self, node_id: int, raw: RawNode, rd: Ready) -> None:
        st = self.storages[node_id]
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            self.applied_index[node_id] = rd.snapshot.meta.index
            self.conf_states[node_id] = rd.snapshot.meta.conf_state
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for e in rd.committed_entries:
            if e.kind == EntryKind.CONF_CHANGE:
                cs = raw.apply_conf_change(ConfChange.decode(e.data))
                self.conf_states[node_id] = cs
                st.set_conf_state(cs)
            self.applied_index[node_id] = e.index

    def cmd_process_ready(self, d: Directive) -> None:
        for node_id in d.ids():
            if not self._process_ready(node_id):
                self.out.append(f"> {node_id}: no Ready")

    def _deliver_to(self, node_id: int, pred: object = None, drop: bool = False) -> bool:
        mine = [m for m in self.msgs if m.to == node_id and (pred is None or m.type == pred)]
        if not mine:
            return False
        self.msgs = [
            m for m in self.msgs if not (m.to == node_id and (pred is None or m.type == pred))
        ]
        raw = self.nodes.get(node_id)
        verb = "dropping" if drop else "receiving"
        self.out.append(f"> {node_id} {verb} messages")
        for m in mine:
            lost = drop or raw is None or (m.frm, m.to) in self.cut
            suffix = "  (dropped)" if lost and not drop else ""
            self.out.append(f"  {describe_message(m)}{suffix}")
            if lost:
                if m.type == MessageType.SNAP and self.nodes.get(m.frm) is not None:
                    self._node(m.frm).report_snapshot(m.to, False)
                continue
            assert raw is not None
            try:
                raw.step(m)
            except (PeerNotFound, StepLocalMessage) as exc:
                self.out.append(f"  raft: {exc}")
                continue
            if m.type == MessageType.SNAP and self.nodes.get(m.frm) is not None:
                self._node(m.frm).report_snapshot(m.to, True)
        return True

    def cmd_deliver_msgs(self, d: Directive) -> None:
        pred = _TYPES[d.kwargs["type"]] if "type" in d.kwargs else None
        drop = d.kwargs.get("drop") == "true"
        ids = d.ids() or sorted({m.to for m in self.msgs})
        if not any([self._deliver_to(i, pred, drop) for i in ids]):
            self.out.append("no messages")

    def cmd_stabilize(self, d: Directive) -> None:
        ids = d.ids() or sorted(self.nodes)
        for _ in range(200):
            progressed = False
            for node_id in ids:
                progressed |= self._process_ready(node_id)
            for node_id in ids:
                progressed |= self._deliver_to(node_id)
            if not progressed:
                return
        raise AssertionError("stabilize did not converge")

    # -- partitions -----------------------------------------------------------------------------
    def cmd_isolate(self, d: Directive) -> None:
        x = d.ids()[0]
        for y in self.nodes:
            if y != x:
                self.cut |= {(x, y), (y, x)}

    def cmd_cut(self, d: Directive) -> None:
        frm, to = d.ids()
        self.cut.add((frm, to))

    def cmd_heal(self, d: Directive) -> None:
        self.cut = set()

    # -- inspection -----------------------------------------------------------------------------
    def cmd_raft_log(self, d: Directive) -> None:
        node_id = d.ids()[0]
        st = self.storages[node_id]
        raw = self.nodes[node_id]
        if raw is not None:
            log = raw.raft.log
            first, last = log.first_index(), log.last_index()
            ents = log.slice(first, last + 1, 1 << 62)
        else:
            first, last = st.first_index(), st.last_index()
            ents = st.entries(first, last + 1, 1 << 62) if last >= first else []
        if not ents:
            self.out.append(f"log is empty: first index={first}, last index={last}")
        self.out.extend(describe_entry(e) for e in ents)

    def cmd_raft_state(self, d: Directive) -> None:
        for node_id in sorted(self.nodes):
            raw = self.nodes[node_id]
            if raw is None:
                self.out.append(f"{node_id}: DOWN")
                continue
            r = raw.raft
            learner = " (Learner)" if node_id in r.learners else ""
            member = "" if node_id in r.prs else " (Non-member)"
            self.out.append(
                f"{node_id}: {r.role.name} Term:{r.term} Lead:{r.lead} Commit:{r.log.committed}"
                f"{learner}{member}"
            )

    def cmd_status(self, d: Directive) -> None:
        st = self._node(d.ids()[0]).status()
        self.out.append(
            f"{st.node_id}: {st.soft_state.role.name} Term:{st.hard_state.term} "
            f"Commit:{st.hard_state.commit} Applied:{st.applied_index} "
            f"Voters:{list(st.conf_state.voters)} Learners:{list(st.conf_state.learners)}"
        )
        for node_id, pr in sorted(st.progress.items()):
            flags = " learner" if pr.is_learner else ""
            self.out.append(
                f"  {node_id}: {pr.state.name} match={pr.match_index} next={pr.next_index}"
                f" inflight={pr.inflight}{flags}"
            )
