"""The pure group state machine, driven with an explicit clock."""

from __future__ import annotations

from broker.groups.offsets_log import OffsetAndMetadata
from broker.groups.state import (
    Group,
    GroupConfig,
    GroupState,
    JoinParams,
    JoinResult,
    Outcome,
    SyncResult,
)
from client.protocol.errors import ErrorCode

SESSION_MS = 10_000
REBALANCE_MS = 30_000


def params(
    member_id: str = "",
    protocols: tuple[tuple[str, bytes], ...] = (("range", b"r"),),
    instance: str | None = None,
    require_known: bool = False,
    skip: bool = False,
    session_ms: int = SESSION_MS,
) -> JoinParams:
    return JoinParams(
        member_id=member_id,
        group_instance_id=instance,
        client_id="c",
        client_host="/127.0.0.1",
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=REBALANCE_MS,
        protocol_type="consumer",
        protocols=protocols,
        require_known_member_id=require_known,
        supports_skip_assignment=skip,
    )


def joins_by_member(out: Outcome) -> dict[str, JoinResult]:
    return {j.member_id: j for j in out.joins}


def form(group: Group, n: int, now_ms: int = 0) -> list[str]:
    """Join n members one by one, each rejoining as the others arrive; return their ids."""
    ids: list[str] = []
    for i in range(n):
        new_id = f"m{i}"
        out = group.join(now_ms, params(), new_id)
        assert out.parked == new_id
        ids.append(new_id)
        for other in ids[:-1]:
            if not group.members[other].awaiting_join:
                group.join(now_ms, params(other), "unused")
    return ids


def stabilize(group: Group, now_ms: int = 0) -> None:
    """Leader syncs with a per-member assignment, store succeeds, followers sync."""
    assert group.state is GroupState.COMPLETING_REBALANCE
    gen = group.generation_id
    leader = group.leader_id
    assert leader is not None
    assignments = [(m, m.encode()) for m in group.members]
    out = group.sync(now_ms, leader, gen, assignments=assignments)
    assert out.store is not None and out.store_is_sync
    done = group.on_sync_stored(now_ms, gen, ErrorCode.NONE)
    assert {s.member_id for s in done.syncs} == {leader}
    assert group.state is GroupState.STABLE
    for m in group.members:
        if m != leader:
            reply = group.sync(now_ms, m, gen).reply
            assert isinstance(reply, SyncResult)
            assert reply.assignment == m.encode()


def test_single_member_join_completes_at_once_with_zero_delay() -> None:
    g = Group("g", GroupConfig(), 0)
    out = g.join(0, params(), "m0")
    assert g.state is GroupState.COMPLETING_REBALANCE
    res = joins_by_member(out)["m0"]
    assert res.error is ErrorCode.NONE
    assert res.generation_id == 1
    assert res.leader_id == "m0"
    assert res.protocol_name == "range"
    assert [m.member_id for m in res.members] == ["m0"]


def test_join_of_three_members_waits_for_all_and_elects_one_leader() -> None:
    g = Group("g", GroupConfig(), 0)
    g.join(0, params(), "a")
    stabilize(g)
    out_b = g.join(0, params(), "b")
    assert out_b.parked == "b" and not out_b.joins
    assert g.state is GroupState.PREPARING_REBALANCE
    assert g.heartbeat(0, "a", 1, None) is ErrorCode.REBALANCE_IN_PROGRESS
    out_c = g.join(0, params(), "c")
    assert not out_c.joins
    out_a = g.join(0, params("a"), "unused")
    results = joins_by_member(out_a)
    assert set(results) == {"a", "b", "c"}
    assert {r.generation_id for r in results.values()} == {2}
    assert {r.leader_id for r in results.values()} == {"a"}
    assert len(results["a"].members) == 3
    assert results["b"].members == () and results["c"].members == ()
    stabilize(g)


def test_protocol_selection_by_vote_among_common_protocols() -> None:
    g = Group("g", GroupConfig(), 0)
    g.join(0, params(protocols=(("cooperative-sticky", b"x"), ("range", b"y"))), "a")
    stabilize(g)
    assert g.protocol_name == "cooperative-sticky"
    # b supports only range and roundrobin; the common set is {range}.
    g.join(0, params(protocols=(("roundrobin", b""), ("range", b"b"))), "b")
    out = g.join(0, params("a", protocols=(("cooperative-sticky", b"x"), ("range", b"y"))), "u")
    res = joins_by_member(out)["a"]
    assert res.protocol_name == "range"
    assert {m.member_id: m.metadata for m in res.members} == {"a": b"y", "b": b"b"}


