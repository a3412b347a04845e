"""One test per rule of the Raft paper's figure 2 and per property of figure 3.

Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm" (2014). Each
docstring quotes the rule; the test sets up the smallest situation where it applies and checks
the core obeys it. PreVote and CheckQuorum are off here (they are extensions, tested in the
golden transcripts), so the behaviour is the paper's own.
"""

from __future__ import annotations

import random

from raft import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Ready,
    Role,
)
from tests.raft.harness import Cluster

MT = MessageType


def make(
    node_id: int = 1,
    terms: tuple[int, ...] = (),
    term: int = 0,
    vote: int = 0,
    commit: int = 0,
    voters: tuple[int, ...] = (1, 2, 3),
) -> tuple[RawNode, MemoryStorage]:
    """A node whose durable log holds entries with the given terms (indexes 1..n)."""
    st = MemoryStorage(ConfState(voters))
    st.append([Entry(t, i + 1, EntryKind.DATA, f"e{i + 1}".encode()) for i, t in enumerate(terms)])
    st.set_hard_state(HardState(term, vote, commit))
    cfg = Config(node_id=node_id, pre_vote=False, check_quorum=False, rng=random.Random(node_id))
    return RawNode(cfg, st), st


def drain(raw: RawNode, st: MemoryStorage) -> Ready:
    """Run one Ready through the contract: persist, (collect messages), apply, advance."""
    rd = raw.ready()
    if rd.snapshot is not None:
        st.apply_snapshot(rd.snapshot)
    if rd.entries:
        st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)
    raw.advance(rd)
    return rd


def sent(raw: RawNode, st: MemoryStorage) -> list[Message]:
    return drain(raw, st).messages if raw.has_ready() else []


def make_leader(terms: tuple[int, ...] = (), term: int = 1) -> tuple[RawNode, MemoryStorage]:
    raw, st = make(1, terms=terms, term=term - 1)
    raw.campaign()
    sent(raw, st)
    for peer in (2, 3):
        raw.step(Message(MT.VOTE_RESP, 1, peer, term))
    assert raw.raft.role == Role.LEADER
    return raw, st


# -- Figure 2: rules for all servers -----------------------------------------------------------


def test_apply_committed_entries_in_order() -> None:
    """All servers: "If commitIndex > lastApplied: increment lastApplied, apply
    log[lastApplied] to state machine." """
    raw, st = make(2, terms=(1, 1, 1), term=1)
    raw.step(Message(MT.HEARTBEAT, 2, 1, 1, commit=2))
    rd = drain(raw, st)
    assert [e.index for e in rd.committed_entries] == [1, 2]
    raw.step(Message(MT.HEARTBEAT, 2, 1, 1, commit=3))
    rd = drain(raw, st)
    assert [e.index for e in rd.committed_entries] == [3]
    assert raw.status().applied_index == 3


def test_higher_term_converts_to_follower() -> None:
    """All servers: "If RPC request or response contains term T > currentTerm: set
    currentTerm = T, convert to follower." """
    raw, _st = make_leader(term=1)
    raw.step(Message(MT.APP_RESP, 1, 2, 5))
    assert raw.raft.role == Role.FOLLOWER
    assert raw.raft.term == 5


# -- followers ----------------------------------------------------------------------------------


def test_follower_responds_to_leaders_and_candidates() -> None:
    """Followers: "Respond to RPCs from candidates and leaders." """
    raw, st = make(2, terms=(1,), term=1)
    raw.step(Message(MT.APP, 2, 1, 1, log_term=1, index=1, entries=(Entry(1, 2),)))
    raw.step(Message(MT.VOTE, 2, 3, 2, log_term=1, index=2))
    types = [m.type for m in sent(raw, st)]
    assert MT.APP_RESP in types
    assert MT.VOTE_RESP in types


def test_follower_times_out_into_candidate() -> None:
    """Followers: "If election timeout elapses without receiving AppendEntries RPC from
    current leader or granting vote to candidate: convert to candidate." """
    raw, _st = make(2, term=1)
    for _ in range(2 * raw.raft.election_timeout):
        raw.tick()
    assert raw.raft.role == Role.CANDIDATE


def test_heartbeats_hold_off_the_election() -> None:
    """Followers: (converse of the timeout rule) AppendEntries from the current leader reset
    the election timer, so a follower that hears its leader never campaigns."""
    raw, _st = make(2, term=1)
    for _ in range(10 * raw.raft.election_timeout):
        raw.tick()
        raw.step(Message(MT.HEARTBEAT, 2, 1, 1))
    assert raw.raft.role == Role.FOLLOWER


