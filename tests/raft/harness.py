"""A synchronous in-memory cluster of RawNodes for tests: a driver per node plus a message list.

Each node follows the Ready contract exactly (persist -> send -> apply -> advance), so tests
that use it also check that the contract is enough. Message delivery is explicit: tests decide
what to deliver, drop or partition.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    RawNode,
    Ready,
    Role,
)
from raft.types import HardState, Snapshot


@dataclass
class Node:
    node_id: int
    storage: MemoryStorage
    raw: RawNode
    config: Config
    #: Entries applied by the state machine, in order (data and no-ops alike).
    applied: list[Entry] = field(default_factory=list)
    conf_state: ConfState = field(default_factory=ConfState)
    applied_index: int = 0

    @property
    def role(self) -> Role:
        return self.raw.raft.role

    @property
    def term(self) -> int:
        return self.raw.raft.term

    @property
    def committed(self) -> int:
        return self.raw.raft.log.committed

    def log_entries(self) -> list[Entry]:
        log = self.raw.raft.log
        first, last = log.first_index(), log.last_index()
        return log.slice(first, last + 1, 1 << 62) if last >= first else []


def make_storage(conf_state: ConfState) -> MemoryStorage:
    storage = MemoryStorage()
    storage.set_conf_state(conf_state)
    return storage


class Cluster:
    """N nodes with a shared in-flight message list."""

    def __init__(
        self,
        voters: Iterable[int] = (1, 2, 3),
        learners: Iterable[int] = (),
        *,
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        seed: int = 0,
        config_hook: Callable[[Config], None] | None = None,
        logger: object = None,
    ) -> None:
        self.conf_state = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.seed = seed
        self.config_hook = config_hook
        self.logger = logger
        self.nodes: dict[int, Node] = {}
        self.msgs: list[Message] = []
        #: Directed links that drop everything: (from, to).
        self.cut_links: set[tuple[int, int]] = set()
        for node_id in (*self.conf_state.voters, *self.conf_state.learners):
            self.add_node(node_id, self.conf_state)

    def config(self, node_id: int, applied_index: int = 0) -> Config:
        cfg = Config(
            node_id=node_id,
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            rng=random.Random(self.seed * 1000 + node_id),
            applied_index=applied_index,
            logger=self.logger,  # type: ignore[arg-type]
        )
        if self.config_hook is not None:
            self.config_hook(cfg)
        return cfg

    def add_node(self, node_id: int, conf_state: ConfState | None = None) -> Node:
        storage = make_storage(conf_state or ConfState())
        cfg = self.config(node_id)
        node = Node(
            node_id, storage, RawNode(cfg, storage), cfg, conf_state=conf_state or ConfState()
        )
        self.nodes[node_id] = node
        return node

    def restart(self, node_id: int) -> Node:
        """Crash and restart: volatile state goes, persisted storage and applied state stay."""
        old = self.nodes[node_id]
        cfg = self.config(node_id, applied_index=old.applied_index)
        node = Node(
            node_id,
            old.storage,
            RawNode(cfg, old.storage),
            cfg,
            old.applied,
            old.conf_state,
            old.applied_index,
        )
        self.nodes[node_id] = node
        return node

    # -- the driver loop ---------------------------------------------------------------------------
    def process_ready(self, node_id: int) -> Ready | None:
        node = self.nodes[node_id]
        if not node.raw.has_ready():
            return None
        rd = node.raw.ready()
        self.persist(node, rd)
        self.msgs.extend(rd.messages)
        self.apply(node, rd)
        node.raw.advance(rd)
        return rd

    @staticmethod
    def persist(node: Node, rd: Ready) -> None:
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)

    @staticmethod
    def apply(node: Node, rd: Ready) -> None:
        if rd.snapshot is not None:
            node.applied_index = rd.snapshot.meta.index
            node.conf_state = rd.snapshot.meta.conf_state
            # The state machine restarts from the image: remember where it came from.
            meta = rd.snapshot.meta
            node.applied = [Entry(meta.term, meta.index, EntryKind.NOOP, rd.snapshot.data)]
        for e in rd.committed_entries:
            if e.kind == EntryKind.CONF_CHANGE:
                node.conf_state = node.raw.apply_conf_change(ConfChange.decode(e.data))
                node.storage.set_conf_state(node.conf_state)
            node.applied.append(e)
            node.applied_index = e.index

    def deliver(self, msg: Message) -> None:
        if (msg.frm, msg.to) in self.cut_links:
            return
        node = self.nodes.get(msg.to)
        if node is None:
            return
        node.raw.step(msg)

    def deliver_all(self, pred: Callable[[Message], bool] | None = None) -> int:
        """Deliver queued messages (those matching pred); returns how many were taken."""
        keep, take = [], []
        for m in self.msgs:
            (take if pred is None or pred(m) else keep).append(m)
        self.msgs = keep
        for m in take:
            self.deliver(m)
        return len(take)

    def stabilize(self, ids: Iterable[int] | None = None, rounds_max: int = 1000) -> None:
        """Process Readies and deliver messages until nothing changes."""
        for _ in range(rounds_max):
            progressed = False
            for node_id in sorted(ids or self.nodes):
                if self.process_ready(node_id) is not None:
                    progressed = True
            if self.msgs:
                progressed = True
                self.deliver_all()
            if not progressed:
                return
        raise AssertionError("cluster did not stabilize")

    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].raw.tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node_id in sorted(self.nodes):
                self.nodes[node_id].raw.tick()

    # -- partitions ----------------------------------------------------------------------------------
    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut_links.add((node_id, other))
                self.cut_links.add((other, node_id))

    def heal(self) -> None:
        self.cut_links.clear()

    # -- conveniences --------------------------------------------------------------------------------
    def elect(self, node_id: int) -> None:
        self.nodes[node_id].raw.campaign()
        self.stabilize()
        assert self.nodes[node_id].role == Role.LEADER, f"{node_id} failed to become leader"

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.role == Role.LEADER]

    def applied_data(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.nodes[node_id].applied if e.kind == EntryKind.DATA]


__all__ = ["Cluster", "HardState", "Node", "Snapshot", "make_storage"]