def test_join_without_a_common_protocol_is_inconsistent() -> None:
    g = Group("g", GroupConfig(), 0)
    g.join(0, params(protocols=(("range", b""),)), "a")
    out = g.join(0, params(protocols=(("roundrobin", b""),)), "b")
    assert isinstance(out.reply, JoinResult)
    assert out.reply.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_invalid_session_timeout() -> None:
    g = Group("g", GroupConfig(), 0)
    out = g.join(0, params(session_ms=10), "a")
    assert isinstance(out.reply, JoinResult)
    assert out.reply.error is ErrorCode.INVALID_SESSION_TIMEOUT


def test_member_id_required_round_trip_and_pending_expiry() -> None:
    g = Group("g", GroupConfig(), 0)
    out = g.join(0, params(require_known=True), "m-1")
    assert isinstance(out.reply, JoinResult)
    assert out.reply.error is ErrorCode.MEMBER_ID_REQUIRED
    assert out.reply.member_id == "m-1"
    assert g.state is GroupState.EMPTY and "m-1" in g.pending_members
    out = g.join(5, params("m-1", require_known=True), "unused")
    assert joins_by_member(out)["m-1"].error is ErrorCode.NONE
    # A second pending member that never comes back expires after its session timeout.
    g2 = Group("g2", GroupConfig(), 0)
    g2.join(0, params(require_known=True), "x")
    assert g2.next_deadline_ms() == SESSION_MS
    g2.poll(SESSION_MS)
    assert not g2.pending_members
    out = g2.join(SESSION_MS, params("x", require_known=True), "unused")
    assert isinstance(out.reply, JoinResult)
    assert out.reply.error is ErrorCode.UNKNOWN_MEMBER_ID


def test_heartbeat_errors() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    assert g.heartbeat(0, "nobody", 1, None) is ErrorCode.UNKNOWN_MEMBER_ID
    gen = g.generation_id
    assert g.heartbeat(0, "m0", gen - 1, None) is ErrorCode.ILLEGAL_GENERATION
    # Waiting for the leader's SyncGroup: heartbeats are fine (Kafka 2.3+).
    assert g.heartbeat(0, "m0", gen, None) is ErrorCode.NONE
    stabilize(g)
    assert g.heartbeat(0, "m1", gen, None) is ErrorCode.NONE
    g.join(0, params(), "m2")
    assert g.heartbeat(0, "m1", gen, None) is ErrorCode.REBALANCE_IN_PROGRESS


def test_sync_errors_and_follower_waits_for_leader() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    gen = g.generation_id
    bad = g.sync(0, "m1", gen + 5).reply
    assert isinstance(bad, SyncResult) and bad.error is ErrorCode.ILLEGAL_GENERATION
    bad = g.sync(0, "zz", gen).reply
    assert isinstance(bad, SyncResult) and bad.error is ErrorCode.UNKNOWN_MEMBER_ID
    follower = g.sync(0, "m1", gen)
    assert follower.parked == "m1" and follower.reply is None
    leader = g.sync(0, "m0", gen, assignments=[("m0", b"A"), ("m1", b"B")])
    assert leader.store is not None
    assert {m.member_id: m.assignment for m in leader.store.members} == {"m0": b"A", "m1": b"B"}
    done = g.on_sync_stored(0, gen, ErrorCode.NONE)
    assert {s.member_id: s.assignment for s in done.syncs} == {"m0": b"A", "m1": b"B"}


def test_failed_store_fails_syncs_and_rebalances() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    gen = g.generation_id
    g.sync(0, "m1", gen)
    g.sync(0, "m0", gen, assignments=[("m0", b"A"), ("m1", b"B")])
    out = g.on_sync_stored(0, gen, ErrorCode.NOT_COORDINATOR)
    assert {s.member_id: s.error for s in out.syncs} == {
        "m0": ErrorCode.NOT_COORDINATOR,
        "m1": ErrorCode.NOT_COORDINATOR,
    }
    assert g.state is GroupState.PREPARING_REBALANCE


def test_leave_triggers_rebalance_and_remaining_member_takes_over() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    stabilize(g)
    errors, out = g.leave(0, [("m0", None)])
    assert errors == [ErrorCode.NONE]
    assert g.state is GroupState.PREPARING_REBALANCE
    assert g.leader_id == "m1"
    out = g.join(0, params("m1"), "u")
    res = joins_by_member(out)["m1"]
    assert res.generation_id == 3 and res.leader_id == "m1"
    assert [m.member_id for m in res.members] == ["m1"]


def test_batch_leave_reports_per_member_and_last_leave_empties_group() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    stabilize(g)
    errors, out = g.leave(0, [("m0", None), ("ghost", None), ("m1", None)])
    assert errors == [ErrorCode.NONE, ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.NONE]
    assert g.state is GroupState.EMPTY
    assert out.store is not None and out.store.members == ()
    assert g.generation_id == 3


