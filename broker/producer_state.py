"""Idempotent-producer state of one partition: who wrote which sequence numbers where.

Kafka's idempotent producer numbers its batches per partition (base sequence, count) and
retries a batch with the same numbers when it does not hear back. The partition leader
must therefore recognise a retry of a batch it already appended, and answer it with the
*original* offset without appending it again, and it must refuse a batch that skips
sequence numbers (OUT_OF_ORDER_SEQUENCE_NUMBER) or comes from a fenced epoch
(INVALID_PRODUCER_EPOCH). Kafka keeps the last five batches per producer for this; so do we.

The state is a pure function of the partition's committed log: every replica folds the
committed batches into it with `apply_batch`, so whoever leads next already knows every
producer (a retry across a failover is still caught). On top of that the leader keeps
the batches it has appended but not yet committed ("pending"), so that a retry racing
with its own original is recognised too. Pending batches belong to one leadership term
and are dropped when the node stops leading.

Sequence numbers wrap at 2**31-1 back to 0, as in Kafka.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

BATCHES_KEPT_PER_PRODUCER = 5
_SEQUENCE_MOD = 2**31
NO_PRODUCER_ID = -1


class Verdict(enum.Enum):
    APPEND = "append"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER_SEQUENCE = "out_of_order_sequence"
    INVALID_PRODUCER_EPOCH = "invalid_producer_epoch"


@dataclass(frozen=True, slots=True)
class BatchSequence:
    """What one appended batch of an idempotent producer looked like."""

    producer_epoch: int
    first_sequence: int
    last_sequence: int
    base_offset: int  # -1 while pending: the offset is known only once the log assigns it
    last_offset: int
    timestamp_ms: int


@dataclass(slots=True)
class ProducerEntry:
    producer_epoch: int
    batches: deque[BatchSequence] = field(
        default_factory=lambda: deque(maxlen=BATCHES_KEPT_PER_PRODUCER)
    )
    last_timestamp_ms: int = 0

    @property
    def last_sequence(self) -> int | None:
        return self.batches[-1].last_sequence if self.batches else None


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    duplicate_of: BatchSequence | None = None
    message: str = ""


def next_sequence(sequence: int) -> int:
    return (sequence + 1) % _SEQUENCE_MOD


def last_sequence_of(first_sequence: int, record_count: int) -> int:
    return (first_sequence + record_count - 1) % _SEQUENCE_MOD


class ProducerStateTable:
    """Per-partition producer state: committed entries plus the leader's pending batches."""

    def __init__(self) -> None:
        self._committed: dict[int, ProducerEntry] = {}
        self._pending: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._committed)

    def producers(self) -> Iterator[tuple[int, ProducerEntry]]:
        return iter(self._committed.items())

    def check(
        self, producer_id: int, producer_epoch: int, first_sequence: int, record_count: int
    ) -> Decision:
        """Decide what to do with an incoming idempotent batch (on the leader, before appending)."""
        last_sequence = last_sequence_of(first_sequence, record_count)
        entry = self._pending.get(producer_id) or self._committed.get(producer_id)
        if entry is None:
            if first_sequence != 0:
                return Decision(
                    Verdict.OUT_OF_ORDER_SEQUENCE,
                    message=f"unknown producer {producer_id} must start at sequence 0, got {first_sequence}",
                )
            return Decision(Verdict.APPEND)
        if producer_epoch < entry.producer_epoch:
            return Decision(
                Verdict.INVALID_PRODUCER_EPOCH,
                message=f"producer {producer_id} epoch {producer_epoch} is older than {entry.producer_epoch}",
            )
        if producer_epoch > entry.producer_epoch:
            if first_sequence != 0:
                return Decision(
                    Verdict.OUT_OF_ORDER_SEQUENCE,
                    message=f"a new epoch of producer {producer_id} must start at sequence 0",
                )
            return Decision(Verdict.APPEND)
        for batch in self._batches_of_epoch(producer_id, producer_epoch):
            if batch.first_sequence == first_sequence and batch.last_sequence == last_sequence:
                return Decision(Verdict.DUPLICATE, duplicate_of=batch)
        expected = next_sequence(entry.last_sequence) if entry.last_sequence is not None else 0
        if first_sequence != expected:
            return Decision(
                Verdict.OUT_OF_ORDER_SEQUENCE,
                message=f"producer {producer_id} expected sequence {expected}, got {first_sequence}",
            )
        return Decision(Verdict.APPEND)

    def _batches_of_epoch(self, producer_id: int, epoch: int) -> Iterator[BatchSequence]:
        """Recent batches of this producer epoch only: sequences restart at 0 with each
        epoch, so an older epoch's batch with the same sequence range is a different batch
        (matching it would acknowledge a new batch with an old batch's offset: data loss)."""
        for table in (self._committed, self._pending):
            entry = table.get(producer_id)
            if entry is not None and entry.producer_epoch == epoch:
                yield from entry.batches

    def add_pending(
        self,
        producer_id: int,
        producer_epoch: int,
        first_sequence: int,
        record_count: int,
        timestamp_ms: int,
    ) -> BatchSequence:
        """Record a batch the leader has handed to Raft but not yet seen committed."""
        batch = BatchSequence(
            producer_epoch,
            first_sequence,
            last_sequence_of(first_sequence, record_count),
            -1,
            -1,
            timestamp_ms,
        )
        entry = self._pending.get(producer_id)
        if entry is None or entry.producer_epoch != producer_epoch:
            entry = ProducerEntry(producer_epoch)
            self._pending[producer_id] = entry
        entry.batches.append(batch)
        return batch

    def remove_pending(self, producer_id: int, producer_epoch: int, first_sequence: int) -> None:
        """Forget one batch that never reached the log (its proposal was dropped)."""
        entry = self._pending.get(producer_id)
        if entry is None or entry.producer_epoch != producer_epoch:
            return
        kept = [b for b in entry.batches if b.first_sequence != first_sequence]
        entry.batches.clear()
        entry.batches.extend(kept)
        if not entry.batches:
            del self._pending[producer_id]

    def clear_pending(self) -> None:
        """Forget uncommitted batches: called when this node stops leading."""
        self._pending.clear()

    def apply_batch(
        self,
        producer_id: int,
        producer_epoch: int,
        first_sequence: int,
        base_offset: int,
        record_count: int,
        timestamp_ms: int,
    ) -> None:
        """Fold one committed idempotent batch into the state (every replica does this)."""
        if producer_id == NO_PRODUCER_ID:
            return
        entry = self._committed.get(producer_id)
        if entry is None or producer_epoch > entry.producer_epoch:
            entry = ProducerEntry(producer_epoch)
            self._committed[producer_id] = entry
        elif producer_epoch < entry.producer_epoch:
            return  # a zombie's batch: it cannot move the state back
        batch = BatchSequence(
            producer_epoch,
            first_sequence,
            last_sequence_of(first_sequence, record_count),
            base_offset,
            base_offset + record_count - 1,
            timestamp_ms,
        )
        entry.batches.append(batch)
        entry.last_timestamp_ms = max(entry.last_timestamp_ms, timestamp_ms)
        pending = self._pending.get(producer_id)
        if pending is not None:
            while pending.batches and (
                pending.batches[0].first_sequence == first_sequence
                and pending.batches[0].producer_epoch == producer_epoch
            ):
                pending.batches.popleft()
            if not pending.batches:
                del self._pending[producer_id]

    def expire(self, now_ms: int, idle_ms_max: int) -> int:
        """Drop producers idle for longer than `idle_ms_max`; returns how many."""
        stale = [
            pid for pid, e in self._committed.items() if now_ms - e.last_timestamp_ms > idle_ms_max
        ]
        for pid in stale:
            del self._committed[pid]
        return len(stale)

    def to_snapshot(self) -> list[list[int]]:
        """Plain lists for msgpack: one row per kept batch."""
        rows = []
        for pid, entry in sorted(self._committed.items()):
            for b in entry.batches:
                rows.append(
                    [
                        pid,
                        b.producer_epoch,
                        b.first_sequence,
                        b.base_offset,
                        b.last_offset,
                        b.timestamp_ms,
                    ]
                )
        return rows

    @classmethod
    def from_snapshot(cls, rows: list[list[int]]) -> ProducerStateTable:
        table = cls()
        for pid, epoch, first_seq, base_offset, last_offset, ts in rows:
            table.apply_batch(pid, epoch, first_seq, base_offset, last_offset - base_offset + 1, ts)
        return table
