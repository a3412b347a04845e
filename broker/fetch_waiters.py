"""Long-poll fetches waiting for data: Kafka's fetch "purgatory", bounded.

A consumer's Fetch names `max_wait_ms` and `min_bytes`: if less than `min_bytes` is
available, the broker should hold the request until more data is committed or the wait
runs out. Each waiting fetch parks one future here under every partition it reads; when
a partition's high watermark moves, `notify` wakes every fetch parked on it, which then
re-reads and either answers or parks again until its deadline.

The set is bounded (`waiters_max`): when it is full a fetch is not parked and is answered
at once with what is there, which is always correct, only chattier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable


class FetchWaiters:
    def __init__(self, waiters_max: int) -> None:
        assert waiters_max >= 0
        self.waiters_max = waiters_max
        self._by_key: dict[Hashable, set[asyncio.Future[None]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    async def wait(self, keys: Iterable[Hashable], timeout_s: float) -> bool:
        """Park until one of `keys` is notified or `timeout_s` passes.

        Returns True when woken by a notification, False on timeout or when the set is full.
        """
        if timeout_s <= 0 or self._count >= self.waiters_max:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        parked = list(dict.fromkeys(keys))
        for key in parked:
            self._by_key.setdefault(key, set()).add(fut)
        self._count += 1
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._count -= 1
            for key in parked:
                bucket = self._by_key.get(key)
                if bucket is not None:
                    bucket.discard(fut)
                    if not bucket:
                        del self._by_key[key]

    def notify(self, key: Hashable) -> None:
        """Wake every fetch parked on `key` (its high watermark moved)."""
        bucket = self._by_key.get(key)
        if not bucket:
            return
        for fut in bucket:
            if not fut.done():
                fut.set_result(None)

    def notify_all(self) -> None:
        """Wake everyone, e.g. on shutdown or leadership loss."""
        for key in list(self._by_key):
            self.notify(key)