# -- candidates ---------------------------------------------------------------------------------


def test_candidate_starts_election() -> None:
    """Candidates: "On conversion to candidate, start election: increment currentTerm; vote
    for self; reset election timer; send RequestVote RPCs to all other servers." """
    raw, st = make(1, terms=(1, 1), term=1)
    raw.campaign()
    assert raw.raft.term == 2
    assert raw.raft.vote == 1
    assert raw.raft.election_elapsed == 0
    votes = [m for m in sent(raw, st) if m.type == MT.VOTE]
    assert sorted(m.to for m in votes) == [2, 3]
    assert all((m.term, m.index, m.log_term) == (2, 2, 1) for m in votes)
    assert st.hard_state.vote == 1  # the self-vote is durable before requests leave


def test_candidate_with_majority_becomes_leader() -> None:
    """Candidates: "If votes received from majority of servers: become leader." """
    raw, st = make(1, term=0)
    raw.campaign()
    sent(raw, st)  # the self-vote counts once persisted
    assert raw.raft.role == Role.CANDIDATE
    raw.step(Message(MT.VOTE_RESP, 1, 2, 1))
    assert raw.raft.role == Role.LEADER


def test_candidate_steps_down_on_append_from_new_leader() -> None:
    """Candidates: "If AppendEntries RPC received from new leader: convert to follower." """
    raw, _st = make(1, term=0)
    raw.campaign()
    raw.step(Message(MT.APP, 1, 2, 1, entries=()))
    assert raw.raft.role == Role.FOLLOWER
    assert raw.raft.lead == 2


def test_candidate_restarts_election_on_timeout() -> None:
    """Candidates: "If election timeout elapses: start new election." """
    raw, _st = make(1, term=0)
    raw.campaign()
    assert raw.raft.term == 1
    for _ in range(2 * raw.raft.election_timeout):
        raw.tick()
    assert raw.raft.role == Role.CANDIDATE
    assert raw.raft.term == 2


# -- leaders ------------------------------------------------------------------------------------


