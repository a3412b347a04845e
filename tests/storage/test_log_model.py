"""PartitionLog against a plain list model (the Python analog of Redpanda's opfuzz).

Method: hypothesis drives random sequences of append, sync, read, truncate suffix,
truncate prefix, roll, reset, reopen, full-disk appends and crashes (unsynced data lost,
optionally with a torn or zero-filled tail) against a log on MemoryFileSystem with tiny
segments and a tiny recent-offset cache, so segment rolls, sparse-index walks and disk
lookups happen constantly. After every step the log must equal the model: same index
range, terms, payloads, and the offset translator must agree in both directions. After a
crash the log must hold the model's durable prefix, plus at most a prefix of the entries
that were written but not synced (a torn write may keep whole frames), never anything else.
"""

from __future__ import annotations

import errno
import os
import random
import struct
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from storage import (
    EntryKind,
    LogConfig,
    LogEntry,
    LogFullError,
    MemoryFileSystem,
    PartitionLog,
)

DIRECTORY = "/data/topic-0"
CONFIG = LogConfig(
    segment_bytes_max=512,
    index_interval_bytes=96,
    entry_bytes_max=200,
    open_segments_max=2,
    recent_entries_max=3,
)


@dataclass(frozen=True)
class ModelEntry:
    index: int
    term: int
    kind: EntryKind
    record_count: int
    payload: bytes
    base_offset: int


@dataclass(frozen=True)
class ModelState:
    first_index: int
    start_offset: int
    prev_term: int
    entries: tuple[ModelEntry, ...]

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    @property
    def end_offset(self) -> int:
        if not self.entries:
            return self.start_offset
        last = self.entries[-1]
        return last.base_offset + last.record_count


