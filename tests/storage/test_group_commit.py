"""Group commit: one fsync covers every append that was ready when it started.

A file system whose first fsync blocks on an event makes batching deterministic: while
that fsync is held, many appends request a sync; when it is released exactly one more
fsync must cover all of them, and every future must resolve to a flushed index that
covers its own entry. No sleeps: the blocked fsync is the synchronisation point.
"""

from __future__ import annotations

import asyncio
import errno
import threading

import pytest

from storage import (
    FsyncPolicy,
    GroupCommitter,
    LogConfig,
    LogFailedError,
    LogIOError,
    MemoryFileSystem,
    PartitionLog,
)
from tests.storage.util import DIRECTORY, data_entries


class Gate:
    """An fsync hook that holds the first fsync after arm() until release is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.armed = False
        self.fsyncs = 0

    def __call__(self, path: str) -> None:
        self.fsyncs += 1
        if self.armed:
            self.armed = False
            self.entered.set()
            assert self.release.wait(10)


def _gated() -> tuple[MemoryFileSystem, Gate]:
    fs = MemoryFileSystem()
    gate = Gate()
    fs.fsync_hook = gate
    return fs, gate


def _open(fs: MemoryFileSystem, policy: FsyncPolicy = FsyncPolicy.ALWAYS) -> PartitionLog:
    config = LogConfig(segment_bytes_max=1 << 20, fsync_policy=policy)
    return PartitionLog.open(DIRECTORY, config, fs=fs, clock_ms=lambda: 0)


def test_appends_during_an_fsync_share_the_next_one() -> None:
    fs, gate = _gated()
    log = _open(fs)
    committer = GroupCommitter(log)
    gate.armed = True
    log.append(data_entries(1, 1))
    first = committer.request_sync()
    assert gate.entered.wait(10)
    syncs_before = log.sync_count
    futures = []
    for index in range(2, 52):
        log.append(data_entries(index, 1))
        futures.append((index, committer.request_sync()))
    assert (committer.appended_index, committer.written_index) == (51, 51)
    assert committer.flushed_index == 0
    gate.release.set()
    assert first.result(10) >= 1
    for index, future in futures:
        assert future.result(10) >= index
    # The held sync (counted when it ends) and exactly one more for all 50 appends.
    assert log.sync_count - syncs_before == 2
    assert committer.sync_count == 2
    assert committer.flushed_index == 51
    committer.close()
    log.close()


async def test_asyncio_appenders_wait_on_wrapped_futures() -> None:
    """The broker's use: many tasks append, await the wrapped future, fewer fsyncs."""
    fs, gate = _gated()
    log = _open(fs)
    committer = GroupCommitter(log)
    gate.armed = True
    fsyncs_before = gate.fsyncs
    next_index = 1

    async def appender() -> tuple[int, int]:
        nonlocal next_index
        index = next_index
        next_index += 1
        log.append(data_entries(index, 1))
        flushed = await asyncio.wrap_future(committer.request_sync())
        return index, flushed

    tasks = [asyncio.create_task(appender()) for _ in range(40)]
    await asyncio.sleep(0)  # every task appends and parks on its future
    assert await asyncio.to_thread(gate.entered.wait, 10)
    gate.release.set()
    results = await asyncio.gather(*tasks)
    assert all(flushed >= index for index, flushed in results)
    assert gate.fsyncs - fsyncs_before <= 2  # the held one, then one for the rest
    committer.close()
    log.close()


def test_failed_fsync_fails_every_waiter_and_the_log() -> None:
    fs = MemoryFileSystem()
    log = _open(fs)
    committer = GroupCommitter(log)
    log.append(data_entries(1, 3))
    fs.inject("fsync", errno.EIO)
    with pytest.raises(LogIOError):
        committer.request_sync().result(10)
    assert log.flushed_index == 0
    with pytest.raises(LogFailedError):
        committer.request_sync().result(10)
    committer.close()
    fs.crash()
    reopened = _open(fs)  # reopening re-scans what really reached the disk
    assert reopened.last_index == 0
    reopened.close()


def test_never_policy_does_not_fsync() -> None:
    fs = MemoryFileSystem()
    log = _open(fs, FsyncPolicy.NEVER)
    committer = GroupCommitter(log)
    fsyncs = fs.fsync_count
    log.append(data_entries(1, 10))
    assert committer.request_sync().result(10) == 10
    assert fs.fsync_count == fsyncs
    committer.close()
    log.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_owner_operations_race_the_committer_thread_safely(seed: int) -> None:
    """The owner appends, rolls, reads and truncates while syncs run on the committer
    thread; every future covers its entry and the synced log survives a crash intact."""
    import random

    fs = MemoryFileSystem()
    config = LogConfig(segment_bytes_max=600, index_interval_bytes=100, open_segments_max=2)
    log = PartitionLog.open(DIRECTORY, config, fs=fs, clock_ms=lambda: 0)
    committer = GroupCommitter(log)
    rng = random.Random(seed)
    waits = []
    term = 1
    for _ in range(600):
        choice = rng.random()
        if choice < 0.8:
            index = log.last_index + 1
            log.append(data_entries(index, rng.randint(1, 3), term=term))
            waits.append((log.last_index, committer.request_sync()))
        elif choice < 0.85:
            log.roll()
        elif choice < 0.9 and log.last_index > log.first_index:
            term += 1
            log.truncate_suffix(rng.randint(log.first_index, log.last_index))
            waits.clear()  # earlier indexes now name different entries
        elif choice < 0.93:
            log.truncate_prefix(rng.randint(log.first_index, log.last_index + 1))
        elif log.last_index >= log.first_index:
            lo = rng.randint(log.first_index, log.last_index)
            assert log.read_entries(lo, log.last_index + 1, 500)[0].index == lo
    for index, future in waits:
        assert future.result(10) >= index
    committer.close()
    expected = log.read_entries(log.first_index, log.last_index + 1, 1 << 30)
    expected_bytes = [(e.index, e.term, bytes(e.payload)) for e in expected]
    first_index, last_index = log.first_index, log.last_index
    fs.crash()
    log = PartitionLog.open(DIRECTORY, config, fs=fs, clock_ms=lambda: 0)
    assert (log.first_index, log.last_index) == (first_index, last_index)
    got = log.read_entries(first_index, last_index + 1, 1 << 30)
    assert [(e.index, e.term, bytes(e.payload)) for e in got] == expected_bytes
    log.close()


def test_a_request_with_nothing_new_resolves_without_an_fsync() -> None:
    fs = MemoryFileSystem()
    log = _open(fs)
    committer = GroupCommitter(log)
    log.append(data_entries(1, 2))
    assert committer.request_sync().result(10) == 2
    fsyncs = fs.fsync_count
    future = committer.request_sync()
    assert future.done()
    assert future.result() == 2
    assert fs.fsync_count == fsyncs
    committer.close()
    log.close()
