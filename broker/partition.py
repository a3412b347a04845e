"""A Kafka partition replica: Kafka's semantics on top of one Raft group and its log.

The partition is the Raft group's state machine. Its log *is* the Raft log: a produced
record batch becomes one DATA entry, appended and replicated by Raft, and stamped with its
Kafka base offset and leader epoch only when served. So:

- the **leader epoch** is the group's Raft term (Kafka's generation clock);
- the **high watermark** is the Raft commit index translated to a Kafka offset, on the
  leader and on every follower (followers learn the commit index from append and
  heartbeat messages); it never goes backwards;
- a **new leader** serves reads and accepts writes only once it has committed an entry of
  its own term (the no-op it appends on election): before that its commit index may lag
  the old leader's, and clients would see the high watermark move back;
- **acks=all** answers when the entry is committed (replicated to a quorum, each of which
  fsynced it); **acks=1** when the leader's own log holds it durably; acks=0 never.
  A leader that loses leadership before commit fails its waiting produces with
  NOT_LEADER_OR_FOLLOWER: the entry's fate is then unknown (it may still commit under the
  next leader), which is Kafka's contract for that error too.

Idempotent producers are checked here against `ProducerStateTable`, which every replica
folds committed batches into, so a retry is recognised by whoever leads next.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from broker.producer_state import ProducerStateTable, Verdict
from broker.raft_driver import RaftDriver, RaftGroup
from broker.raft_storage import kafka_record_count
from client.protocol.errors import ErrorCode
from raft.errors import ProposalDropped
from raft.types import Entry, EntryKind, Role, Snapshot, SoftState
from storage.errors import OffsetOutOfRangeError
from storage.frame import EntryKind as StorageKind
from storage.log import PartitionLog, ReadResult

log = logging.getLogger("raftka.partition")

# Record batch v2 header fields the partition reads (see client.protocol.records).
_PRODUCER = struct.Struct(">qhi")  # producerId @43, producerEpoch @51, baseSequence @53
_MAX_TIMESTAMP = struct.Struct(">q")  # maxTimestamp @35
_ATTRIBUTES = struct.Struct(">h")  # @21
_BATCH_HEADER_BYTES = 61
#: A replicated "drop the log below this offset" command (shorter than any batch).
_TRUNCATE_MAGIC = b"RFTK:truncate\x00"
_OFFSET = struct.Struct(">q")
#: Most batch bytes handed to Raft in one proposal (one append and one fsync). Batches
#: beyond it wait for the next round; the queue itself is bounded by the connections
#: and in-flight requests the listener admits.
PROPOSAL_BYTES_MAX = 8 << 20


class PartitionError(Exception):
    """A produce or fetch that fails with a Kafka error code."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    base_offset: int
    log_start_offset: int


@dataclass(slots=True)
class _Inflight:
    term: int
    future: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class _QueuedBatch:
    """A batch waiting for the partition's next proposal; `slot` gets (index, term)."""

    batch: bytes
    term: int  # the leadership term the batch was checked in
    slot: asyncio.Future[tuple[int, int]]