entry_specs = st.lists(
    st.tuples(
        st.sampled_from([EntryKind.DATA, EntryKind.DATA, EntryKind.NOOP, EntryKind.CONFIG]),
        st.integers(0, 4),
        st.integers(0, 90),
    ),
    min_size=1,
    max_size=6,
)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fs = MemoryFileSystem()
        self.now_ms = 0
        self.log = PartitionLog.open(DIRECTORY, CONFIG, fs=self.fs, clock_ms=self.clock)
        self.current = ModelState(1, 0, 0, ())
        self.durable = self.current
        self.term = 1
        self.rng = random.Random(7)

    def clock(self) -> int:
        return self.now_ms

    # Rules -------------------------------------------------------------------------------

    @rule(specs=entry_specs, term_bump=st.integers(0, 1))
    def append(self, specs: list[tuple[EntryKind, int, int]], term_bump: int) -> None:
        self.term += term_bump
        state = self.current
        offset = state.end_offset
        new: list[ModelEntry] = []
        for slot, (kind, count, size) in enumerate(specs):
            count = count if kind == EntryKind.DATA else 0
            index = state.last_index + 1 + slot
            payload = bytes((index * 7 + i) % 251 for i in range(size))
            new.append(ModelEntry(index, self.term, kind, count, payload, offset))
            offset += count
        results = self.log.append(
            [LogEntry(e.index, e.term, e.kind, e.record_count, e.payload) for e in new]
        )
        assert [(r.index, r.base_offset) for r in results] == [
            (e.index, e.base_offset) for e in new
        ]
        self.current = replace(state, entries=state.entries + tuple(new))

    @rule(size=st.integers(20, 90))
    def append_disk_full(self, size: int) -> None:
        """ENOSPC mid-write: the append is refused and nothing of it is kept or served."""
        self.fs.inject("write", errno.ENOSPC)
        entry = LogEntry(self.current.last_index + 1, self.term, EntryKind.DATA, 1, bytes(size))
        try:
            self.log.append([entry])
        except LogFullError:
            pass
        else:
            raise AssertionError("append on a full disk succeeded")
        finally:
            self.fs.clear_faults()

    @rule()
    def sync(self) -> None:
        assert self.log.sync() == self.current.last_index
        self.durable = self.current

    @rule(data=st.data())
    def truncate_suffix(self, data: st.DataObject) -> None:
        state = self.current
        after = data.draw(st.integers(state.first_index - 1, state.last_index))
        self.log.truncate_suffix(after)
        keep = tuple(e for e in state.entries if e.index <= after)
        self.current = replace(state, entries=keep)
        if after < state.last_index:
            self.durable = self.current  # a truncation is durable on return
        self.term += 1  # the next leader's entries come in a later term

    @rule(data=st.data())
    def truncate_prefix(self, data: st.DataObject) -> None:
        state = self.current
        before = data.draw(st.integers(state.first_index, state.last_index + 1))
        start_offset = self._offset_for_index(state, before)
        prev_term = self._term_at(state, before - 1)
        self.log.truncate_prefix(before)
        self.current = ModelState(
            before, start_offset, prev_term, tuple(e for e in state.entries if e.index >= before)
        )
        # The start checkpoint is durable; data that was never synced is still not.
        self.durable = ModelState(
            before,
            start_offset,
            prev_term,
            tuple(e for e in self.durable.entries if e.index >= before),
        )

    @rule(gap=st.integers(0, 5), offset_gap=st.integers(0, 5))
    def reset(self, gap: int, offset_gap: int) -> None:
        state = self.current
        next_index = state.last_index + 1 + gap
        next_offset = state.end_offset + offset_gap
        self.term += 1
        self.log.reset(next_index, next_offset, self.term)
        self.current = self.durable = ModelState(next_index, next_offset, self.term, ())

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule(age_ms=st.integers(0, 10))
    def advance_clock(self, age_ms: int) -> None:
        self.now_ms += age_ms

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.durable = self.current
        self.log = PartitionLog.open(DIRECTORY, CONFIG, fs=self.fs, clock_ms=self.clock)
        assert self.log.recovery is not None
        assert self.log.recovery.bytes_cut == 0

    @rule(tear=st.booleans())
    def crash(self, tear: bool) -> None:
        self.fs.crash(tear=tear, rng=self.rng)
        self.log = PartitionLog.open(DIRECTORY, CONFIG, fs=self.fs, clock_ms=self.clock)
        durable, current = self.durable, self.current
        survivors = self.log.last_index - durable.last_index
        assert survivors >= 0, "lost synced entries"
        if not tear:
            assert survivors == 0
        # A torn write may leave whole frames behind: they must be the written ones.
        extra = tuple(e for e in current.entries if e.index > durable.last_index)[:survivors]
        assert len(extra) == survivors, "entries appeared that were never written"
        self.current = self.durable = replace(durable, entries=durable.entries + extra)
        event(f"crash: torn={tear}, unsynced entries kept={'some' if survivors else 'none'}")

    @precondition(lambda self: self.current.entries)
    @rule(data=st.data(), bytes_max=st.integers(1, 400))
    def read_offsets(self, data: st.DataObject, bytes_max: int) -> None:
        state = self.current
        if state.end_offset == state.start_offset:
            return
        start = data.draw(st.integers(state.start_offset, state.end_offset - 1))
        result = self.log.read_offsets(start, bytes_max)
        expected = [
            e
            for e in state.entries
            if e.kind == EntryKind.DATA
            and e.record_count
            and e.base_offset + e.record_count > start
        ]
        assert result.batches, "the first batch is always served"
        assert len(result.batches) <= len(expected)
        for batch, entry in zip(result.batches, expected):
            assert len(batch) == len(entry.payload)
            assert bytes(batch[16:]) == entry.payload[16:]
            if len(batch) >= 16:
                assert struct.unpack_from(">q", batch, 0)[0] == entry.base_offset
                assert struct.unpack_from(">i", batch, 12)[0] == entry.term
                assert bytes(batch[8:12]) == entry.payload[8:12]
        if len(result.batches) > 1:
            assert result.bytes_total <= bytes_max
        last = expected[len(result.batches) - 1]
        assert result.next_offset == last.base_offset + last.record_count

    # Checks ------------------------------------------------------------------------------

    @staticmethod
    def _offset_for_index(state: ModelState, index: int) -> int:
        if index == state.last_index + 1:
            return state.end_offset
        return state.entries[index - state.first_index].base_offset

    @staticmethod
    def _term_at(state: ModelState, index: int) -> int:
        if index == state.first_index - 1:
            return state.prev_term
        return state.entries[index - state.first_index].term

    @invariant()
    def log_equals_model(self) -> None:
        log, state = self.log, self.current
        assert (log.first_index, log.last_index) == (state.first_index, state.last_index)
        assert (log.log_start_offset, log.log_end_offset) == (
            state.start_offset,
            state.end_offset,
        )
        assert log.written_index == state.last_index
        assert log.flushed_index <= log.written_index
        for index in range(state.first_index - 1, state.last_index + 1):
            assert log.term_at(index) == self._term_at(state, index)
        for index in range(state.first_index, state.last_index + 2):
            assert log.offset_for_index(index) == self._offset_for_index(state, index)
        for entry in state.entries:
            for offset in range(entry.base_offset, entry.base_offset + entry.record_count):
                assert log.index_for_offset(offset) == entry.index
        assert log.index_for_offset(state.end_offset) == state.last_index + 1
        got = log.read_entries(state.first_index, state.last_index + 1, 1 << 20)
        assert [(e.index, e.term, e.kind, e.record_count, bytes(e.payload)) for e in got] == [
            (e.index, e.term, e.kind, e.record_count, e.payload) for e in state.entries
        ]

    def teardown(self) -> None:
        self.log.close()


LogMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("STORAGE_MODEL_EXAMPLES", "150")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogModel = LogMachine.TestCase
