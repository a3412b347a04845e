"""Unit tests of the core's small parts: wire codec, quorum math, flow control, the log,
membership changes, storage, limits and the RawNode guard rails."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft import (
    Compacted,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryKind,
    InvalidConfChange,
    MemoryStorage,
    Message,
    MessageDecodeError,
    MessageType,
    PeerNotFound,
    ProposalDropped,
    RawNode,
    Snapshot,
    SnapshotMeta,
    StepLocalMessage,
)
from raft.confchange import apply_change
from raft.describe import describe_entry, describe_hard_state, describe_message, describe_ready
from raft.log import RaftLog
from raft.progress import Inflights, Progress, ProgressState
from raft.quorum import JointConfig, VoteResult, majority_committed_index
from raft.types import HardState
from tests.raft.harness import Cluster

MT = MessageType

# -- wire codec ------------------------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
wire_types = st.sampled_from(
    [
        t
        for t in MT
        if t.name
        not in {"HUP", "BEAT", "UNREACHABLE", "SNAP_STATUS", "CHECK_QUORUM", "FORGET_LEADER"}
    ]
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    mtype = draw(wire_types)
    term = draw(st.integers(1, 1 << 40))
    index = draw(st.integers(0, 1 << 40))
    entries: tuple[Entry, ...] = ()
    if mtype in (MT.APP, MT.PROP):
        n = draw(st.integers(0, 4))
        entries = tuple(
            Entry(
                draw(st.integers(1, term)),
                index + 1 + i,
                draw(st.sampled_from(list(EntryKind))),
                draw(st.binary(max_size=16)),
            )
            for i in range(n)
        )
    snapshot = None
    if mtype == MT.SNAP:
        cs = ConfState(voters=tuple(sorted(draw(st.sets(st.integers(1, 9), min_size=1)))))
        snapshot = Snapshot(SnapshotMeta(draw(st.integers(1, 99)), 1, cs), draw(st.binary()))
    return Message(
        mtype,
        draw(u64),
        draw(u64),
        term,
        draw(u64),
        index,
        entries,
        draw(u64),
        draw(st.booleans()),
        draw(u64),
        snapshot,
        draw(st.binary(max_size=8)),
    )


@settings(max_examples=150, deadline=None)
@given(messages())
def test_wire_round_trip(m: Message) -> None:
    assert Message.from_wire(m.to_wire()) == m


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: None,
        lambda w: w[:5],
        lambda w: [2, *w[1:]],  # unknown version
        lambda w: [*w[:1], 99, *w[2:]],  # unknown type
        lambda w: [*w[:1], int(MT.HUP), *w[2:]],  # local type from the network
        lambda w: [*w[:4], -1, *w[5:]],  # negative term
        lambda w: [*w[:4], True, *w[5:]],  # bool is not an int here
        lambda w: [*w[:7], [[1, 99, 0, b""]], *w[8:]],  # non-contiguous entries
        lambda w: [*w[:7], [[1, 3, 7, b""]], *w[8:]],  # unknown entry kind
        lambda w: [*w[:7], [[1, 3, 0, "str"]], *w[8:]],  # data not bytes
        lambda w: [*w[:9], 1, *w[10:]],  # reject not a bool
        lambda w: [*w[:12], "ctx"],  # context not bytes
        lambda w: [*w[:11], [1, 1, [0], [], [], b""], w[12]],  # node id 0 in a snapshot
    ],
)
def test_wire_rejects_garbage(mutate: object) -> None:
    good = Message(MT.APP, 2, 1, 3, 1, 2, (Entry(1, 3),), 2).to_wire()
    bad = mutate(list(good))  # type: ignore[operator]
    with pytest.raises(MessageDecodeError):
        Message.from_wire(bad)


def test_wire_rejects_entries_from_a_future_term() -> None:
    w = Message(MT.APP, 2, 1, 3, 1, 2, (Entry(1, 3),), 2).to_wire()
    w[7] = [[9, 3, 0, b""]]
    with pytest.raises(MessageDecodeError):
        Message.from_wire(w)


# -- quorum -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acked", "expect"),
    [({1: 5}, 5), ({1: 5, 2: 3, 3: 9}, 5), ({1: 1, 2: 2, 3: 3, 4: 4}, 2), ({1: 7, 2: 7, 3: 0}, 7)],
)
def test_majority_committed_index(acked: dict[int, int], expect: int) -> None:
    assert majority_committed_index(set(acked), acked) == expect


def test_joint_config_needs_both_majorities() -> None:
    j = JointConfig(frozenset({1, 2, 3}), frozenset({3, 4, 5}))
    assert j.committed_index({1: 9, 2: 9, 3: 1, 4: 1, 5: 1}) == 1
    assert j.vote_result({1: True, 2: True}) == VoteResult.PENDING
    assert j.vote_result({1: True, 2: True, 4: True, 5: True}) == VoteResult.WON
    assert j.vote_result({4: False, 5: False}) == VoteResult.LOST


# -- flow control ---------------------------------------------------------------------------------------


def test_inflights_bounded_by_count_and_bytes() -> None:
    by_count = Inflights(2)
    by_count.add(1, 10)
    by_count.add(2, 10)
    assert by_count.full()
    by_count.free_le(1)
    assert not by_count.full() and by_count.count() == 1
    by_bytes = Inflights(100, bytes_max=25)
    by_bytes.add(1, 20)
    assert not by_bytes.full()
    by_bytes.add(2, 10)
    assert by_bytes.full()
    with pytest.raises(AssertionError):
        by_bytes.add(3, 1)


def test_progress_probe_pauses_until_answer() -> None:
    pr = Progress(5, Inflights(4))
    assert not pr.is_paused()
    pr.sent_entries(3, 0)
    assert pr.is_paused() and pr.next_index == 5
    assert pr.maybe_update(7)
    pr.become_replicate()
    assert pr.state == ProgressState.REPLICATE and pr.next_index == 8
    for i in range(4):
        pr.sent_entries(1, 0)
        assert pr.next_index == 9 + i
    assert pr.is_paused()  # the inflight window is full


def test_leader_pipelines_at_most_inflight_max_appends() -> None:
    c = Cluster((1, 2, 3), config_hook=lambda cfg: setattr(cfg, "inflight_msgs_max", 2))
    c.elect(1)
    leader = c.nodes[1].raw
    for i in range(5):
        leader.propose(f"p{i}".encode())
    apps = [m for m in leader.ready().messages if m.type == MT.APP and m.to == 2]
    assert len(apps) == 2


def test_uncommitted_bytes_limit_drops_proposals() -> None:
    c = Cluster((1, 2, 3), config_hook=lambda cfg: setattr(cfg, "uncommitted_bytes_max", 10))
    c.elect(1)
    leader = c.nodes[1].raw
    leader.propose(b"12345678")
    with pytest.raises(ProposalDropped):
        leader.propose(b"12345678")
    c.stabilize()
    leader.propose(b"12345678")  # committed entries no longer count


def test_report_unreachable_moves_follower_to_probe() -> None:
    c = Cluster((1, 2, 3))
    c.elect(1)
    leader = c.nodes[1].raw
    assert leader.status().progress[2].state == ProgressState.REPLICATE
    leader.report_unreachable(2)
    assert leader.status().progress[2].state == ProgressState.PROBE


# -- log --------------------------------------------------------------------------------------------------


def test_raft_log_unstable_then_stable() -> None:
    storage = MemoryStorage()
    log = RaftLog(storage, 1 << 20)
    log.append([Entry(1, 1), Entry(1, 2)])
    assert log.next_unstable() == [Entry(1, 1), Entry(1, 2)]
    log.accept_unstable(log.next_unstable())
    assert not log.has_next_unstable()
    storage.append([Entry(1, 1), Entry(1, 2)])
    log.stable_to(2, 1)
    assert log.unstable == [] and log.last_index() == 2 and log.term(2) == 1


def test_raft_log_stable_to_ignores_overwritten_entries() -> None:
    log = RaftLog(MemoryStorage(), 1 << 20)
    log.append([Entry(1, 1), Entry(1, 2)])
    log.accept_unstable(log.next_unstable())
    log.append([Entry(2, 2)])  # overwritten while being persisted
    log.stable_to(2, 1)
    assert log.next_unstable() == [Entry(2, 2)]


def test_raft_log_slice_respects_bytes_and_compaction() -> None:
    storage = MemoryStorage()
    storage.append([Entry(1, i, EntryKind.DATA, b"x" * 10) for i in range(1, 6)])
    log = RaftLog(storage, 1 << 20)
    log.append([Entry(1, 6, EntryKind.DATA, b"y" * 10)])
    assert len(log.slice(1, 7, 25)) == 2
    assert len(log.slice(1, 7, 1)) == 1  # always at least one
    assert [e.index for e in log.slice(4, 7, 1000)] == [4, 5, 6]
    storage.create_snapshot(3, ConfState((1,)), b"")
    storage.compact(3)
    with pytest.raises(Compacted):
        log.slice(2, 4, 100)
    assert log.term(3) == 1  # the snapshot's term stays readable


def test_find_conflict_by_term() -> None:
    storage = MemoryStorage()
    storage.append([Entry(t, i + 1) for i, t in enumerate((1, 1, 3, 3, 5))])
    log = RaftLog(storage, 1 << 20)
    assert log.find_conflict_by_term(5, 4) == (4, 3)
    assert log.find_conflict_by_term(5, 2) == (2, 1)
    assert log.find_conflict_by_term(5, 9) == (5, 5)


# -- membership ----------------------------------------------------------------------------------------


def test_conf_change_codec_and_rules() -> None:
    c = ConfChange(ConfChangeType.ADD_LEARNER, 4, b"host:9092")
    assert ConfChange.decode(c.encode()) == c
    with pytest.raises(InvalidConfChange):
        ConfChange.decode(b"\x01\x00\x01\x00")
    conf = ConfState((1, 2, 3))
    conf = apply_change(conf, c)
    assert conf == ConfState((1, 2, 3), (4,))
    conf = apply_change(conf, ConfChange(ConfChangeType.ADD_VOTER, 4))
    assert conf == ConfState((1, 2, 3, 4))
    with pytest.raises(InvalidConfChange):
        apply_change(ConfState((1,)), ConfChange(ConfChangeType.REMOVE_NODE, 1))


# -- RawNode guard rails ---------------------------------------------------------------------------------


def test_step_rejects_local_messages_and_unknown_peers() -> None:
    c = Cluster((1, 2, 3))
    raw = c.nodes[1].raw
    with pytest.raises(StepLocalMessage):
        raw.step(Message(MT.HUP, 1, 2))
    with pytest.raises(PeerNotFound):
        raw.step(Message(MT.APP_RESP, 1, 9, 1))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        RawNode(Config(node_id=0), MemoryStorage())
    with pytest.raises(ValueError):
        RawNode(Config(node_id=1, election_ticks=1, heartbeat_ticks=1), MemoryStorage())


def test_idle_follower_has_no_ready() -> None:
    c = Cluster((1, 2, 3))
    c.elect(1)
    follower = c.nodes[2].raw
    follower.tick()
    assert not follower.has_ready()


def test_same_seed_same_history() -> None:
    def history(seed: int) -> list[str]:
        c = Cluster((1, 2, 3), seed=seed)
        out = []
        for _ in range(60):
            c.tick_all()
            for node_id in sorted(c.nodes):
                rd = c.process_ready(node_id)
                if rd is not None:
                    out.append(f"{node_id} {describe_ready(rd)}")
            c.deliver_all()
        return out

    assert history(3) == history(3)
    assert history(3) != history(4)


def test_describe_is_one_line() -> None:
    m = Message(MT.APP, 2, 1, 3, 2, 5, (Entry(3, 6, EntryKind.DATA, b"\n"),), 4)
    assert describe_message(m) == r"1->2 MsgApp Term:3 Log:2/5 Commit:4 Entries:[3/6 '\n']"
    assert describe_entry(Entry(2, 3, EntryKind.NOOP)) == "2/3 NOOP"
    assert describe_hard_state(HardState(2, 1, 7)) == "HardState Term:2 Vote:1 Commit:7"
    cc = ConfChange(ConfChangeType.ADD_VOTER, 4).encode()
    assert describe_entry(Entry(2, 4, EntryKind.CONF_CHANGE, cc)) == "2/4 CONF[ADD_VOTER 4]"


def test_memory_storage_bootstrap_and_compact() -> None:
    s = MemoryStorage.bootstrap(ConfState((1, 2, 3)), index=5, term=2)
    assert (s.first_index(), s.last_index(), s.term(5)) == (6, 5, 2)
    hs, cs = s.initial_state()
    assert hs.commit == 5 and cs.voters == (1, 2, 3)
    s.append([Entry(2, 6), Entry(2, 7), Entry(3, 8)])
    s.compact(7)
    assert s.first_index() == 8 and s.term(7) == 2
    s.append([Entry(4, 8)])
    assert s.term(8) == 4 and s.last_index() == 8


def test_rng_is_the_only_randomness() -> None:
    cfg = Config(node_id=1, rng=random.Random(5))
    raw = RawNode(cfg, MemoryStorage(ConfState((1, 2, 3))))
    t1 = raw.raft.randomized_election_timeout
    cfg2 = Config(node_id=1, rng=random.Random(5))
    raw2 = RawNode(cfg2, MemoryStorage(ConfState((1, 2, 3))))
    assert raw2.raft.randomized_election_timeout == t1
    assert 10 <= t1 < 20
