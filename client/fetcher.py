"""The consumer's fetcher: positions per partition, prefetching Fetch requests, decoding.

Theory of operation.

`SubscriptionState` (pure) holds what the application assigned and, for each
partition, the position (next offset to hand out), pause flag, reset policy and
the last known high watermark. The consumer changes it through assign, seek,
pause/resume; the fetcher reads it.

The fetch task keeps at most one Fetch request in flight per leader node. A
request covers every fetchable partition led by that node that has no data
waiting in the buffer. Responses become `_CompletedFetch` entries (raw record
bytes plus the position they were fetched for) in a buffer bounded by
`prefetch_bytes_max`: when it is full, no new fetches go out until the
application consumes (back-pressure, never unbounded memory). Records are
decoded lazily, when the application asks for them, so a paused or
re-assigned partition costs no decode work; an entry whose position no longer
matches (the application seeked) is dropped.

Decoding builds a batch's ConsumerRecords at once, in C where it can
(records.decode_batch_column_parts: same-shaped runs of records are read with
struct); getmany() hands a whole decoded batch out as the list itself, and
getone()/`async for` pop records one by one through `take_one()` without the
general path's bookkeeping.

Positions without a value are initialised first: by the consumer's committed
offsets callback (groups), else by `auto_offset_reset` through ListOffsets
(earliest / latest), else an error ("none"). Fetch errors: leadership errors
(NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION)
refresh metadata, applying the response's leader hint at once; OFFSET_OUT_OF_RANGE
resets the partition by policy.

Transactions: with `isolation_level=read_committed` the broker returns records
up to the last stable offset, plus the aborted transactions of the range;
batches of aborted producers are skipped up to their ABORT marker, and control
batches are never returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from itertools import repeat
from typing import Any

from client.client import KafkaClient
from client.errors import (
    ErrorCode,
    IllegalStateError,
    KafkaError,
    exception_for,
)
from client.protocol import records
from client.protocol.api_keys import ApiKey
from client.protocol.messages.fetch import FetchPartition, FetchRequest, FetchTopic
from client.protocol.messages.list_offsets import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from client.protocol.primitives import ZERO_UUID
from client.structs import NO_EPOCH, ConsumerRecord, TopicPartition

log = logging.getLogger(__name__)

EARLIEST = -2
LATEST = -1
RESET_POLICIES = {"earliest": EARLIEST, "latest": LATEST, "none": None}
READ_UNCOMMITTED = 0
READ_COMMITTED = 1

_LEADERSHIP_ERRORS = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.UNKNOWN_TOPIC_ID,
        ErrorCode.REPLICA_NOT_AVAILABLE,
        ErrorCode.KAFKA_STORAGE_ERROR,
    }
)


class OffsetOutOfRangeError(KafkaError):
    """A position is outside the log and auto_offset_reset is 'none'."""

    code = ErrorCode.OFFSET_OUT_OF_RANGE


class PartitionState:
    """What the consumer knows about one assigned partition."""

    __slots__ = (
        "high_watermark",
        "last_stable_offset",
        "leader_epoch",
        "log_start_offset",
        "paused",
        "position",
    )

    def __init__(self) -> None:
        self.position: int | None = None
        self.leader_epoch = NO_EPOCH
        self.paused = False
        self.high_watermark = -1
        self.last_stable_offset = -1
        self.log_start_offset = -1


class SubscriptionState:
    """Assigned partitions and their positions. Pure: no I/O, no asyncio."""

    def __init__(self) -> None:
        self.assignment: dict[TopicPartition, PartitionState] = {}
        self.version = 0  # bumped on every assignment change or seek

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        wanted = set(tps)
        self.assignment = {tp: self.assignment.get(tp) or PartitionState() for tp in wanted}
        self.version += 1

    def state(self, tp: TopicPartition) -> PartitionState:
        s = self.assignment.get(tp)
        if s is None:
            raise IllegalStateError(f"{tp} is not assigned")
        return s

    def seek(self, tp: TopicPartition, offset: int | None) -> None:
        self.state(tp).position = offset
        self.version += 1

    def fetchable(self) -> list[TopicPartition]:
        return [tp for tp, s in self.assignment.items() if s.position is not None and not s.paused]

    def missing_positions(self) -> list[TopicPartition]:
        return [tp for tp, s in self.assignment.items() if s.position is None]


class _CompletedFetch:
    """One partition's answer from one Fetch response, decoded on demand."""

    __slots__ = ("batches", "fetch_offset", "nbytes", "next_offset", "pending", "taken", "tp")

    def __init__(self, tp: TopicPartition, fetch_offset: int, data: bytes) -> None:
        self.tp = tp
        self.fetch_offset = fetch_offset
        self.next_offset = fetch_offset  # the position this entry continues from
        self.nbytes = len(data)
        self.batches: deque[memoryview] = deque(records.iter_batches(data))
        # The decoded batch being handed out: pending[taken:] are still to go. A list and
        # an index, so that a whole batch goes out as the list itself (no copy).
        self.pending: list[ConsumerRecord] = []
        self.taken = 0

    @property
    def exhausted(self) -> bool:
        return self.taken >= len(self.pending) and not self.batches


