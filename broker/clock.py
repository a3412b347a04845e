"""The broker's only source of time.

Cores (partition state, fetch waiters, producer-state expiry, the Raft driver's tick
bookkeeping) take a `Clock` instead of calling `time` themselves, so tests can drive them
with a `ManualClock` and get the same answer every run. Nothing else in `broker/` should
read `time.monotonic()` or `time.time()` directly (DESIGN.md §6.6 rule 2).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Two clocks: a monotonic one for timeouts and a wall clock for record timestamps."""

    def monotonic_ms(self) -> int:
        """Milliseconds from an arbitrary origin; never goes backwards. For durations only."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (Kafka timestamps, LogAppendTime). May jump."""
        ...


class SystemClock:
    """The real clock, read through the OS."""

    __slots__ = ()

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when a test tells it to."""

    __slots__ = ("_monotonic_ms", "_wall_ms")

    def __init__(self, monotonic_ms: int = 0, wall_ms: int = 1_700_000_000_000) -> None:
        self._monotonic_ms = monotonic_ms
        self._wall_ms = wall_ms

    def monotonic_ms(self) -> int:
        return self._monotonic_ms

    def wall_ms(self) -> int:
        return self._wall_ms

    def advance(self, delta_ms: int) -> None:
        """Moves both clocks forward; a monotonic clock cannot go back."""
        assert delta_ms >= 0, delta_ms
        self._monotonic_ms += delta_ms
        self._wall_ms += delta_ms
