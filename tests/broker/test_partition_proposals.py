"""Produce batches that arrive while a write-fsync cycle runs go to Raft as one proposal.

A fake driver stands in for the Raft driver: it is "busy" (a Ready being persisted) until
the test says otherwise, and records every proposal it gets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from broker.partition import PROPOSAL_BYTES_MAX, Partition
from raft.errors import ProposalDropped


@dataclass
class FakeGroup:
    term: int = 3
    is_leader: bool = True
    removed: bool = False


@dataclass
class FakeLog:
    first_index: int = 1
    last_index: int = 0

    def entry_prefixes(self, prefix_bytes: int) -> list[tuple[object, bytes]]:
        return []  # an empty log: no producer state to rebuild


@dataclass
class FakeDriver:
    last_index: int = 10
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    proposals: list[list[bytes]] = field(default_factory=list)
    drop: bool = False

    async def until_idle(self, group: FakeGroup) -> None:
        await self.idle.wait()

    async def propose(self, group: FakeGroup, datas: list[bytes]) -> tuple[int, int]:
        if self.drop:
            raise ProposalDropped("too many uncommitted bytes")
        self.proposals.append(list(datas))
        self.last_index += len(datas)
        return self.last_index, group.term


def _partition(driver: FakeDriver, group: FakeGroup) -> Partition:
    partition = Partition(
        "t", 0, 1, (1,), cast(Any, FakeLog()), cast(Any, driver), on_change=lambda _: None
    )
    partition.group = cast(Any, group)
    partition.leader_ready = True
    return partition


async def _start(partition: Partition, group: FakeGroup, batches: list[bytes]) -> list[Any]:
    tasks = [asyncio.create_task(partition._propose(cast(Any, group), b)) for b in batches]
    for _ in range(3):
        await asyncio.sleep(0)  # every task queues its batch
    return tasks


async def test_batches_queued_during_a_cycle_share_one_proposal_in_order() -> None:
    driver, group = FakeDriver(), FakeGroup()
    partition = _partition(driver, group)
    tasks = await _start(partition, group, [b"a", b"b", b"c"])
    assert driver.proposals == []  # the previous cycle's fsync still runs
    driver.idle.set()
    results = await asyncio.gather(*tasks)
    assert driver.proposals == [[b"a", b"b", b"c"]]
    assert results == [(11, 3), (12, 3), (13, 3)]


async def test_a_proposal_holds_at_most_proposal_bytes_max() -> None:
    driver, group = FakeDriver(), FakeGroup()
    partition = _partition(driver, group)
    big = b"x" * (PROPOSAL_BYTES_MAX // 2 + 1)
    tasks = await _start(partition, group, [big, big, b"small"])
    driver.idle.set()
    results = await asyncio.gather(*tasks)
    assert [len(p) for p in driver.proposals] == [1, 2]
    assert [index for index, _ in results] == [11, 12, 13]


async def test_a_dropped_proposal_fails_every_batch_queued_behind_it() -> None:
    driver, group = FakeDriver(drop=True), FakeGroup()
    partition = _partition(driver, group)
    tasks = await _start(partition, group, [b"a", b"b"])
    driver.idle.set()
    for task in tasks:
        with pytest.raises(ProposalDropped):
            await task
    driver.drop = False
    assert await partition._propose(cast(Any, group), b"c") == (11, 3)


async def test_batches_checked_under_an_earlier_leadership_are_not_proposed() -> None:
    driver, group = FakeDriver(), FakeGroup()
    partition = _partition(driver, group)
    tasks = await _start(partition, group, [b"a"])
    group.term = 4  # lost and regained leadership while the batch waited
    driver.idle.set()
    with pytest.raises(ProposalDropped):
        await tasks[0]
    assert driver.proposals == []


async def test_closing_the_partition_fails_queued_batches() -> None:
    driver, group = FakeDriver(), FakeGroup()
    partition = _partition(driver, group)
    tasks = await _start(partition, group, [b"a", b"b"])
    partition.close()
    for task in tasks:
        with pytest.raises(ProposalDropped):
            await task
    driver.idle.set()
    await asyncio.sleep(0)
    assert driver.proposals == []


async def test_closing_while_a_proposal_waits_fails_the_batches_it_took() -> None:
    driver, group = FakeDriver(), FakeGroup()
    driver.idle.set()
    never = asyncio.Event()

    async def stuck_propose(group: FakeGroup, datas: list[bytes]) -> tuple[int, int]:
        await never.wait()  # e.g. the group's Ready is being persisted
        raise AssertionError("unreachable")

    driver.propose = stuck_propose  # type: ignore[method-assign]
    partition = _partition(driver, group)
    tasks = await _start(partition, group, [b"a"])
    partition.close()
    with pytest.raises(ProposalDropped):
        await tasks[0]
