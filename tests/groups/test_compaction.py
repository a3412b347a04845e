"""Compaction of a `__consumer_offsets` shard: the log stops growing, replay does not change.

The coordinator rewrites a shard's live set and truncates everything before it. These
tests keep the whole history next to the truncated log and check that both replay to the
coordinator's own state, also with commits racing the compaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.groups.coordinator import CoordinatorConfig, GroupCoordinator
from broker.groups.offsets_log import Record, offset_record
from broker.groups.state import GroupConfig, GroupCoordinatorShard
from client.protocol.messages.delete_groups import DeleteGroupsRequest
from client.protocol.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from tests.groups.test_coordinator import (
    Clock,
    MemoryGroupLog,
    commit_errors,
    commit_req,
    fetch_offset,
    form_two,
)
from tests.groups.test_replay_and_invariants import view

RECORDS_MIN = 20


class HistoryLog:
    """A GroupLog like a Raft partition's: records take their offsets when appended, and
    the append resolves later (when "committed"); `park` holds back the commit of the
    append carrying a key until its event is set. `history` is never truncated."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.start_offset = 0
        self.history: list[Record] = []
        self.truncations: list[int] = []
        self.park: dict[bytes, asyncio.Event] = {}

    @property
    def end_offset(self) -> int:
        return self.start_offset + len(self.records)

    async def append(self, records: list[Record]) -> int:
        base_offset = self.end_offset
        self.records.extend(records)
        self.history.extend(records)
        for key, _ in records:
            gate = self.park.pop(key, None)
            if gate is not None:
                await gate.wait()
        return base_offset

    async def truncate_before(self, offset: int) -> None:
        assert self.start_offset <= offset <= self.end_offset
        del self.records[: offset - self.start_offset]
        self.start_offset = offset
        self.truncations.append(offset)


def make_one() -> tuple[GroupCoordinator, HistoryLog, Clock]:
    """One shard, so one log holds every group."""
    clock = Clock()
    cfg = CoordinatorConfig(
        group=GroupConfig(),
        offsets_topic_partitions=1,
        compaction_records_min=RECORDS_MIN,
        compaction_live_ratio=2,
    )
    coord = GroupCoordinator(clock, cfg)
    log = HistoryLog()
    coord.load_shard(0, [], log)
    return coord, log, clock


def simple_commit(group: str, partition: int, offset: int) -> OffsetCommitRequest:
    return OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=-1,
        member_id="",
        topics=(
            OffsetCommitRequestTopic(
                name="t",
                partitions=(
                    OffsetCommitRequestPartition(
                        partition_index=partition, committed_offset=offset
                    ),
                ),
            ),
        ),
    )


