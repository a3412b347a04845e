"""EntryCache against a model: whatever it returns is exactly what the log holds."""

from __future__ import annotations

import random

import pytest

from broker.raft_storage import EntryCache
from raft.types import Entry


def _entry(index: int, term: int, rng: random.Random) -> Entry:
    return Entry(term, index, data=bytes(rng.randrange(0, 40)))


@pytest.mark.parametrize("seed", range(20))
def test_cache_serves_only_what_the_log_holds(seed: int) -> None:
    rng = random.Random(seed)
    cache = EntryCache(bytes_max=rng.choice((50, 200, 10_000)))
    log: list[Entry] = []  # the model: index i at log[i - 1]
    term = 1
    for _ in range(400):
        action = rng.random()
        if action < 0.5 or not log:  # append, maybe replacing a suffix (a Raft conflict)
            first = rng.randint(max(1, len(log) - 3), len(log) + 1)
            term += rng.random() < 0.2
            batch = [_entry(i, term, rng) for i in range(first, first + rng.randint(1, 4))]
            del log[first - 1 :]
            log.extend(batch)
            cache.append(batch)
        elif action < 0.6:
            cache.release(rng.randint(0, len(log)))
        elif action < 0.62:
            cache.clear()
        else:
            lo = rng.randint(1, len(log))
            hi = rng.randint(lo + 1, len(log) + 1)
            bytes_max = rng.choice((0, 30, 100, 1 << 30))
            got = cache.slice(lo, hi, bytes_max)
            if got is None:
                continue
            want: list[Entry] = []
            size = 0
            for e in log[lo - 1 : hi - 1]:
                size += len(e.data)
                if want and size > bytes_max:
                    break
                want.append(e)
            assert got == want


def test_byte_bound_keeps_the_newest_and_release_empties_it() -> None:
    cache = EntryCache(bytes_max=100)
    cache.append([Entry(1, i, data=bytes(30)) for i in range(1, 11)])
    assert cache.slice(1, 2, 1 << 20) is None  # evicted by the bound
    assert [e.index for e in cache.slice(8, 11, 1 << 20) or []] == [8, 9, 10]
    cache.release(10)
    assert cache.slice(10, 11, 1 << 20) is None
