"""forget_leader: a side channel (a closed TCP connection) reports the leader dead.

It must speed up failover when the leader is really gone, and change nothing when the
leader is alive and only one follower lost its link: no term bump, no disruption.
"""

from __future__ import annotations

from raft import Role
from tests.raft.harness import Cluster


def _ticks_to_new_leader(c: Cluster, alive: tuple[int, ...], ticks_max: int) -> int:
    for ticks in range(1, ticks_max + 1):
        for node_id in alive:
            c.tick(node_id)
        c.stabilize(alive)
        if [n for n in c.leaders() if n in alive]:
            return ticks
    raise AssertionError(f"no leader among {alive} after {ticks_max} ticks")


def test_followers_that_forget_a_dead_leader_elect_within_the_given_ticks() -> None:
    c = Cluster((1, 2, 3), election_ticks=10)
    c.elect(1)
    term = c.nodes[1].term
    c.isolate(1)  # the leader's process is gone
    c.nodes[2].raw.forget_leader(1, campaign_in_ticks=1)
    c.nodes[3].raw.forget_leader(1, campaign_in_ticks=3)
    assert c.nodes[2].raw.raft.lead == 0 and c.nodes[3].raw.raft.lead == 0
    ticks = _ticks_to_new_leader(c, (2, 3), ticks_max=5)
    assert ticks == 1  # not the 10-20 ticks of a randomized election timeout
    assert 2 in c.leaders()
    assert c.nodes[2].term == term + 1  # PreVote passed, one real election


def test_without_forgetting_the_followers_wait_out_the_election_timeout() -> None:
    c = Cluster((1, 2, 3), election_ticks=10)
    c.elect(1)
    c.isolate(1)
    assert _ticks_to_new_leader(c, (2, 3), ticks_max=40) >= 10


def test_one_follower_forgetting_a_live_leader_disrupts_nothing() -> None:
    c = Cluster((1, 2, 3), election_ticks=10)
    c.elect(1)
    term = c.nodes[1].term
    c.nodes[2].raw.forget_leader(1, campaign_in_ticks=1)
    c.tick(2)
    c.stabilize()  # 2's pre-vote reaches 3, which still honours 1's lease, and 1
    assert c.leaders() == [1]
    assert {n.term for n in c.nodes.values()} == {term}
    c.nodes[1].raw.propose(b"after")
    c.tick(1)
    c.stabilize()
    assert c.applied_data(2)[-1:] == [b"after"]
    assert c.nodes[2].raw.raft.lead == 1  # the next heartbeat or append restored it


def test_forgetting_another_node_or_as_leader_is_a_no_op() -> None:
    c = Cluster((1, 2, 3), election_ticks=10)
    c.elect(1)
    c.nodes[2].raw.forget_leader(3, campaign_in_ticks=1)  # 3 is not 2's leader
    assert c.nodes[2].raw.raft.lead == 1
    c.nodes[1].raw.forget_leader(1, campaign_in_ticks=1)  # a leader forgets nobody
    assert c.nodes[1].role == Role.LEADER
    assert not c.nodes[1].raw.raft.msgs


def test_campaign_soon_hastens_only_a_leaderless_follower() -> None:
    c = Cluster((1, 2, 3), election_ticks=10)
    c.nodes[2].raw.campaign_soon(2)
    c.tick(2)
    assert c.nodes[2].role == Role.FOLLOWER
    c.tick(2)
    c.stabilize()
    assert c.leaders() == [2]  # after 2 ticks, not 10-20
    term = c.nodes[2].term
    c.nodes[3].raw.campaign_soon(1)  # 3 has a leader now: nothing changes
    c.tick(3)
    c.stabilize()
    assert c.leaders() == [2] and c.nodes[3].term == term