def test_leave_of_member_that_is_parked_in_join_answers_it() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 1)
    stabilize(g)
    g.join(0, params(), "b")  # parks b, waits for m0
    _, out = g.leave(0, [("b", None)])
    assert [(j.member_id, j.error) for j in out.joins] == [("b", ErrorCode.UNKNOWN_MEMBER_ID)]


def test_session_expiry_removes_silent_member() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    stabilize(g)
    g.heartbeat(SESSION_MS - 1, "m0", g.generation_id, None)
    assert g.next_deadline_ms() == SESSION_MS
    out = g.poll(SESSION_MS)
    assert "m1" not in g.members
    assert g.state is GroupState.PREPARING_REBALANCE
    assert not out.joins


def test_rebalance_timeout_drops_members_that_did_not_rejoin() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    stabilize(g)
    now = 1000
    g.heartbeat(now, "m0", g.generation_id, None)
    g.heartbeat(now, "m1", g.generation_id, None)
    out = g.join(now, params("m0", protocols=(("range", b"new"),)), "u")
    assert out.parked == "m0"
    assert g.join_deadline_ms == now + REBALANCE_MS
    # m1 keeps heartbeating but never rejoins.
    for t in range(now, now + REBALANCE_MS, 3000):
        assert g.heartbeat(t, "m1", g.generation_id, None) is ErrorCode.REBALANCE_IN_PROGRESS
    out = g.poll(now + REBALANCE_MS)
    assert set(joins_by_member(out)) == {"m0"}
    assert list(g.members) == ["m0"]


def test_follower_that_never_syncs_is_removed_after_rebalance_timeout() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    gen = g.generation_id
    g.sync(0, "m0", gen, assignments=[])
    g.on_sync_stored(0, gen, ErrorCode.NONE)
    g.heartbeat(REBALANCE_MS - 1, "m1", gen, None)  # alive but never sends SyncGroup
    g.heartbeat(REBALANCE_MS - 1, "m0", gen, None)
    g.poll(REBALANCE_MS)
    assert list(g.members) == ["m0"]
    assert g.state in (GroupState.PREPARING_REBALANCE, GroupState.COMPLETING_REBALANCE)


def test_static_member_rejoin_without_rebalance() -> None:
    g = Group("g", GroupConfig(), 0)
    g.join(0, params(instance="i-0"), "a")
    g.join(0, params(instance="i-1"), "b")
    g.join(0, params("a", instance="i-0"), "u")
    stabilize(g)
    gen = g.generation_id
    # i-1 restarts: a new JoinGroup with no member id but the same instance id.
    out = g.join(10, params(instance="i-1"), "b2")
    assert isinstance(out.reply, JoinResult)
    assert out.reply.error is ErrorCode.NONE
    assert out.reply.member_id == "b2" and out.reply.generation_id == gen
    assert g.state is GroupState.STABLE
    assert out.store is not None  # the new member id is persisted
    # The old id is fenced, the new one gets its old assignment.
    assert g.heartbeat(10, "b", gen, "i-1") is ErrorCode.UNKNOWN_MEMBER_ID
    assert g.heartbeat(10, "b", gen, None) is ErrorCode.UNKNOWN_MEMBER_ID
    reply = g.sync(10, "b2", gen, "i-1").reply
    assert isinstance(reply, SyncResult) and reply.assignment == b"b"
    # Commits with the old member id but the instance id are fenced.
    assert g.validate_offset_commit(10, "b", "i-1", gen) is ErrorCode.FENCED_INSTANCE_ID


def test_static_leader_rejoin_before_v9_rebalances_v9_skips_assignment() -> None:
    g = Group("g", GroupConfig(), 0)
    g.join(0, params(instance="i-0"), "a")
    stabilize(g)
    out = g.join(0, params(instance="i-0", skip=True), "a2")
    assert isinstance(out.reply, JoinResult) and out.reply.skip_assignment
    assert out.reply.leader_id == "a2" and len(out.reply.members) == 1
    out = g.join(0, params(instance="i-0", skip=False), "a3")
    assert g.generation_id == 2
    assert joins_by_member(out)["a3"].leader_id == "a3"


def test_initial_rebalance_delay_gathers_members() -> None:
    cfg = GroupConfig(initial_rebalance_delay_ms=3000)
    g = Group("g", cfg, 0)
    g.join(0, params(), "a")
    assert g.state is GroupState.PREPARING_REBALANCE
    g.join(1000, params(), "b")
    assert g.next_deadline_ms() == 3000
    out = g.poll(3000)  # b joined during the delay: wait another delay
    assert not out.joins and g.next_deadline_ms() == 6000
    out = g.poll(6000)
    assert set(joins_by_member(out)) == {"a", "b"}
    assert g.generation_id == 1


