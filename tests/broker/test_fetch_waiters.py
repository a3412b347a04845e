"""The bounded long-poll set: wake on notify, time out, refuse when full."""

from __future__ import annotations

import asyncio

from broker.fetch_waiters import FetchWaiters


async def test_notify_wakes_waiter_on_any_of_its_keys() -> None:
    waiters = FetchWaiters(10)
    task = asyncio.create_task(waiters.wait(["a", "b"], timeout_s=30))
    while len(waiters) == 0:
        await asyncio.sleep(0)
    waiters.notify("b")
    assert await task is True
    assert len(waiters) == 0 and waiters._by_key == {}


async def test_timeout_returns_false_and_cleans_up() -> None:
    waiters = FetchWaiters(10)
    assert await waiters.wait(["a"], timeout_s=0.01) is False
    assert waiters._by_key == {}


async def test_full_set_does_not_park() -> None:
    waiters = FetchWaiters(1)
    first = asyncio.create_task(waiters.wait(["a"], timeout_s=30))
    while len(waiters) == 0:
        await asyncio.sleep(0)
    assert await waiters.wait(["a"], timeout_s=30) is False
    waiters.notify_all()
    assert await first is True
