"""The asyncio coordinator with generated request/response objects and an in-memory GroupLog.

The real GroupLog is a Raft-replicated partition (the broker's); here a list stands in,
with switches to hold appends (not yet quorum-committed) or fail them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.groups.coordinator import CoordinatorConfig, GroupCoordinator
from broker.groups.offsets_log import Record, replay
from broker.groups.state import GroupConfig
from client.protocol.errors import ErrorCode, error_for_code
from client.protocol.messages.delete_groups import DeleteGroupsRequest
from client.protocol.messages.describe_groups import DescribeGroupsRequest
from client.protocol.messages.heartbeat import HeartbeatRequest
from client.protocol.messages.join_group import (
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    JoinGroupResponse,
)
from client.protocol.messages.leave_group import LeaveGroupRequest, MemberIdentity
from client.protocol.messages.list_groups import ListGroupsRequest
from client.protocol.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetCommitResponse,
)
from client.protocol.messages.offset_fetch import (
    OffsetFetchRequest,
    OffsetFetchRequestGroup,
    OffsetFetchRequestTopic,
    OffsetFetchRequestTopics,
)
from client.protocol.messages.sync_group import SyncGroupRequest, SyncGroupRequestAssignment

PARTITIONS = 4


class MemoryGroupLog:
    """Appends in call order; `hold` parks appends until released; `fail` raises.

    `records` are the ones from `start_offset` on (`truncate_before` drops a prefix).
    """

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.start_offset = 0
        self.hold: asyncio.Event | None = None
        self.fail: BaseException | None = None

    @property
    def end_offset(self) -> int:
        return self.start_offset + len(self.records)

    async def append(self, records: list[Record]) -> int:
        if self.fail is not None:
            raise self.fail
        if self.hold is not None:
            await self.hold.wait()
        base_offset = self.end_offset
        self.records.extend(records)
        return base_offset

    async def truncate_before(self, offset: int) -> None:
        assert self.start_offset <= offset <= self.end_offset
        del self.records[: offset - self.start_offset]
        self.start_offset = offset


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now_ms


def make(
    clock: Clock | None = None, **group_cfg: int
) -> tuple[GroupCoordinator, MemoryGroupLog, Clock]:
    clock = clock or Clock()
    cfg = CoordinatorConfig(group=GroupConfig(**group_cfg), offsets_topic_partitions=PARTITIONS)
    coord = GroupCoordinator(clock, cfg)
    log = MemoryGroupLog()
    for p in range(PARTITIONS):
        coord.load_shard(p, [], log)
    return coord, log, clock


def join_req(member_id: str = "", metadata: bytes = b"sub", **kw: object) -> JoinGroupRequest:
    return JoinGroupRequest(
        group_id=str(kw.pop("group_id", "g")),
        session_timeout_ms=int(kw.pop("session_timeout_ms", 10_000)),  # type: ignore[call-overload]
        rebalance_timeout_ms=int(kw.pop("rebalance_timeout_ms", 30_000)),  # type: ignore[call-overload]
        member_id=member_id,
        protocol_type="consumer",
        protocols=(JoinGroupRequestProtocol(name="range", metadata=metadata),),
        **kw,  # type: ignore[arg-type]
    )


async def join(coord: GroupCoordinator, req: JoinGroupRequest, version: int) -> JoinGroupResponse:
    resp = await coord.handle_join_group(req, version, "client", "/127.0.0.1")
    resp.encode(version)  # every field valid for the version
    return resp


async def join_with_id(coord: GroupCoordinator, version: int = 5, **kw: object) -> str:
    """The v4+ MEMBER_ID_REQUIRED round trip: returns the id the coordinator hands out."""
    first = await join(coord, join_req(**kw), version)  # type: ignore[arg-type]
    assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED
    assert first.member_id.startswith("client-")
    return first.member_id


async def sync(
    coord: GroupCoordinator, member_id: str, generation: int, assignments: dict[str, bytes]
) -> tuple[int, bytes]:
    req = SyncGroupRequest(
        group_id="g",
        generation_id=generation,
        member_id=member_id,
        assignments=tuple(
            SyncGroupRequestAssignment(member_id=m, assignment=a) for m, a in assignments.items()
        ),
    )
    resp = await coord.handle_sync_group(req, 3)
    resp.encode(3)
    return resp.error_code, resp.assignment


async def heartbeat(coord: GroupCoordinator, member_id: str, generation: int) -> int:
    req = HeartbeatRequest(group_id="g", generation_id=generation, member_id=member_id)
    return (await coord.handle_heartbeat(req, 3)).error_code


def commit_req(
    generation: int, member_id: str, offset: int, group: str = "g"
) -> OffsetCommitRequest:
    return OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=generation,
        member_id=member_id,
        topics=(
            OffsetCommitRequestTopic(
                name="t",
                partitions=(
                    OffsetCommitRequestPartition(
                        partition_index=0, committed_offset=offset, committed_metadata="md"
                    ),
                ),
            ),
        ),
    )


def commit_errors(resp: OffsetCommitResponse) -> list[int]:
    return [p.error_code for t in resp.topics for p in t.partitions]


async def fetch_offset(coord: GroupCoordinator, group: str = "g") -> int:
    req = OffsetFetchRequest(
        group_id=group, topics=(OffsetFetchRequestTopic(name="t", partition_indexes=(0,)),)
    )
    resp = await coord.handle_offset_fetch(req, 1)
    resp.encode(1)
    return resp.topics[0].partitions[0].committed_offset


async def form_two(coord: GroupCoordinator) -> tuple[str, str, int]:
    """Two members in a Stable group through real request flows; returns ids and generation."""
    a = await join_with_id(coord)
    ra = await join(coord, join_req(a), 5)
    assert (ra.error_code, ra.generation_id, ra.leader) == (0, 1, a)
    assert await sync(coord, a, 1, {a: b"A"}) == (0, b"A")
    b = await join_with_id(coord)
    join_b = asyncio.create_task(join(coord, join_req(b), 5))
    await asyncio.sleep(0)
    assert not join_b.done()  # parked until the leader rejoins
    assert await heartbeat(coord, a, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    ra = await join(coord, join_req(a), 5)
    rb = await join_b
    assert ra.generation_id == rb.generation_id == 2
    assert ra.leader == rb.leader == a
    assert sorted(m.member_id for m in ra.members) == sorted([a, b]) and rb.members == ()
    follower = asyncio.create_task(sync(coord, b, 2, {}))
    await asyncio.sleep(0)
    assert not follower.done()  # waits for the leader's assignment
    assert await sync(coord, a, 2, {a: b"A2", b: b"B2"}) == (0, b"A2")
    assert await follower == (0, b"B2")
    return a, b, 2


async def test_group_forms_rebalances_and_persists_assignment() -> None:
    coord, log, _ = make()
    a, b, gen = await form_two(coord)
    stored = replay(log.records).groups["g"]
    assert stored.generation_id == gen and stored.leader_id == a
    assert {m.member_id: m.assignment for m in stored.members} == {a: b"A2", b: b"B2"}
    assert await heartbeat(coord, b, gen) == ErrorCode.NONE
    assert await heartbeat(coord, b, gen - 1) == ErrorCode.ILLEGAL_GENERATION
    assert await heartbeat(coord, "who", gen) == ErrorCode.UNKNOWN_MEMBER_ID


async def test_leave_then_remaining_member_takes_over_alone() -> None:
    coord, _, _ = make()
    a, b, gen = await form_two(coord)
    resp = await coord.handle_leave_group(LeaveGroupRequest(group_id="g", member_id=a), 1)
    assert resp.error_code == 0
    assert await heartbeat(coord, b, gen) == ErrorCode.REBALANCE_IN_PROGRESS
    rb = await join(coord, join_req(b), 5)
    assert (rb.generation_id, rb.leader, [m.member_id for m in rb.members]) == (3, b, [b])


async def test_batch_leave_v3_reports_each_member() -> None:
    coord, _, _ = make()
    a, b, _ = await form_two(coord)
    req = LeaveGroupRequest(
        group_id="g",
        members=(MemberIdentity(member_id=a), MemberIdentity(member_id="ghost")),
    )
    resp = await coord.handle_leave_group(req, 3)
    resp.encode(3)
    assert [(m.member_id, m.error_code) for m in resp.members] == [
        (a, 0),
        ("ghost", ErrorCode.UNKNOWN_MEMBER_ID),
    ]
    assert await heartbeat(coord, b, 2) == ErrorCode.REBALANCE_IN_PROGRESS  # b stays


async def test_member_commit_is_acknowledged_only_once_durable() -> None:
    coord, log, _ = make()
    a, _, gen = await form_two(coord)
    log.hold = asyncio.Event()
    pending = asyncio.create_task(coord.handle_offset_commit(commit_req(gen, a, 42), 2))
    await asyncio.sleep(0)
    assert not pending.done()
    assert await fetch_offset(coord) == -1  # not quorum-committed yet: not visible
    log.hold.set()
    assert commit_errors(await pending) == [0]
    assert await fetch_offset(coord) == 42
    stale = await coord.handle_offset_commit(commit_req(gen - 1, a, 50), 2)
    assert commit_errors(stale) == [ErrorCode.ILLEGAL_GENERATION]
    stranger = await coord.handle_offset_commit(commit_req(-1, "", 50), 2)
    assert commit_errors(stranger) == [ErrorCode.UNKNOWN_MEMBER_ID]
    assert await fetch_offset(coord) == 42


async def test_failed_append_fails_the_commit_and_changes_nothing() -> None:
    coord, log, _ = make()
    log.fail = error_for_code(ErrorCode.NOT_LEADER_OR_FOLLOWER)()
    resp = await coord.handle_offset_commit(commit_req(-1, "", 7, group="simple"), 2)
    assert commit_errors(resp) == [ErrorCode.NOT_COORDINATOR]
    assert await fetch_offset(coord, "simple") == -1


async def test_simple_consumer_commit_fetch_all_and_v8_groups() -> None:
    coord, _, _ = make()
    resp = await coord.handle_offset_commit(commit_req(-1, "", 7, group="simple"), 8)
    resp.encode(8)  # served: OffsetCommit 2-8
    assert commit_errors(resp) == [0]
    all_req = OffsetFetchRequest(group_id="simple", topics=None)
    all_resp = await coord.handle_offset_fetch(all_req, 7)
    all_resp.encode(7)
    assert [
        (t.name, p.partition_index, p.committed_offset, p.metadata)
        for t in all_resp.topics
        for p in t.partitions
    ] == [("t", 0, 7, "md")]
    v8 = OffsetFetchRequest(
        groups=(
            OffsetFetchRequestGroup(group_id="simple", topics=None),
            OffsetFetchRequestGroup(
                group_id="nobody",
                topics=(OffsetFetchRequestTopics(name="t", partition_indexes=(0, 1)),),
            ),
        )
    )
    v8_resp = await coord.handle_offset_fetch(v8, 8)  # v8 is not served yet; the logic is ready
    got = {
        g.group_id: [
            (p.partition_index, p.committed_offset) for t in g.topics for p in t.partitions
        ]
        for g in v8_resp.groups
    }
    assert got == {"simple": [(0, 7)], "nobody": [(0, -1), (1, -1)]}


async def test_failover_rebuilds_offsets_and_membership_from_the_log() -> None:
    coord, log, clock = make()
    a, b, gen = await form_two(coord)
    assert commit_errors(await coord.handle_offset_commit(commit_req(gen, a, 99), 2)) == [0]
    successor = GroupCoordinator(clock, coord.config)
    partition = successor.shard_for("g")
    successor.load_shard(partition, list(log.records), MemoryGroupLog())
    assert await fetch_offset(successor) == 99
    desc = await successor.handle_describe_groups(DescribeGroupsRequest(groups=("g",)), 4)
    desc.encode(4)
    group = desc.groups[0]
    assert (group.group_state, group.protocol_type, group.protocol_data) == (
        "Stable",
        "consumer",
        "range",
    )
    assert {m.member_id: m.member_assignment for m in group.members} == {a: b"A2", b: b"B2"}
    assert await heartbeat(successor, b, gen) == ErrorCode.NONE
    assert commit_errors(await successor.handle_offset_commit(commit_req(gen, b, 100), 2)) == [0]


async def test_routing_not_coordinator_and_loading() -> None:
    clock = Clock()
    coord = GroupCoordinator(clock, CoordinatorConfig(offsets_topic_partitions=PARTITIONS))
    assert not coord.owns("g")
    resp = await join(coord, join_req(), 5)
    assert resp.error_code == ErrorCode.NOT_COORDINATOR
    coord.mark_loading(coord.shard_for("g"))
    assert (await join(coord, join_req(), 5)).error_code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert await fetch_offset(coord) == -1  # v1 reports the error per partition
    fetched = await coord.handle_offset_fetch(OffsetFetchRequest(group_id="g", topics=None), 7)
    assert fetched.error_code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    coord.load_shard(coord.shard_for("g"), [], MemoryGroupLog())
    assert coord.owns("g")


async def test_unload_answers_parked_join_with_not_coordinator() -> None:
    coord, _, _ = make()
    a, _, _ = await form_two(coord)
    c = await join_with_id(coord)
    parked = asyncio.create_task(join(coord, join_req(c), 5))
    await asyncio.sleep(0)
    assert not parked.done()
    coord.unload_shard(coord.shard_for("g"))
    assert (await parked).error_code == ErrorCode.NOT_COORDINATOR
    assert await heartbeat(coord, a, 2) == ErrorCode.NOT_COORDINATOR


async def test_delete_groups() -> None:
    coord, log, _ = make()
    a, b, gen = await form_two(coord)
    await coord.handle_offset_commit(commit_req(gen, a, 5), 2)
    req = DeleteGroupsRequest(groups_names=("g", "missing"))
    resp = await coord.handle_delete_groups(req, 2)
    resp.encode(2)
    assert [(r.group_id, r.error_code) for r in resp.results] == [
        ("g", ErrorCode.NON_EMPTY_GROUP),
        ("missing", ErrorCode.GROUP_ID_NOT_FOUND),
    ]
    leave = LeaveGroupRequest(
        group_id="g", members=(MemberIdentity(member_id=a), MemberIdentity(member_id=b))
    )
    await coord.handle_leave_group(leave, 3)
    resp = await coord.handle_delete_groups(DeleteGroupsRequest(groups_names=("g",)), 2)
    assert [r.error_code for r in resp.results] == [0]
    assert replay(log.records).groups == {} and replay(log.records).offsets == {}
    assert await fetch_offset(coord) == -1


async def test_list_and_describe_groups() -> None:
    coord, _, _ = make()
    await form_two(coord)
    await coord.handle_offset_commit(commit_req(-1, "", 1, group="simple"), 2)
    listed = await coord.handle_list_groups(ListGroupsRequest(), 4)
    listed.encode(4)
    assert sorted((g.group_id, g.protocol_type, g.group_state) for g in listed.groups) == [
        ("g", "consumer", "Stable"),
        ("simple", "", "Empty"),
    ]
    assert sorted(g.group_id for g in coord.loaded_groups()) == ["g", "simple"]
    only_empty = await coord.handle_list_groups(ListGroupsRequest(states_filter=("empty",)), 4)
    assert [g.group_id for g in only_empty.groups] == ["simple"]
    desc = await coord.handle_describe_groups(DescribeGroupsRequest(groups=("nope",)), 0)
    assert desc.groups[0].group_state == "Dead" and desc.groups[0].error_code == 0


async def test_join_v0_uses_session_timeout_and_encodes_errors() -> None:
    coord, _, _ = make()
    resp = await join(coord, join_req(session_timeout_ms=7000), 0)  # no MEMBER_ID_REQUIRED in v0
    assert resp.error_code == 0 and resp.generation_id == 1
    group = coord._shards[coord.shard_for("g")].state.get("g")  # type: ignore[union-attr]
    assert group is not None
    assert group.members[resp.member_id].rebalance_timeout_ms == 7000
    bad = await join(coord, join_req(session_timeout_ms=1), 0)
    assert bad.error_code == ErrorCode.INVALID_SESSION_TIMEOUT and bad.protocol_name == ""
    bad7 = await join(coord, join_req(session_timeout_ms=1, group_id="other"), 7)
    assert bad7.protocol_name is None
    listed = await coord.handle_list_groups(ListGroupsRequest(), 0)
    assert [g.group_id for g in listed.groups] == ["g"]  # no husk left by the failed join


async def test_pending_request_bound() -> None:
    clock = Clock()
    cfg = CoordinatorConfig(offsets_topic_partitions=1, pending_requests_max=1)
    coord = GroupCoordinator(clock, cfg)
    coord.load_shard(0, [], MemoryGroupLog())
    a = (await join(coord, join_req(), 3)).member_id  # gen 1, a alone
    b_parked = asyncio.create_task(join(coord, join_req(), 3))  # parks: waits for a
    await asyncio.sleep(0)
    c = await join(coord, join_req(), 3)
    assert c.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    await join(coord, join_req(a), 3)
    assert (await b_parked).error_code == 0


async def test_tick_expires_sessions_and_offsets_with_manual_clock() -> None:
    coord, log, clock = make(offsets_retention_ms=60_000)
    a, b, gen = await form_two(coord)
    await coord.handle_offset_commit(commit_req(gen, a, 3), 2)
    coord.tick()
    clock.now_ms += 9_000
    assert await heartbeat(coord, a, gen) == 0  # b stays silent
    clock.now_ms += 1_000
    coord.tick()
    assert await heartbeat(coord, a, gen) == ErrorCode.REBALANCE_IN_PROGRESS
    assert await heartbeat(coord, b, gen) == ErrorCode.UNKNOWN_MEMBER_ID
    await coord.handle_leave_group(LeaveGroupRequest(group_id="g", member_id=a), 0)
    clock.now_ms += 60_000
    coord.tick()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await fetch_offset(coord) == -1
    assert replay(log.records).offsets == {}
    await coord.stop()


async def test_background_timer_completes_rebalance_when_a_member_never_rejoins() -> None:
    """Real clock, real timer: the rebalance timeout (200 ms) ends the wait for a silent member."""
    clock = lambda: time.monotonic_ns() // 1_000_000  # noqa: E731
    cfg = CoordinatorConfig(
        group=GroupConfig(min_session_timeout_ms=10), offsets_topic_partitions=1
    )
    coord = GroupCoordinator(clock, cfg)
    coord.load_shard(0, [], MemoryGroupLog())
    coord.start()
    try:
        short = {"session_timeout_ms": 5_000, "rebalance_timeout_ms": 200}
        a = (await join(coord, join_req(**short), 3)).member_id  # type: ignore[arg-type]
        assert await sync(coord, a, 1, {a: b""}) == (0, b"")
        b = await asyncio.wait_for(join(coord, join_req(**short), 3), 10)  # type: ignore[arg-type]
        assert (b.error_code, b.generation_id, b.leader) == (0, 2, b.member_id)
    finally:
        await coord.stop()


@pytest.mark.parametrize("version", [2, 3, 7, 8])
async def test_commit_versions_encode(version: int) -> None:
    coord, _, _ = make()
    resp = await coord.handle_offset_commit(commit_req(-1, "", 1, group="v"), version)
    resp.encode(version)
    assert commit_errors(resp) == [0]