async def settle() -> None:
    """Let background stores and compactions finish."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await asyncio.gather(*others)


def views(shard: GroupCoordinatorShard) -> dict[str, tuple[object, ...]]:
    return {gid: view(g) for gid, g in shard.groups.items()}


async def test_replay_after_compaction_equals_replay_of_the_whole_history() -> None:
    coord, log, clock = make_one()
    a, b, gen = await form_two(coord)
    for i in range(60):  # the member group, two simple groups, one of them deleted later
        assert commit_errors(await coord.handle_offset_commit(commit_req(gen, a, i), 2)) == [0]
        resp = await coord.handle_offset_commit(simple_commit("s1", i % 3, 1000 + i), 2)
        assert commit_errors(resp) == [0]
        if i < 40:
            resp = await coord.handle_offset_commit(simple_commit("doomed", 0, i), 2)
            assert commit_errors(resp) == [0]
        elif i == 40:
            deleted = await coord.handle_delete_groups(
                DeleteGroupsRequest(groups_names=("doomed",)), 2
            )
            assert deleted.results[0].error_code == 0
    await settle()

    stats = coord.compaction_stats(0)
    assert stats is not None and stats.compactions >= 2, stats
    assert log.start_offset == log.truncations[-1] > 0
    # The log holds the live set plus what came after: far less than the history.
    assert len(log.records) < len(log.history) / 3
    now = clock.now_ms
    whole = GroupCoordinatorShard.load(0, log.history, GroupConfig(), now)
    compacted = GroupCoordinatorShard.load(0, log.records, GroupConfig(), now)
    live = coord._shards[0].state  # type: ignore[union-attr]
    assert views(compacted) == views(whole)
    assert set(compacted.groups) == set(live.groups) - {"doomed"} == {"g", "s1"}
    for gid in compacted.groups:
        assert view(compacted.groups[gid]) == view(live.groups[gid]), gid
    assert compacted.groups["g"].offsets[("t", 0)].offset == 59
    assert {p: o.offset for (_, p), o in compacted.groups["s1"].offsets.items()} == {
        0: 1057,
        1: 1058,
        2: 1059,
    }
    # A successor coordinator loaded from the truncated log serves the latest offsets.
    successor = GroupCoordinator(clock, coord.config)
    successor.load_shard(0, list(log.records), MemoryGroupLog())
    assert await fetch_offset(successor) == 59
    assert await fetch_offset(successor, "doomed") == -1
    assert b in successor._shards[0].state.groups["g"].members  # type: ignore[union-attr]


async def spin_until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_commits_racing_a_compaction_are_neither_lost_nor_overwritten() -> None:
    coord, log, _ = make_one()
    for i in range(RECORDS_MIN):
        assert commit_errors(await coord.handle_offset_commit(simple_commit("g", 0, i), 2)) == [0]
    # An append in the log but not yet committed when the compaction starts: the
    # compaction must wait for it (else its acknowledged value is cut with the prefix).
    p1_key = offset_record("g", "t", 1, None)[0]
    p2_key = offset_record("g", "t", 2, None)[0]
    log.park[p1_key] = first_gate = asyncio.Event()
    in_flight = asyncio.create_task(coord.handle_offset_commit(simple_commit("g", 1, 500), 2))
    await spin_until(lambda: log.end_offset == RECORDS_MIN + 1)
    trigger = await coord.handle_offset_commit(simple_commit("g", 0, 100), 2)
    assert commit_errors(trigger) == [0]  # one record too many: a compaction starts
    # A commit made during the compaction: it must land after the live set (else the
    # live set, written later, holds no value for it and the truncation cuts it).
    log.park[p2_key] = second_gate = asyncio.Event()
    racing = asyncio.create_task(coord.handle_offset_commit(simple_commit("g", 2, 300), 2))
    for _ in range(20):  # loop turns: enough for an unheld append to reach the log
        await asyncio.sleep(0)
    assert p2_key not in {k for k, _ in log.history}, "not held during the compaction"
    first_gate.set()
    assert commit_errors(await in_flight) == [0]
    await spin_until(lambda: bool(log.truncations))
    second_gate.set()
    assert commit_errors(await racing) == [0]
    await settle()

    cut = log.truncations[0]
    assert cut == RECORDS_MIN + 2  # the live set starts right after the trigger
    assert [k for k, _ in log.records][-1] == p2_key  # the racing commit came after it
    replayed = GroupCoordinatorShard.load(0, log.records, GroupConfig(), 0)
    offsets = {p: o.offset for (_, p), o in replayed.groups["g"].offsets.items()}
    assert offsets == {0: 100, 1: 500, 2: 300}
    whole = GroupCoordinatorShard.load(0, log.history, GroupConfig(), 0)
    assert views(replayed) == views(whole)


class FailingLiveSet(HistoryLog):
    """Fails the n-th append; refuses any truncation."""

    def __init__(self, fail_call: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail_call = fail_call

    async def append(self, records: list[Record]) -> int:
        self.calls += 1
        if self.calls == self.fail_call:
            raise RuntimeError("lost leadership")
        return await super().append(records)

    async def truncate_before(self, offset: int) -> None:
        raise AssertionError("must not truncate after a failed compaction")


async def test_failed_live_set_append_truncates_nothing_and_commits_go_on() -> None:
    coord, _, _ = make_one()
    failing = FailingLiveSet(fail_call=RECORDS_MIN + 2)  # the append after the trigger
    coord.load_shard(0, [], failing)
    for i in range(RECORDS_MIN + 1):
        assert commit_errors(await coord.handle_offset_commit(simple_commit("g", 0, i), 2)) == [0]
    await settle()
    assert failing.calls == RECORDS_MIN + 2 and failing.start_offset == 0
    assert commit_errors(await coord.handle_offset_commit(simple_commit("g", 0, 78), 2)) == [0]
    assert await fetch_offset(coord) == 78
    replayed = GroupCoordinatorShard.load(0, failing.records, GroupConfig(), 0)
    assert replayed.groups["g"].offsets[("t", 0)].offset == 78