PositionInitializer = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]


class Fetcher:
    """Prefetches records for the assigned partitions. Created and driven by Consumer."""

    def __init__(
        self,
        client: KafkaClient,
        subscription: SubscriptionState,
        *,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 50 * 1024 * 1024,
        partition_fetch_bytes_max: int = 1024 * 1024,
        prefetch_bytes_max: int = 64 * 1024 * 1024,
        isolation_level: int = READ_UNCOMMITTED,
        auto_offset_reset: str = "latest",
        position_initializer: PositionInitializer | None = None,
    ) -> None:
        if auto_offset_reset not in RESET_POLICIES:
            raise ValueError(f"auto_offset_reset must be one of {sorted(RESET_POLICIES)}")
        self._client = client
        self._subs = subscription
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.partition_fetch_bytes_max = partition_fetch_bytes_max
        self.prefetch_bytes_max = prefetch_bytes_max
        self.isolation_level = isolation_level
        self.reset_policy = RESET_POLICIES[auto_offset_reset]
        # Fetch the next range of a partition while the application still reads the
        # previous one (pipelining), up to this many buffered responses per partition.
        self.prefetch_entries_per_partition_max = 2
        self.position_initializer = position_initializer
        self._completed: deque[_CompletedFetch] = deque()
        self._buffered_bytes = 0
        # Per partition with buffered entries: how many, and the offset right after the
        # last one (where the next, pipelined fetch starts).
        self._buffered_count: dict[TopicPartition, int] = {}
        self._fetch_end: dict[TopicPartition, int] = {}
        self._in_flight_nodes: set[int] = set()
        self._leaderless = False  # some fetchable partition had no known leader
        self._tasks: set[asyncio.Future[None]] = set()
        self._wake = asyncio.Event()
        self._records_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._task is None:
            # New leaders or topics can make a waiting partition fetchable.
            self._client.cluster.add_listener(lambda _cm, _change: self._wake.set())
            self._task = asyncio.create_task(self._fetch_loop(), name="consumer-fetcher")

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    # ---- the fetch task ------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        backoff_ms = self._client.config.retry_backoff_ms
        while True:
            self._wake.clear()
            try:
                missing = self._subs.missing_positions()
                if missing:
                    await self._initialize_positions(missing)
                self._send_fetches()
            except KafkaError as e:
                if not e.retriable:
                    self._error = e
                    self._records_ready.set()
                log.info("fetcher: %s", e)
                await self._client.clock.sleep_ms(backoff_ms)
                continue
            stalled = self._subs.missing_positions() or self._leaderless
            timeout_s = backoff_ms / 1000 if stalled else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()

    def _send_fetches(self) -> None:
        if self._buffered_bytes >= self.prefetch_bytes_max:
            return
        cluster = self._client.cluster
        self._leaderless = False
        by_node: dict[int, list[TopicPartition]] = {}
        for tp in self._subs.fetchable():
            if self._buffered_count.get(tp, 0) >= self.prefetch_entries_per_partition_max:
                continue
            leader = cluster.leader_for(tp)
            if leader < 0:
                self._leaderless = True
                self._client.add_topics((tp.topic,))
                self._client.request_metadata_update()
                continue
            if leader not in self._in_flight_nodes:
                by_node.setdefault(leader, []).append(tp)
        for node_id, tps in by_node.items():
            conn = self._client.ready_connection(node_id)
            if conn is None:
                self._connect_later(node_id)
                continue
            self._in_flight_nodes.add(node_id)
            request, offsets = self._fetch_request(tps)
            version = self._client.version_for(conn, ApiKey.FETCH)
            future = conn.send(request, version, timeout_ms=self._fetch_timeout_ms())
            future.add_done_callback(partial(self._on_fetch, node_id, offsets, self._subs.version))

    def _fetch_timeout_ms(self) -> int:
        return self._client.config.request_timeout_ms + self.fetch_max_wait_ms

    def _connect_later(self, node_id: int) -> None:
        self._in_flight_nodes.add(node_id)

        async def connect() -> None:
            try:
                await self._client.connection(node_id)
            except KafkaError as e:
                log.info("fetcher cannot reach node %s: %s", node_id, e)
                await self._client.clock.sleep_ms(self._client.config.retry_backoff_ms)
            finally:
                self._in_flight_nodes.discard(node_id)
                self._wake.set()

        task = asyncio.ensure_future(connect())
        self._tasks.add(task)  # asyncio holds tasks weakly: keep it alive until done
        task.add_done_callback(self._tasks.discard)

    def _fetch_request(
        self, tps: list[TopicPartition]
    ) -> tuple[FetchRequest, dict[TopicPartition, int]]:
        by_topic: dict[str, list[FetchPartition]] = {}
        offsets: dict[TopicPartition, int] = {}
        for tp in tps:
            s = self._subs.assignment[tp]
            assert s.position is not None
            offsets[tp] = position = self._fetch_end.get(tp, s.position)
            by_topic.setdefault(tp.topic, []).append(
                FetchPartition(
                    partition=tp.partition,
                    current_leader_epoch=self._client.cluster.leader_epoch_for(tp),
                    fetch_offset=position,
                    partition_max_bytes=self.partition_fetch_bytes_max,
                )
            )
        request = FetchRequest(
            replica_id=-1,
            max_wait_ms=self.fetch_max_wait_ms,
            min_bytes=self.fetch_min_bytes,
            max_bytes=self.fetch_max_bytes,
            isolation_level=self.isolation_level,
            session_id=0,
            session_epoch=-1,
            topics=tuple(
                FetchTopic(topic=t, topic_id=self._topic_uuid(t), partitions=tuple(ps))
                for t, ps in by_topic.items()
            ),
        )
        return request, offsets

    def _topic_uuid(self, topic: str) -> Any:
        tid = self._client.cluster.topic_id(topic)
        return tid if tid is not None else ZERO_UUID

    def _on_fetch(
        self,
        node_id: int,
        offsets: dict[TopicPartition, int],
        subs_version: int,
        future: asyncio.Future[Any],
    ) -> None:
        self._in_flight_nodes.discard(node_id)
        self._wake.set()
        if future.cancelled() or future.exception() is not None:
            log.info("fetch from node %s failed: %s", node_id, future.exception())
            return
        response = future.result()
        if response.error_code:
            log.info("fetch from node %s: error %s", node_id, response.error_code)
            return
        for t in response.responses:
            for p in t.partitions:
                tp = TopicPartition(t.topic, p.partition_index)
                fetch_offset = offsets.get(tp)
                state = self._subs.assignment.get(tp)
                if (
                    fetch_offset is None
                    or state is None
                    or state.position is None
                    or self._fetch_end.get(tp, state.position) != fetch_offset
                ):
                    continue  # re-assigned or seeked while the request was out
                self._on_partition(tp, state, fetch_offset, p, response.node_endpoints)

    def _on_partition(
        self,
        tp: TopicPartition,
        state: PartitionState,
        fetch_offset: int,
        p: Any,
        node_endpoints: Any = (),
    ) -> None:
        code = p.error_code
        if code == 0:
            state.high_watermark = p.high_watermark
            state.last_stable_offset = p.last_stable_offset
            state.log_start_offset = p.log_start_offset
            data = p.records
            if data:
                if self.isolation_level == READ_COMMITTED and p.aborted_transactions:
                    data = _without_aborted(bytes(data), p.aborted_transactions)
                completed = _CompletedFetch(tp, fetch_offset, bytes(data))
                if completed.batches:
                    self._completed.append(completed)
                    self._buffered_bytes += completed.nbytes
                    self._buffered_count[tp] = self._buffered_count.get(tp, 0) + 1
                    last = records.read_batch_header(completed.batches[-1])
                    self._fetch_end[tp] = last.last_offset + 1
                    self._records_ready.set()
            return
        cluster = self._client.cluster
        if code in _LEADERSHIP_ERRORS:
            leader = getattr(p, "current_leader", None)
            if not cluster.apply_leader_hint_from(tp, leader, node_endpoints):
                self._client.request_metadata_update()
        elif code == ErrorCode.OFFSET_OUT_OF_RANGE:
            if self.reset_policy is None:
                self._error = OffsetOutOfRangeError(f"{tp} offset {fetch_offset} out of range")
                self._records_ready.set()
            else:
                state.position = None  # the loop resets it by policy
        else:
            self._error = exception_for(code, f"fetch {tp}")
            self._records_ready.set()

    # ---- positions -----------------------------------------------------------------------

    async def _initialize_positions(self, tps: list[TopicPartition]) -> None:
        found: dict[TopicPartition, int] = {}
        if self.position_initializer is not None:
            found = {tp: o for tp, o in (await self.position_initializer(tps)).items() if o >= 0}
        rest = [tp for tp in tps if tp not in found]
        if rest:
            if self.reset_policy is None:
                raise OffsetOutOfRangeError(f"no position for {rest} and auto_offset_reset=none")
            found.update(await self.list_offsets({tp: self.reset_policy for tp in rest}))
        for tp, offset in found.items():
            state = self._subs.assignment.get(tp)
            if state is not None and state.position is None:
                state.position = offset

    async def list_offsets(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Offsets for timestamps (EARLIEST=-2, LATEST=-1, or ms) via each partition's leader."""
        by_node: dict[int, list[TopicPartition]] = {}
        cluster = self._client.cluster
        for tp in timestamps:
            leader = cluster.leader_for(tp)
            if leader < 0:
                self._client.add_topics((tp.topic,))
                await self._client.refresh_metadata()
                leader = cluster.leader_for(tp)
                if leader < 0:
                    raise exception_for(ErrorCode.LEADER_NOT_AVAILABLE, str(tp))
            by_node.setdefault(leader, []).append(tp)
        results = await asyncio.gather(
            *(self._list_offsets_on(n, tps, timestamps) for n, tps in by_node.items())
        )
        out: dict[TopicPartition, int] = {}
        for r in results:
            out.update(r)
        return out

    async def _list_offsets_on(
        self, node_id: int, tps: list[TopicPartition], timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        by_topic: dict[str, list[ListOffsetsPartition]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(
                ListOffsetsPartition(
                    partition_index=tp.partition,
                    current_leader_epoch=self._client.cluster.leader_epoch_for(tp),
                    timestamp=timestamps[tp],
                )
            )
        request = ListOffsetsRequest(
            replica_id=-1,
            isolation_level=self.isolation_level,
            topics=tuple(
                ListOffsetsTopic(name=t, partitions=tuple(ps)) for t, ps in by_topic.items()
            ),
        )
        response = await self._client.send(node_id, request)
        out: dict[TopicPartition, int] = {}
        for t in response.topics:
            for p in t.partitions:
                if p.error_code:
                    if p.error_code in _LEADERSHIP_ERRORS:
                        self._client.request_metadata_update()
                    raise exception_for(p.error_code, f"ListOffsets {t.name}-{p.partition_index}")
                offset = (
                    p.offset if p.offset >= 0 or not p.old_style_offsets else p.old_style_offsets[0]
                )
                out[TopicPartition(t.name, p.partition_index)] = offset
        return out

    # ---- handing records out -------------------------------------------------------------

    def drop_buffered(self, keep: Callable[[TopicPartition], bool] | None = None) -> None:
        kept: deque[_CompletedFetch] = deque()
        for c in self._completed:
            if keep is not None and keep(c.tp):
                kept.append(c)
            else:
                self._forget(c)
        self._completed = kept
        self._wake.set()

    def take(
        self, tps: Iterable[TopicPartition] | None, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Hand out up to `max_records` buffered records (positions advance). No waiting."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        wanted = None if tps is None else set(tps)
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        budget = max_records
        completed = self._completed
        i = 0
        while budget > 0 and i < len(completed):
            c = completed[i]
            state = self._subs.assignment.get(c.tp)
            if state is None or state.position is None or not self._still_valid(c, state):
                self._retire(i)
                continue
            if state.paused or (wanted is not None and c.tp not in wanted):
                i += 1
                continue
            while budget > 0 and not c.exhausted:
                got = self._drain_one(c, state, budget)
                if got:
                    have = out.get(c.tp)
                    if have is None:
                        out[c.tp] = got
                    else:
                        have.extend(got)
                    budget -= len(got)
            if c.exhausted:
                self._retire(i)
            else:
                i += 1
        return out

    def _still_valid(self, c: _CompletedFetch, state: PartitionState) -> bool:
        # Valid while the position is where this entry left off; a seek invalidates it.
        return state.position == c.next_offset

    def _retire(self, i: int) -> None:
        c = self._completed[i]
        del self._completed[i]
        self._forget(c)
        self._wake.set()

    def _forget(self, c: _CompletedFetch) -> None:
        self._buffered_bytes -= c.nbytes
        left = self._buffered_count[c.tp] - 1
        if left:
            self._buffered_count[c.tp] = left
        else:
            del self._buffered_count[c.tp]
            del self._fetch_end[c.tp]

    def take_one(self) -> ConsumerRecord | None:
        """The next buffered record of any partition, or None; take()'s rules, less work.

        The per-record path of getone() and `async for`: when the first buffered entry
        has decoded records left and its partition is readable, pop one and advance the
        position; anything else (a new batch to decode, a seek, a pause, an error) goes
        through take().
        """
        completed = self._completed
        if completed and self._error is None:
            c = completed[0]
            pending = c.pending
            taken = c.taken
            if taken < len(pending):
                state = self._subs.assignment.get(c.tp)
                if state is not None and not state.paused and state.position == c.next_offset:
                    record = pending[taken]
                    c.taken = taken + 1
                    state.position = c.next_offset = record.offset + 1
                    if c.exhausted:
                        self._retire(0)
                    return record
        for got in self.take(None, 1).values():
            return got[0]
        return None

    def _drain_one(
        self, c: _CompletedFetch, state: PartitionState, budget: int
    ) -> list[ConsumerRecord]:
        position = state.position
        assert position is not None
        while c.taken >= len(c.pending) and c.batches:
            view = c.batches.popleft()
            header = records.read_batch_header(view)
            if header.is_control or header.last_offset < position:
                # Nothing to return, but the position moves past it (control markers,
                # aborted or already consumed batches) so it is never fetched again.
                position = max(position, header.last_offset + 1)
                continue
            c.pending = self._decode(c, view, header, position)
            c.taken = 0
            if not c.pending:  # every remaining record was compacted away
                position = header.last_offset + 1
        pending, taken = c.pending, c.taken
        left = len(pending) - taken
        if left > 0:
            if taken == 0 and left <= budget:
                got = pending  # the whole batch: hand the list itself out, keep nothing
                c.pending = []
            else:
                got = pending[taken : taken + budget]
                c.taken = taken + len(got)
            position = got[-1].offset + 1
        else:
            got = []
        state.position = c.next_offset = position
        return got

    def _decode(
        self, c: _CompletedFetch, view: memoryview, header: Any, position: int
    ) -> list[ConsumerRecord]:
        _, parts = records.decode_batch_column_parts(view)
        log_append = header.timestamp_type == records.TIMESTAMP_TYPE_LOG_APPEND
        built: list[ConsumerRecord] = []
        for offsets, timestamps_ms, keys, values, headers in parts:
            timestamps: Iterable[int] = timestamps_ms
            if log_append:
                timestamps = repeat(header.max_timestamp)
            # ConsumerRecord's field order assembled by zip and tuple.__new__ in C: no
            # per-record bytecode and no intermediate DecodedRecord.
            rows = zip(
                repeat(c.tp.topic), repeat(c.tp.partition), offsets, timestamps, keys, values,
                headers, repeat(header.timestamp_type), repeat(header.partition_leader_epoch),
            )  # fmt: skip
            built.extend(map(tuple.__new__, repeat(ConsumerRecord), rows))
        if built and built[0].offset < position:  # a batch that starts before position
            return [r for r in built if r.offset >= position]
        return built

    async def wait_for_records(self, timeout_ms: float | None) -> bool:
        """Wait until a new fetch result (or an error) arrives; call after an empty take()."""
        if self._error is not None:
            return True
        self._records_ready.clear()
        self._wake.set()
        try:
            async with asyncio.timeout(None if timeout_ms is None else timeout_ms / 1000):
                await self._records_ready.wait()
        except TimeoutError:
            return False
        return True

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes


def _without_aborted(data: bytes, aborted: Iterable[Any]) -> bytes:
    """Drop batches of aborted transactions (read_committed), up to each ABORT marker."""
    starts = sorted((a.first_offset, a.producer_id) for a in aborted)
    active: set[int] = set()
    kept: list[bytes] = []
    for view in records.iter_batches(data):
        header = records.read_batch_header(view)
        while starts and starts[0][0] <= header.last_offset:
            active.add(starts.pop(0)[1])
        if header.is_control:
            active.discard(header.producer_id)
            continue
        if header.is_transactional and header.producer_id in active:
            continue
        kept.append(bytes(view))
    return b"".join(kept)
