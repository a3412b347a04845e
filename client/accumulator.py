"""The producer's record accumulator: per-partition batches waiting to be sent.

Theory of operation. `append` puts a record into the open (last) batch of its
partition's deque, opening a new batch when the open one is full. A batch
becomes *ready* when it is full, when it has waited `linger_ms`, or when a
flush or close wants everything out now. The sender asks `ready()` which
leader nodes have something ready (and how long until the next batch will be),
then `drain()`s, for each such node, at most one request's worth of batches,
fairly across partitions.

Memory is bounded: each open batch reserves `batch_bytes_max` (or the size of
the one record that did not fit an ordinary batch) out of `buffer_bytes_max`,
and gives it back when the batch is completed. `append` returns None when the
buffer is full; the producer then waits for space (back-pressure) instead of
growing without bound.

Ordering: a partition's batches leave in the order they were created and are
never reordered by retries. At most `in_flight_per_partition_max` batches of one
partition are in flight. A batch that fails with a retriable error goes back to
its deque in sequence order and *halts* the partition: nothing more of that
partition is drained until every batch in flight for it has come back; the
retried batches then leave first, after `retry_backoff_ms`. With idempotence the
broker's sequence check makes several in-flight batches safe; without it, the
producer sets the per-partition limit to 1.

Pure: no I/O, no clock reads (every method takes `now_ms`), no asyncio. The
record encoding itself is delegated to a builder (client.protocol.records) made
by an injected factory, so tests can use a simple one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from client.structs import TopicPartition

Headers = Sequence[tuple[str, bytes | None]]


class BatchBuilderLike(Protocol):
    """What the accumulator needs from a record batch builder."""

    def append(
        self, key: bytes | None, value: bytes | None, headers: Headers, timestamp_ms: int
    ) -> bool: ...


BuilderFactory = Callable[[TopicPartition, int], BatchBuilderLike]


class ProducerBatch:
    """One batch of one partition, from its first record to its acknowledgement."""

    __slots__ = (
        "attempts",
        "base_sequence",
        "builder",
        "bytes_reserved",
        "created_ms",
        "full",
        "handle",
        "in_flight",
        "record_count",
        "retry_at_ms",
        "tp",
    )

    def __init__(
        self, tp: TopicPartition, builder: BatchBuilderLike, created_ms: int, bytes_reserved: int
    ) -> None:
        self.tp = tp
        self.builder = builder
        self.created_ms = created_ms
        self.bytes_reserved = bytes_reserved
        self.record_count = 0
        self.full = False
        self.attempts = 0
        self.retry_at_ms = 0
        self.base_sequence = -1  # assigned on first drain when idempotent
        self.in_flight = False
        self.handle: object = None  # the producer's completion state (futures); opaque here

    def __repr__(self) -> str:
        return (
            f"ProducerBatch({self.tp}, records={self.record_count}, "
            f"seq={self.base_sequence}, attempts={self.attempts})"
        )


@dataclass(frozen=True, slots=True)
class ReadyCheck:
    """Answer of `ready()`: nodes to drain now, and when to look again."""

    nodes: frozenset[int]
    next_check_ms: int  # delay until the earliest not-yet-ready batch becomes ready
    unknown_leaders: frozenset[str]  # topics with a batch waiting for a leader


class _PartitionQueue:
    __slots__ = ("batches", "halted", "in_flight", "next_sequence")

    def __init__(self) -> None:
        self.batches: deque[ProducerBatch] = deque()
        self.in_flight = 0
        self.halted = False
        self.next_sequence = 0


class Accumulator:
    """Per-partition batches with linger, bounded memory and order-preserving retries."""

    def __init__(
        self,
        builder_factory: BuilderFactory,
        *,
        batch_bytes_max: int = 16384,
        linger_ms: int = 5,
        buffer_bytes_max: int = 32 * 1024 * 1024,
        retry_backoff_ms: int = 100,
        in_flight_per_partition_max: int = 1,
        assign_sequences: bool = False,
    ) -> None:
        assert batch_bytes_max > 0 and buffer_bytes_max >= batch_bytes_max
        assert in_flight_per_partition_max >= 1
        self._factory = builder_factory
        self.batch_bytes_max = batch_bytes_max
        self.linger_ms = linger_ms
        self.buffer_bytes_max = buffer_bytes_max
        self.retry_backoff_ms = retry_backoff_ms
        self.in_flight_per_partition_max = in_flight_per_partition_max
        self.assign_sequences = assign_sequences
        self.buffered_bytes = 0
        self.flushing = 0  # > 0 while someone waits in flush() or close(): linger is skipped
        self._queues: dict[TopicPartition, _PartitionQueue] = {}
        self._incomplete = 0  # batches created and not yet completed
        self._drain_start = 0  # rotates the first partition drained, for fairness

    # ---- producing -----------------------------------------------------------------------

    def try_append(
        self,
        tp: TopicPartition,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> tuple[ProducerBatch, int] | None:
        """Fast path: add to the partition's open batch; None if that needs a new batch."""
        q = self._queues.get(tp)
        if q is None or not q.batches:
            return None
        last = q.batches[-1]
        if last.full or last.in_flight or last.attempts:
            return None
        if last.builder.append(key, value, headers, timestamp_ms):
            last.record_count += 1
            return last, last.record_count - 1
        last.full = True
        return None

    def append(
        self,
        tp: TopicPartition,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
        now_ms: int,
        record_bytes: int,
    ) -> tuple[ProducerBatch, int] | None:
        """Add a record; returns (batch, index in batch), or None if the buffer is full."""
        q = self._queues.get(tp)
        if q is None:
            q = self._queues[tp] = _PartitionQueue()
        if q.batches:
            last = q.batches[-1]
            if not last.full and not last.in_flight and last.attempts == 0:
                if last.builder.append(key, value, headers, timestamp_ms):
                    last.record_count += 1
                    return last, last.record_count - 1
                last.full = True
        reserve = max(self.batch_bytes_max, record_bytes)
        if self.buffered_bytes + reserve > self.buffer_bytes_max and self._incomplete:
            return None
        batch = ProducerBatch(tp, self._factory(tp, reserve), now_ms, reserve)
        fits = batch.builder.append(key, value, headers, timestamp_ms)
        assert fits, "an empty batch must accept one record of up to its reserved size"
        batch.record_count = 1
        self.buffered_bytes += reserve
        self._incomplete += 1
        q.batches.append(batch)
        return batch, 0

    def has_room(self, record_bytes: int) -> bool:
        reserve = max(self.batch_bytes_max, record_bytes)
        return self._incomplete == 0 or self.buffered_bytes + reserve <= self.buffer_bytes_max

    # ---- sending -------------------------------------------------------------------------

    def _sendable(self, q: _PartitionQueue) -> ProducerBatch | None:
        if not q.batches or q.in_flight >= self.in_flight_per_partition_max:
            return None
        if q.halted and q.in_flight:
            return None  # wait for every in-flight batch to return before retrying in order
        head = q.batches[0]
        return None if head.in_flight else head

    def ready(self, now_ms: int, leader_for: Callable[[TopicPartition], int]) -> ReadyCheck:
        nodes: set[int] = set()
        unknown: set[str] = set()
        next_check = 1 << 30
        for tp, q in self._queues.items():
            head = self._sendable(q)
            if head is None:
                continue
            leader = leader_for(tp)
            if leader < 0:
                unknown.add(tp.topic)
                continue
            if leader in nodes:
                continue
            if head.attempts and head.retry_at_ms > now_ms:
                next_check = min(next_check, head.retry_at_ms - now_ms)
                continue
            due_ms = head.created_ms + self.linger_ms
            if head.full or len(q.batches) > 1 or self.flushing or due_ms <= now_ms:
                nodes.add(leader)
            else:
                next_check = min(next_check, due_ms - now_ms)
        return ReadyCheck(frozenset(nodes), next_check, frozenset(unknown))

    def drain(
        self,
        nodes: Iterable[int],
        request_bytes_max: int,
        now_ms: int,
        leader_for: Callable[[TopicPartition], int],
    ) -> dict[int, list[ProducerBatch]]:
        """Take at most one request's worth of ready batches per node, one per partition."""
        wanted = set(nodes)
        out: dict[int, list[ProducerBatch]] = {}
        sizes: dict[int, int] = {}
        items = list(self._queues.items())
        if not items:
            return out
        start = self._drain_start % len(items)
        self._drain_start += 1
        for tp, q in items[start:] + items[:start]:
            leader = leader_for(tp)
            if leader not in wanted:
                continue
            head = self._sendable(q)
            if head is None or (head.attempts and head.retry_at_ms > now_ms):
                continue
            size = sizes.get(leader, 0)
            if size and size + head.bytes_reserved > request_bytes_max:
                continue
            q.batches.popleft()
            self._mark_sent(q, head)
            sizes[leader] = size + head.bytes_reserved
            out.setdefault(leader, []).append(head)
        return out

    def _mark_sent(self, q: _PartitionQueue, batch: ProducerBatch) -> None:
        batch.full = True
        batch.in_flight = True
        batch.attempts += 1
        q.in_flight += 1
        if self.assign_sequences and batch.base_sequence < 0:
            batch.base_sequence = q.next_sequence
            q.next_sequence = (q.next_sequence + batch.record_count) & 0x7FFFFFFF
        if not q.batches or q.batches[0].attempts == 0:
            q.halted = False  # the last retried batch has left: new batches may follow

    # ---- results -------------------------------------------------------------------------

    def complete(self, batch: ProducerBatch) -> None:
        """The batch is done for good (acknowledged, or failed without retry)."""
        q = self._queues[batch.tp]
        if batch.in_flight:
            batch.in_flight = False
            q.in_flight -= 1
        else:
            q.batches.remove(batch)  # aborted before it was ever sent
        self.buffered_bytes -= batch.bytes_reserved
        self._incomplete -= 1
        assert self.buffered_bytes >= 0 and self._incomplete >= 0 and q.in_flight >= 0

    def requeue(self, batch: ProducerBatch, now_ms: int) -> None:
        """Retriable failure: put the batch back in order and halt its partition."""
        assert batch.in_flight
        q = self._queues[batch.tp]
        batch.in_flight = False
        q.in_flight -= 1
        batch.retry_at_ms = now_ms + self.retry_backoff_ms
        q.halted = True
        # Re-insert before the first batch that was created (or sequenced) after this one.
        i = 0
        for i, other in enumerate(q.batches):  # noqa: B007 - index used after the loop
            if other.attempts == 0 or _sooner(batch, other):
                break
        else:
            i = len(q.batches)
        q.batches.insert(i, batch)

    def reset_sequences(self, tp: TopicPartition) -> None:
        """After a new producer id/epoch: batches not yet acknowledged get fresh sequences."""
        q = self._queues.get(tp)
        if q is None:
            return
        q.next_sequence = 0
        for b in q.batches:
            b.base_sequence = -1

    def reset_all_sequences(self) -> None:
        for tp in self._queues:
            self.reset_sequences(tp)

    def is_halted(self, tp: TopicPartition) -> bool:
        """Whether a retried batch of `tp` waits to be resent (later ones must wait)."""
        q = self._queues.get(tp)
        return q is not None and q.halted

    def abort_undrained(self) -> list[ProducerBatch]:
        """Remove every batch not in flight (close without flush, fatal producer error)."""
        aborted: list[ProducerBatch] = []
        for q in self._queues.values():
            while q.batches:
                b = q.batches.popleft()
                self.buffered_bytes -= b.bytes_reserved
                self._incomplete -= 1
                aborted.append(b)
        return aborted

    def expire(self, now_ms: int, delivery_timeout_ms: int) -> list[ProducerBatch]:
        """Remove batches (not in flight) older than `delivery_timeout_ms`."""
        expired: list[ProducerBatch] = []
        for q in self._queues.values():
            while q.batches and now_ms - q.batches[0].created_ms >= delivery_timeout_ms:
                b = q.batches.popleft()
                self.buffered_bytes -= b.bytes_reserved
                self._incomplete -= 1
                expired.append(b)
        return expired

    # ---- state ---------------------------------------------------------------------------

    @property
    def incomplete(self) -> int:
        """Batches created and not yet completed (queued or in flight)."""
        return self._incomplete

    def queued_partitions(self) -> list[TopicPartition]:
        return [tp for tp, q in self._queues.items() if q.batches]

    def in_flight_for(self, tp: TopicPartition) -> int:
        q = self._queues.get(tp)
        return 0 if q is None else q.in_flight


def _sooner(a: ProducerBatch, b: ProducerBatch) -> bool:
    if a.base_sequence >= 0 and b.base_sequence >= 0:
        return a.base_sequence < b.base_sequence
    return a.created_ms < b.created_ms
