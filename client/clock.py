"""The client's only source of time.

Pure parts (cluster.py, accumulator.py, partitioner.py) take `now_ms` as an
argument; the asyncio shells get it from a Clock, so tests can substitute a
fake one and nothing else in client/ reads time directly. Monotonic time drives
timeouts, linger and backoff; wall time is only for record timestamps.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic_ms(self) -> int: ...
    def wall_ms(self) -> int: ...
    async def sleep_ms(self, delay_ms: float) -> None: ...


class AsyncioClock:
    """Real time: the event loop's monotonic clock and the system wall clock."""

    __slots__ = ()

    def monotonic_ms(self) -> int:
        return int(time.monotonic() * 1000)

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_ms(self, delay_ms: float) -> None:
        await asyncio.sleep(max(0.0, delay_ms) / 1000)


SYSTEM_CLOCK = AsyncioClock()