def test_leader_sends_initial_append_and_heartbeats() -> None:
    """Leaders: "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each
    server; repeat during idle periods to prevent election timeouts." (Here the initial append
    carries the leader's no-op of its term, §8.)"""
    raw, st = make_leader(term=1)
    first = sent(raw, st)
    apps = [m for m in first if m.type == MT.APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(m.entries[-1].kind == EntryKind.NOOP for m in apps)
    raw.tick()  # heartbeat_ticks = 1
    beats = [m for m in sent(raw, st) if m.type == MT.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3]


def test_leader_appends_and_commits_client_command() -> None:
    """Leaders: "If command received from client: append entry to local log, respond after
    entry applied to state machine." """
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.nodes[1].raw.propose(b"cmd")
    assert c.nodes[1].raw.raft.log.last_term() == 1
    assert c.applied_data(1) == []  # not yet: only after commit
    c.stabilize()
    assert c.applied_data(1) == [b"cmd"]


def test_leader_sends_entries_from_next_index() -> None:
    """Leaders: "If last log index >= nextIndex for a follower: send AppendEntries RPC with
    log entries starting at nextIndex." """
    raw, st = make_leader(term=1)
    sent(raw, st)
    raw.step(Message(MT.APP_RESP, 1, 2, 1, index=1))
    sent(raw, st)
    raw.propose(b"x")
    apps = [m for m in sent(raw, st) if m.type == MT.APP and m.to == 2]
    assert apps[0].index == 1 and [e.index for e in apps[0].entries] == [2]


def test_leader_updates_match_and_next_on_success() -> None:
    """Leaders: "If successful: update nextIndex and matchIndex for follower." """
    raw, st = make_leader(term=1)
    sent(raw, st)
    raw.step(Message(MT.APP_RESP, 1, 2, 1, index=1))
    pr = raw.status().progress[2]
    assert (pr.match_index, pr.next_index) == (1, 2)


def test_leader_decrements_next_index_on_inconsistency() -> None:
    """Leaders: "If AppendEntries fails because of log inconsistency: decrement nextIndex and
    retry." (With the follower's hint the leader may skip back further, §5.3.)"""
    raw, st = make_leader(terms=(1, 1, 1), term=2)
    sent(raw, st)
    raw.step(Message(MT.APP_RESP, 1, 2, 2, index=3, reject=True, reject_hint=3))
    retry = [m for m in sent(raw, st) if m.type == MT.APP and m.to == 2]
    assert retry and retry[0].index == 2  # retried one entry earlier
    assert [e.index for e in retry[0].entries] == [3, 4]
    raw.step(Message(MT.APP_RESP, 1, 2, 2, index=2, reject=True, reject_hint=1, log_term=1))
    retry = [m for m in sent(raw, st) if m.type == MT.APP and m.to == 2]
    assert retry and retry[0].index == 1


def test_leader_commits_only_current_term_entries_by_counting() -> None:
    """Leaders: "If there exists an N such that N > commitIndex, a majority of matchIndex[i]
    >= N, and log[N].term == currentTerm: set commitIndex = N." (figure 8)"""
    raw, st = make_leader(terms=(1, 1), term=3)  # entries 1-2 of term 1, NOOP 3 of term 3
    sent(raw, st)
    raw.step(Message(MT.APP_RESP, 1, 2, 3, index=2))  # a majority holds index 2 (term 1)
    sent(raw, st)
    assert raw.raft.log.committed == 0
    raw.step(Message(MT.APP_RESP, 1, 2, 3, index=3))  # ...and now the term-3 entry
    assert raw.raft.log.committed == 3


# -- AppendEntries receiver ---------------------------------------------------------------------


def test_append_rejects_stale_term() -> None:
    """AppendEntries receiver: "Reply false if term < currentTerm." (The reply carries our
    term so the stale leader learns it must step down.)"""
    raw, st = make(2, terms=(1,), term=3)
    raw.step(Message(MT.APP, 2, 1, 2, log_term=1, index=1, entries=(Entry(2, 2),)))
    (resp,) = sent(raw, st)
    assert resp.type == MT.APP_RESP and resp.term == 3
    assert raw.raft.log.last_index() == 1


def test_append_rejects_missing_prev_entry() -> None:
    """AppendEntries receiver: "Reply false if log doesn't contain an entry at prevLogIndex
    whose term matches prevLogTerm." """
    raw, st = make(2, terms=(1, 1), term=2)
    raw.step(Message(MT.APP, 2, 1, 2, log_term=2, index=2, entries=(Entry(2, 3),)))
    (resp,) = sent(raw, st)
    assert resp.reject and resp.index == 2
    raw.step(Message(MT.APP, 2, 1, 2, log_term=2, index=5, entries=(Entry(2, 6),)))
    (resp,) = sent(raw, st)
    assert resp.reject and resp.reject_hint == 2


def test_append_deletes_conflicting_suffix() -> None:
    """AppendEntries receiver: "If an existing entry conflicts with a new one (same index but
    different terms), delete the existing entry and all that follow it." """
    raw, st = make(2, terms=(1, 1, 1, 1), term=2)
    raw.step(Message(MT.APP, 2, 1, 2, log_term=1, index=1, entries=(Entry(2, 2),)))
    rd = drain(raw, st)
    assert [(e.term, e.index) for e in rd.entries] == [(2, 2)]
    assert st.last_index() == 2 and st.term(2) == 2


def test_append_adds_new_entries() -> None:
    """AppendEntries receiver: "Append any new entries not already in the log." """
    raw, st = make(2, terms=(1, 1), term=1)
    ents = (Entry(1, 2, EntryKind.DATA, b"e2"), Entry(1, 3, EntryKind.DATA, b"new"))
    raw.step(Message(MT.APP, 2, 1, 1, log_term=1, index=1, entries=ents))
    rd = drain(raw, st)
    assert [e.index for e in rd.entries] == [3]  # entry 2 was already there
    assert st.last_index() == 3


def test_append_advances_commit_to_min_of_leader_commit_and_last_new() -> None:
    """AppendEntries receiver: "If leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry)." """
    raw, _st = make(2, terms=(1, 1, 1), term=1)
    raw.step(Message(MT.APP, 2, 1, 1, log_term=1, index=1, entries=(Entry(1, 2),), commit=3))
    assert raw.raft.log.committed == 2  # not 3: entry 3 was not vouched for by this append


# -- RequestVote receiver -----------------------------------------------------------------------


def test_vote_rejects_stale_term() -> None:
    """RequestVote receiver: "Reply false if term < currentTerm." """
    raw, st = make(2, term=3)
    raw.step(Message(MT.VOTE, 2, 1, 2, log_term=0, index=0))
    (resp,) = sent(raw, st)
    assert resp.reject and resp.term == 3


def test_vote_granted_once_per_term_to_up_to_date_candidate() -> None:
    """RequestVote receiver: "If votedFor is null or candidateId, and candidate's log is at
    least as up-to-date as receiver's log, grant vote." """
    raw, st = make(2, terms=(1, 2), term=2)
    raw.step(Message(MT.VOTE, 2, 1, 3, log_term=1, index=5))  # older last term: refuse
    raw.step(Message(MT.VOTE, 2, 3, 3, log_term=2, index=2))  # as up to date: grant
    raw.step(Message(MT.VOTE, 2, 4, 3, log_term=3, index=9))  # already voted this term
    raw.step(Message(MT.VOTE, 2, 3, 3, log_term=2, index=2))  # same candidate again: grant
    resps = [(m.to, m.reject) for m in sent(raw, st)]
    assert resps == [(1, True), (3, False), (4, True), (3, False)]


def test_persistent_state_is_stored_before_responding() -> None:
    """State: "Persistent state on all servers (updated on stable storage before responding
    to RPCs)." The vote grant is only handed out in the Ready that carries the vote."""
    raw, _st = make(2, term=1)
    raw.step(Message(MT.VOTE, 2, 1, 2))
    rd = raw.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    assert [m.type for m in rd.messages] == [MT.VOTE_RESP]


# -- Figure 3 properties --------------------------------------------------------------------------


def test_election_safety_dueling_candidates() -> None:
    """Election Safety: "at most one leader can be elected in a given term." """
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.nodes[1].raw.campaign()
    c.nodes[3].raw.campaign()
    c.stabilize()
    leaders = [(n.term, i) for i, n in c.nodes.items() if n.role == Role.LEADER]
    assert len(leaders) <= 1
    assert len({t for t, _ in leaders}) == len(leaders)


def test_leader_append_only() -> None:
    """Leader Append-Only: "a leader never overwrites or deletes entries in its log; it only
    appends new entries." A same-term append from a confused peer cannot rewrite its log."""
    raw, st = make_leader(terms=(1,), term=2)
    sent(raw, st)
    before = list(raw.raft.log.slice(1, raw.raft.log.last_index() + 1, 1 << 30))
    raw.step(Message(MT.APP, 1, 2, 2, log_term=1, index=1, entries=(Entry(2, 2, data=b"x"),)))
    raw.propose(b"mine")
    after = raw.raft.log.slice(1, raw.raft.log.last_index() + 1, 1 << 30)
    assert after[: len(before)] == before


def test_log_matching() -> None:
    """Log Matching: "if two logs contain an entry with the same index and term, then the logs
    are identical in all entries up through the given index." """
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(3)
    for i in range(3):
        c.nodes[1].raw.propose(f"a{i}".encode())
    c.stabilize()
    c.heal()
    c.nodes[3].raw.campaign()  # 3 has a shorter log: cannot win, but bumps terms
    c.stabilize()
    c.tick_all(30)
    c.stabilize()
    logs = {i: n.log_entries() for i, n in c.nodes.items()}
    for a in logs.values():
        for b in logs.values():
            common = {(e.index, e.term) for e in a} & {(e.index, e.term) for e in b}
            for index, _ in common:
                assert a[: index - a[0].index + 1] == b[: index - b[0].index + 1]


def test_leader_completeness() -> None:
    """Leader Completeness: "if a log entry is committed in a given term, then that entry will
    be present in the logs of the leaders for all higher-numbered terms." """
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(3)
    c.nodes[1].raw.propose(b"committed")
    c.stabilize()
    assert c.applied_data(1) == [b"committed"]
    c.heal()
    c.isolate(1)
    c.nodes[3].raw.campaign()  # 3 lacks the entry: 2 refuses its vote
    c.stabilize()
    assert c.nodes[3].role != Role.LEADER
    c.nodes[2].raw.campaign()
    c.stabilize()
    assert c.nodes[2].role == Role.LEADER
    assert b"committed" in [e.data for e in c.nodes[2].log_entries()]


def test_state_machine_safety() -> None:
    """State Machine Safety: "if a server has applied a log entry at a given index to its state
    machine, no other server will ever apply a different log entry for the same index." """
    c = Cluster((1, 2, 3), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.nodes[1].raw.propose(b"a")
    c.stabilize()
    c.isolate(1)
    c.nodes[1].raw.propose(b"lost")  # never committed: 1 is cut off
    c.stabilize()
    c.nodes[2].raw.campaign()
    c.stabilize()
    c.nodes[2].raw.propose(b"b")
    c.stabilize()
    c.heal()
    c.tick(2, 1)
    c.stabilize()
    applied = {i: [(e.index, e.data) for e in n.applied] for i, n in c.nodes.items()}
    for a in applied.values():
        for b in applied.values():
            n = min(len(a), len(b))
            assert a[:n] == b[:n]
    assert [d for _, d in applied[1] if d] == [b"a", b"b"]