class Partition:
    """One hosted replica of `topic`-`index`. See the module docstring."""

    def __init__(
        self,
        topic: str,
        index: int,
        group_id: int,
        replicas: tuple[int, ...],
        log: PartitionLog,
        driver: RaftDriver,
        on_change: Callable[[Partition], None],
    ) -> None:
        self.topic = topic
        self.index = index
        self.group_id = group_id
        self.replicas = replicas
        self.log = log
        self.driver = driver
        self.on_change = on_change
        self.group: RaftGroup | None = None
        self.producers = ProducerStateTable()
        self.high_watermark = 0
        self.leader_id = 0
        self.leader_epoch = 0
        #: True on the leader once an entry of its own term is committed (see module doc).
        self.leader_ready = False
        self._inflight: dict[int, _Inflight] = {}
        #: Futures of in-flight idempotent batches by (producer id, epoch, first sequence),
        #: so that a retry racing its original gets the original's answer.
        self._pending_batches: dict[tuple[int, int, int], asyncio.Future[int]] = {}
        self._applied_index = 0
        #: Batches waiting to be proposed together (see `_propose`), and the task doing it.
        self._queued: list[_QueuedBatch] = []
        self._proposer: asyncio.Task[None] | None = None
        #: Says whether a quorum of the replicas looks reachable (set by the node); a
        #: produce with acks=all is refused up front with NOT_ENOUGH_REPLICAS otherwise.
        self.quorum_reachable: Callable[[], bool] = lambda: True
        self._rebuild_producer_state()

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.index)

    @property
    def is_leader(self) -> bool:
        return self.group is not None and self.group.is_leader and self.leader_ready

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    def _rebuild_producer_state(self) -> None:
        """Fold the idempotent batches of the log into the producer table.

        Only batch headers are read (61 bytes per batch, not the whole log); entries beyond the commit index are folded too,
        which is safe because a later suffix truncation only ever removes batches the
        producer was never told succeeded, and the table keeps just the last five.
        """
        for header, head in self.log.entry_prefixes(_BATCH_HEADER_BYTES):
            if header.kind == StorageKind.DATA:
                self._fold(head, header.base_offset)

    def _fold(self, batch: bytes | memoryview, base_offset: int) -> None:
        if len(batch) < _BATCH_HEADER_BYTES:
            return
        producer_id, epoch, first_seq = _PRODUCER.unpack_from(batch, 43)
        if producer_id < 0:
            return
        count = kafka_record_count(batch)
        timestamp_ms = _MAX_TIMESTAMP.unpack_from(batch, 35)[0]
        self.producers.apply_batch(producer_id, epoch, first_seq, base_offset, count, timestamp_ms)

    # -- the state machine side (called by the driver) ------------------------------------
    def on_soft_state(self, soft: SoftState, term: int) -> None:
        was_leader = self.leader_id == self.driver.node_id
        self.leader_id = soft.leader_id
        if soft.role == Role.LEADER:
            self.leader_epoch = term
        if soft.role != Role.LEADER:
            self.leader_ready = False
            if was_leader or self._inflight:
                self._fail_inflight(ErrorCode.NOT_LEADER_OR_FOLLOWER)
                self.producers.clear_pending()
        self.on_change(self)

    def apply(self, entries: list[Entry]) -> None:
        group = self.group
        assert group is not None
        term = group.term
        for entry in entries:
            if entry.kind == EntryKind.DATA:
                offset = self.log.offset_for_index(entry.index)
                if len(entry.data) < _BATCH_HEADER_BYTES and entry.data.startswith(_TRUNCATE_MAGIC):
                    self._apply_truncate(entry)
                self._fold(entry.data, offset)
                waiting = self._inflight.pop(entry.index, None)
                if waiting is not None and not waiting.future.done():
                    if waiting.term == entry.term:
                        waiting.future.set_result(offset)
                    else:
                        waiting.future.set_exception(
                            PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
                        )
            if entry.term == term and group.is_leader and not self.leader_ready:
                self.leader_ready = True
                self.leader_epoch = term
        self._applied_index = entries[-1].index
        hwm = self.log.offset_for_index(self._applied_index + 1)
        if hwm > self.high_watermark:
            self.high_watermark = hwm
        self.on_change(self)

    def apply_snapshot(self, snapshot: Snapshot, state: bytes) -> None:
        import msgpack

        self._applied_index = snapshot.meta.index
        self.high_watermark = max(self.high_watermark, self.log.log_start_offset)
        self.producers = (
            ProducerStateTable.from_snapshot(msgpack.unpackb(state))
            if state
            else ProducerStateTable()
        )
        self.on_change(self)

    def snapshot_state(self) -> bytes:
        import msgpack

        return bytes(msgpack.packb(self.producers.to_snapshot()))

    def _fail_inflight(self, code: ErrorCode) -> None:
        inflight, self._inflight = self._inflight, {}
        for waiting in inflight.values():
            if not waiting.future.done():
                waiting.future.set_exception(PartitionError(code))

    def close(self) -> None:
        self._fail_inflight(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        if self._proposer is not None:
            self._proposer.cancel()
        queued, self._queued = self._queued, []
        _fail_slots(queued, "the partition was closed")

    # -- the Kafka side -------------------------------------------------------------------
    async def produce(self, batch: bytes, acks: int, timeout_ms: int) -> AppendOutcome:
        """Append one validated record batch; see the module docstring for acks."""
        group = self.group
        if group is None or not self.is_leader:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        if acks == -1 and not self.quorum_reachable():
            # Nothing is appended: the client may retry without any risk of a duplicate.
            raise PartitionError(
                ErrorCode.NOT_ENOUGH_REPLICAS, "a quorum of replicas is unreachable"
            )
        producer_id, epoch, first_seq = _PRODUCER.unpack_from(batch, 43)
        count = kafka_record_count(batch)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        sequence_key = (producer_id, epoch, first_seq)
        if producer_id >= 0:
            decision = self.producers.check(producer_id, epoch, first_seq, count)
            if decision.verdict is Verdict.DUPLICATE:
                assert decision.duplicate_of is not None
                if decision.duplicate_of.base_offset >= 0:
                    return AppendOutcome(decision.duplicate_of.base_offset, self.log_start_offset)
                # A retry of a batch still in flight: not appended again; like Kafka, the
                # retry is answered with the original's fate once that is known.
                return await self._await_original(sequence_key, timeout_ms)
            if decision.verdict is Verdict.OUT_OF_ORDER_SEQUENCE:
                raise PartitionError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, decision.message)
            if decision.verdict is Verdict.INVALID_PRODUCER_EPOCH:
                raise PartitionError(ErrorCode.INVALID_PRODUCER_EPOCH, decision.message)
            timestamp_ms = _MAX_TIMESTAMP.unpack_from(batch, 35)[0]
            self.producers.add_pending(producer_id, epoch, first_seq, count, timestamp_ms)
            self._pending_batches[sequence_key] = future
            future.add_done_callback(lambda _: self._pending_batches.pop(sequence_key, None))
        try:
            index, term = await self._propose(group, batch)
        except ProposalDropped as error:
            if producer_id >= 0:
                self.producers.remove_pending(producer_id, epoch, first_seq)
            future.set_exception(PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER))
            future.exception()
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER, str(error)) from None
        self._inflight[index] = _Inflight(term, future)
        if acks == 1:
            future.add_done_callback(_consume_exception)
            await self.driver.wait_persisted(group, index)
            if group.removed or self.log.last_index < index or self.log.term_at(index) != term:
                raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
            return AppendOutcome(self.log.offset_for_index(index), self.log_start_offset)
        if acks == 0:
            future.add_done_callback(_consume_exception)
            return AppendOutcome(-1, self.log_start_offset)
        try:
            offset = await asyncio.wait_for(asyncio.shield(future), timeout_ms / 1000)
        except TimeoutError:
            future.add_done_callback(_consume_exception)
            raise PartitionError(
                ErrorCode.REQUEST_TIMED_OUT, "not committed within the timeout"
            ) from None
        return AppendOutcome(offset, self.log_start_offset)

    async def _propose(self, group: RaftGroup, batch: bytes) -> tuple[int, int]:
        """Hand `batch` to Raft; returns its (index, term). Raises ProposalDropped.

        The driver persists a group's Ready before it takes the next proposal, so a
        batch proposed on its own waits out the previous fsync and then gets one of its
        own: with a few requests in flight (an idempotent producer has at most five),
        every batch cost a full write-fsync cycle. Instead, batches that arrive while a
        cycle runs queue here and go to Raft together as one proposal: one append and
        one fsync for all of them. Batches enter the queue in the order they were
        checked against the producer state, and Raft appends them in that order.
        """
        slot: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._queued.append(_QueuedBatch(batch, group.term, slot))
        if self._proposer is None or self._proposer.done():
            self._proposer = asyncio.create_task(self._propose_queued(group))
        return await slot

    async def _propose_queued(self, group: RaftGroup) -> None:
        while self._queued and not group.removed:
            await self.driver.until_idle(group)  # more batches join while the fsync runs
            taken = _take_proposal(self._queued)
            try:
                # A batch checked under another leadership must not reach the log: a
                # follower would forward it to the new leader unchecked.
                if not self.is_leader or any(q.term != group.term for q in taken):
                    raise ProposalDropped("leadership changed while the batch was queued")
                last_index, term = await self.driver.propose(group, [q.batch for q in taken])
            except asyncio.CancelledError:
                _fail_slots(taken, "the partition was closed")
                raise
            except ProposalDropped as error:
                # Batches queued behind were checked as if these would be appended (their
                # sequence numbers follow on): they fail too, and the producer retries.
                dropped, self._queued = taken + self._queued, []
                _fail_slots(dropped, str(error))
                continue
            first_index = last_index - len(taken) + 1
            for i, queued in enumerate(taken):
                if not queued.slot.done():
                    queued.slot.set_result((first_index + i, term))
        if self._queued:  # the group went away under us
            leftover, self._queued = self._queued, []
            _fail_slots(leftover, "the partition's group was removed")

    async def _await_original(self, key: tuple[int, int, int], timeout_ms: int) -> AppendOutcome:
        original = self._pending_batches.get(key)
        if original is None:
            raise PartitionError(ErrorCode.REQUEST_TIMED_OUT, "the original batch is in flight")
        try:
            offset = await asyncio.wait_for(asyncio.shield(original), timeout_ms / 1000)
        except TimeoutError:
            raise PartitionError(
                ErrorCode.REQUEST_TIMED_OUT, "the original batch is in flight"
            ) from None
        return AppendOutcome(offset, self.log_start_offset)

    def read(self, offset: int, bytes_max: int, committed_only: bool = True) -> ReadResult:
        """Record batches from `offset`, up to the high watermark."""
        limit = self.high_watermark if committed_only else self.log_end_offset
        if offset > limit:
            raise PartitionError(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {offset} is past {limit}")
        try:
            return self.log.read_offsets(offset, bytes_max, limit)
        except OffsetOutOfRangeError as error:
            raise PartitionError(ErrorCode.OFFSET_OUT_OF_RANGE, str(error)) from None

    async def truncate_before(self, offset: int, timeout_ms: int) -> int:
        """DeleteRecords and compaction: every replica drops the entries below `offset`.

        The request travels through Raft as a small command entry (shorter than a batch
        header, so it takes no Kafka offset), and each replica truncates when it applies
        it: the log start moves in step on leader and followers alike. The log starts at
        a batch boundary, so the new log start offset (returned, the low watermark) is
        the base offset of the batch holding `offset`.
        """
        group = self.group
        if group is None or not self.is_leader:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        payload = _TRUNCATE_MAGIC + _OFFSET.pack(offset)
        try:
            index, term = await self.driver.propose(group, [payload])
        except ProposalDropped as error:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER, str(error)) from None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[index] = _Inflight(term, future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_ms / 1000)
        except TimeoutError:
            future.add_done_callback(_consume_exception)
            raise PartitionError(
                ErrorCode.REQUEST_TIMED_OUT, "truncation not committed in time"
            ) from None
        return self.log.log_start_offset

    def _apply_truncate(self, entry: Entry) -> None:
        (offset,) = _OFFSET.unpack_from(entry.data, len(_TRUNCATE_MAGIC))
        log = self.log
        offset = max(log.log_start_offset, min(offset, log.log_end_offset))
        index = log.index_for_offset(offset) if offset < log.log_end_offset else log.last_index + 1
        index = min(index, entry.index)
        if index > log.first_index:
            log.truncate_prefix(index)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (largest epoch <= `epoch`, the offset where it ended)."""
        log = self.log
        if epoch >= self.leader_epoch:
            return self.leader_epoch, self.log_end_offset
        lo, hi = log.first_index, log.last_index + 1
        # Terms never decrease along the log: find the first index whose term exceeds epoch.
        while lo < hi:
            mid = (lo + hi) // 2
            if log.term_at(mid) <= epoch:
                lo = mid + 1
            else:
                hi = mid
        if lo == log.first_index:
            return -1, -1
        return log.term_at(lo - 1), log.offset_for_index(lo)


def _fail_slots(queued: list[_QueuedBatch], reason: str) -> None:
    for batch in queued:
        if not batch.slot.done():
            batch.slot.set_exception(ProposalDropped(reason))


def _take_proposal(queued: list[_QueuedBatch]) -> list[_QueuedBatch]:
    """Remove and return the oldest queued batches, up to `PROPOSAL_BYTES_MAX` (at least one)."""
    size = 0
    count = 0
    for q in queued:
        if count and size + len(q.batch) > PROPOSAL_BYTES_MAX:
            break
        size += len(q.batch)
        count += 1
    taken = queued[:count]
    del queued[:count]
    return taken


def _consume_exception(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()