def test_member_with_changed_metadata_in_stable_triggers_rebalance() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    stabilize(g)
    same = g.join(0, params("m1"), "u")
    assert isinstance(same.reply, JoinResult) and same.reply.generation_id == 2
    assert g.state is GroupState.STABLE
    changed = g.join(0, params("m1", protocols=(("range", b"other"),)), "u")
    assert changed.parked == "m1"
    assert g.state is GroupState.PREPARING_REBALANCE


def test_rebalance_during_completing_fails_parked_syncs() -> None:
    g = Group("g", GroupConfig(), 0)
    form(g, 2)
    g.sync(0, "m1", g.generation_id)
    out = g.join(0, params(), "m2")
    assert [(s.member_id, s.error) for s in out.syncs] == [("m1", ErrorCode.REBALANCE_IN_PROGRESS)]


def test_member_commit_checks_generation_and_simple_commit_needs_empty_group() -> None:
    g = Group("g", GroupConfig(), 0)
    assert g.validate_offset_commit(0, "", None, -1) is ErrorCode.NONE
    form(g, 1)
    gen = g.generation_id
    assert g.validate_offset_commit(0, "m0", None, gen) is ErrorCode.REBALANCE_IN_PROGRESS
    stabilize(g)
    assert g.validate_offset_commit(0, "m0", None, gen) is ErrorCode.NONE
    assert g.validate_offset_commit(0, "m0", None, gen - 1) is ErrorCode.ILLEGAL_GENERATION
    assert g.validate_offset_commit(0, "zz", None, gen) is ErrorCode.UNKNOWN_MEMBER_ID
    assert g.validate_offset_commit(0, "", None, -1) is ErrorCode.UNKNOWN_MEMBER_ID
    g.apply_offsets({("t", 0): OffsetAndMetadata(42, commit_timestamp_ms=0)})
    assert g.fetch_offsets(None) == {("t", 0): OffsetAndMetadata(42, commit_timestamp_ms=0)}
    assert g.fetch_offsets([("t", 1)]) == {("t", 1): None}


def test_offsets_of_empty_consumer_group_expire_after_retention() -> None:
    cfg = GroupConfig(offsets_retention_ms=1000)
    g = Group("g", cfg, 0)
    form(g, 1)
    stabilize(g)
    g.apply_offsets({("t", 0): OffsetAndMetadata(1, commit_timestamp_ms=0)})
    assert g.expired_offsets(5000, 1000) == []  # a live group keeps its offsets
    g.leave(5000, [("m0", None)])
    assert g.state is GroupState.EMPTY
    assert g.expired_offsets(5999, 1000) == []
    assert g.expired_offsets(6000, 1000) == [("t", 0)]


def test_join_window_gathers_members_that_arrive_close_together() -> None:
    """Rule 5: one generation for members arriving within the window of each other."""
    g = Group("g", GroupConfig(join_window_ms=100), 0)
    out = g.join(0, params(), "a")
    assert out.parked == "a" and not out.joins and g.next_deadline_ms() == 100
    first = g.join(60, params(require_known=True), "b")  # MEMBER_ID_REQUIRED extends it
    assert isinstance(first.reply, JoinResult) and first.reply.member_id == "b"
    assert not g.poll(100).joins and g.next_deadline_ms() == 160
    assert g.join(70, params("b"), "unused").parked == "b"
    assert not g.poll(160).joins  # b was admitted at 70: the window runs to 170
    out = g.poll(170)
    assert set(joins_by_member(out)) == {"a", "b"} and g.generation_id == 1


def test_join_window_does_not_delay_a_rebalance_without_newcomers() -> None:
    g = Group("g", GroupConfig(join_window_ms=100), 0)
    g.join(0, params(), "a")
    g.join(0, params(), "b")
    g.poll(100)
    stabilize(g, 100)
    errors, _ = g.leave(1000, [("b", None)])
    assert errors == [ErrorCode.NONE] and g.state is GroupState.PREPARING_REBALANCE
    out = g.join(1001, params("a"), "unused")
    assert set(joins_by_member(out)) == {"a"} and g.generation_id == 2


def test_join_window_never_outlasts_the_rebalance_timeout() -> None:
    g = Group("g", GroupConfig(join_window_ms=100), 0)
    g.join(0, params(), "a")
    for t in range(90, REBALANCE_MS, 90):  # a newcomer every 90 ms keeps the window open
        g.join(t, params(require_known=True), f"p{t}")
        g.poll(t)
        assert g.generation_id == 0
    out = g.poll(REBALANCE_MS)
    assert set(joins_by_member(out)) == {"a"} and g.generation_id == 1
