"""Smoke tests of the core through the in-memory harness: election, replication, restart."""

from __future__ import annotations

import pytest

from raft import Message, MessageType, ProposalDropped, Role
from tests.raft.harness import Cluster


def test_three_nodes_elect_one_leader_and_replicate() -> None:
    c = Cluster((1, 2, 3))
    c.elect(1)
    assert c.leaders() == [1]
    assert {n.term for n in c.nodes.values()} == {1}
    c.nodes[1].raw.propose(b"hello")
    c.nodes[1].raw.propose_many([b"a", b"b"])
    c.stabilize()
    for node_id in (1, 2, 3):
        assert c.applied_data(node_id) == [b"hello", b"a", b"b"]
        assert c.nodes[node_id].committed == 4  # NOOP + 3 entries


def test_follower_forwards_proposal_to_leader() -> None:
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.nodes[3].raw.propose(b"via-3")
    c.stabilize()
    assert c.applied_data(2) == [b"via-3"]


def test_candidate_drops_proposal() -> None:
    c = Cluster((1, 2, 3))
    with pytest.raises(ProposalDropped):
        c.nodes[1].raw.propose(b"x")


def test_election_by_ticking_alone() -> None:
    c = Cluster((1, 2, 3), seed=7)
    for _ in range(100):
        c.tick_all()
        c.stabilize()
        if c.leaders():
            break
    assert len(c.leaders()) == 1


def test_single_node_commits_after_persisting() -> None:
    c = Cluster((1,))
    c.nodes[1].raw.campaign()
    c.stabilize()
    assert c.nodes[1].role == Role.LEADER
    c.nodes[1].raw.propose(b"solo")
    c.stabilize()
    assert c.applied_data(1) == [b"solo"]


def test_restart_keeps_log_and_term() -> None:
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.nodes[1].raw.propose(b"x")
    c.stabilize()
    node = c.restart(2)
    assert node.term == 1
    assert [e.data for e in node.log_entries()][-1] == b"x"
    assert node.role == Role.FOLLOWER


def test_wire_roundtrip_of_append() -> None:
    c = Cluster((1, 2, 3))
    c.elect(1)
    c.nodes[1].raw.propose(b"w")
    rd = c.nodes[1].raw.ready()
    apps = [m for m in rd.messages if m.type == MessageType.APP]
    assert apps
    for m in apps:
        assert Message.from_wire(m.to_wire()) == Message(
            m.type, m.to, m.frm, m.term, m.log_term, m.index, tuple(m.entries), m.commit
        )
