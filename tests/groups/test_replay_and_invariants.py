"""Replaying what the coordinator persisted rebuilds the same groups; random operation
sequences never break the state machine's invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.groups.offsets_log import (
    OffsetAndMetadata,
    Record,
    group_record,
    live_records,
    offset_record,
)
from broker.groups.state import (
    Group,
    GroupConfig,
    GroupCoordinatorShard,
    GroupState,
    JoinParams,
    Outcome,
)
from client.protocol.errors import ErrorCode

CFG = GroupConfig()


def params(member_id: str = "", instance: str | None = None, meta: bytes = b"m") -> JoinParams:
    return JoinParams(
        member_id=member_id,
        group_instance_id=instance,
        client_id="cid",
        client_host="/10.0.0.1",
        session_timeout_ms=10_000,
        rebalance_timeout_ms=20_000,
        protocol_type="consumer",
        protocols=(("range", meta),),
        require_known_member_id=False,
    )


class Persisting:
    """Plays the coordinator's part: stores every outcome's metadata and commits."""

    def __init__(self, shard: GroupCoordinatorShard) -> None:
        self.shard = shard
        self.records: list[Record] = []

    def handle(self, group: Group, out: Outcome, now_ms: int) -> None:
        if out.store is not None:
            self.records.append(group_record(group.group_id, out.store))
            if out.store_is_sync:
                self.handle(
                    group, group.on_sync_stored(now_ms, group.generation_id, ErrorCode.NONE), now_ms
                )

    def commit(self, group: Group, tp: tuple[str, int], offset: int, now_ms: int) -> None:
        value = OffsetAndMetadata(offset, 3, "md", now_ms)
        self.records.append(offset_record(group.group_id, tp[0], tp[1], value))
        group.apply_offsets({tp: value})


def view(group: Group) -> tuple[object, ...]:
    return (
        group.state,
        group.generation_id,
        group.protocol_type,
        group.protocol_name,
        group.leader_id,
        dict(group.static_members),
        [
            (m.member_id, m.group_instance_id, m.client_id, m.client_host, m.session_timeout_ms,
             m.rebalance_timeout_ms, m.metadata_for(group.protocol_name), m.assignment)
            for m in group.members.values()
        ],
        dict(group.offsets),
    )  # fmt: skip


def test_replay_rebuilds_stable_empty_and_offsets_only_groups() -> None:
    shard = GroupCoordinatorShard(0, CFG)
    p = Persisting(shard)
    now = 1000
    # "live": two members, one static, Stable with assignments and offsets.
    live = shard.get_or_create("live", now)
    p.handle(live, live.join(now, params(instance="i1"), "a"), now)
    p.handle(live, live.join(now, params(), "b"), now)
    p.handle(live, live.join(now, params("a", instance="i1"), "x"), now)
    p.handle(live, live.sync(now, "b", live.generation_id), now)
    assignments = [("a", b"A"), ("b", b"B")]
    p.handle(live, live.sync(now, "a", live.generation_id, "i1", assignments=assignments), now)
    assert live.state is GroupState.STABLE
    p.commit(live, ("t", 0), 5, now)
    p.commit(live, ("t", 0), 9, now)
    # "gone": formed, then everybody left: Empty with a bumped generation and offsets.
    gone = shard.get_or_create("gone", now)
    p.handle(gone, gone.join(now, params(), "c"), now)
    p.handle(gone, gone.sync(now, "c", 1, assignments=[("c", b"C")]), now)
    p.commit(gone, ("u", 1), 7, now)
    _, out = gone.leave(now + 5, [("c", None)])
    p.handle(gone, out, now + 5)
    assert gone.state is GroupState.EMPTY
    # "simple": offsets only, never a member.
    simple = shard.get_or_create("simple", now)
    p.commit(simple, ("v", 2), 11, now)

    for records in (p.records, live_records(p.records)):
        rebuilt = GroupCoordinatorShard.load(0, records, CFG, now + 10)
        assert set(rebuilt.groups) == {"live", "gone", "simple"}
        for group_id, group in shard.groups.items():
            assert view(rebuilt.groups[group_id]) == view(group), group_id
        assert rebuilt.groups["gone"].state_timestamp_ms == now + 5  # retention clock kept
        assert rebuilt.groups["live"].heartbeat(now + 10, "b", 2, None) is ErrorCode.NONE


def test_deleted_group_stays_deleted_after_replay() -> None:
    shard = GroupCoordinatorShard(0, CFG)
    p = Persisting(shard)
    g = shard.get_or_create("g", 0)
    p.commit(g, ("t", 0), 1, 0)
    p.records += [offset_record("g", "t", 0, None), group_record("g", None)]
    assert GroupCoordinatorShard.load(0, p.records, CFG, 0).groups == {}
    assert live_records(p.records) == []


def test_shard_expiry_tombstones_replay_to_nothing() -> None:
    cfg = GroupConfig(offsets_retention_ms=1000)
    shard = GroupCoordinatorShard(0, cfg)
    p = Persisting(shard)
    g = shard.get_or_create("g", 0)
    p.commit(g, ("t", 0), 1, 0)
    assert shard.expire_offsets(999) == []
    tombstones = shard.expire_offsets(1000)
    assert shard.groups == {}
    assert GroupCoordinatorShard.load(0, p.records + tombstones, cfg, 0).groups == {}


# --- random operation sequences --------------------------------------------------------

MEMBER_IDS = [f"m{i}" for i in range(6)]  # join_new hands out m0, m1, ... in order
ops = st.lists(
    st.one_of(
        st.tuples(st.just("join_new"), st.sampled_from([None, "i0", "i1"]), st.integers(0, 1)),
        st.tuples(st.just("rejoin"), st.sampled_from(MEMBER_IDS), st.integers(0, 1)),
        st.tuples(st.just("sync"), st.sampled_from(MEMBER_IDS), st.booleans()),
        st.tuples(st.just("stored"), st.sampled_from([ErrorCode.NONE, ErrorCode.NOT_COORDINATOR])),
        st.tuples(st.just("heartbeat"), st.sampled_from(MEMBER_IDS)),
        st.tuples(st.just("leave"), st.sampled_from(MEMBER_IDS)),
        st.tuples(st.just("advance"), st.integers(0, 25_000) | st.sampled_from([40, 80, 120])),
    ),
    max_size=40,
)


def check_invariants(g: Group) -> None:
    if g.members and g.state is not GroupState.EMPTY:
        assert g.leader_id in g.members
    if g.state is GroupState.EMPTY:
        assert not g.members
    for m in g.members.values():
        assert not m.awaiting_join or g.state is GroupState.PREPARING_REBALANCE
        assert not m.awaiting_sync or g.state is GroupState.COMPLETING_REBALANCE
    for instance, member_id in g.static_members.items():
        assert g.members[member_id].group_instance_id == instance
    assert g.pending_sync <= set(g.members)
    if g.state is GroupState.PREPARING_REBALANCE:
        assert g.join_deadline_ms is not None or g.initial_delay_deadline_ms is not None


@settings(max_examples=100, deadline=None)
@given(ops, st.sampled_from([0, 3000]), st.sampled_from([0, 100]))
def test_random_operations_keep_invariants(
    script: list[tuple[object, ...]], delay: int, window: int
) -> None:
    g = Group("g", GroupConfig(initial_rebalance_delay_ms=delay, join_window_ms=window), 0)
    now = 0
    fresh = iter(range(1000))  # member ids are unique, as the coordinator's uuids are
    for op in script:
        kind = op[0]
        out = Outcome()
        if kind == "join_new":
            out = g.join(now, params(instance=op[1], meta=bytes([op[2]])), f"m{next(fresh)}")
        elif kind == "rejoin":
            out = g.join(now, params(str(op[1]), meta=bytes([op[2]])), "unused")
        elif kind == "sync":
            member = str(op[1])
            assignments = [(m, m.encode()) for m in g.members] if op[2] else []
            out = g.sync(now, member, g.generation_id, assignments=assignments)
        elif kind == "stored":
            out = g.on_sync_stored(now, g.generation_id, op[1])  # type: ignore[arg-type]
        elif kind == "heartbeat":
            g.heartbeat(now, str(op[1]), g.generation_id, None)
        elif kind == "leave":
            _, out = g.leave(now, [(str(op[1]), None)])
        else:
            now += int(op[1])  # type: ignore[call-overload]
            out = g.poll(now)
        assert out.reply is None or out.parked is None  # answered now, or parked: not both
        check_invariants(g)
        for _ in range(3):  # polling reaches a fixpoint: nothing stays overdue
            deadline = g.next_deadline_ms()
            if deadline is None or deadline > now:
                break
            g.poll(now)
            check_invariants(g)
        else:
            raise AssertionError(f"deadline {g.next_deadline_ms()} stays due at {now}")
    # Whatever happened, time alone brings the group to rest: nobody waits forever.
    for _ in range(10):
        now += 60_000
        g.poll(now)
    check_invariants(g)
    assert g.state in (GroupState.EMPTY, GroupState.STABLE, GroupState.COMPLETING_REBALANCE)
    assert not any(m.awaiting_join for m in g.members.values())
