"""The asyncio group coordinator: Kafka's group APIs over the pure state machine.

Why this module exists: `state.py` decides, this module waits. It turns generated
request objects into calls on `Group`, parks JoinGroup/SyncGroup long polls as futures
until the state machine reports their results, persists group metadata and offsets
through a `GroupLog` (a Raft-replicated partition of `__consumer_offsets`, provided by
the broker), and runs the timer that expires sessions, rebalances and offsets.

Theory of operation
-------------------
Routing: group `g` lives on partition `partition_for_group(g, offsets_topic_partitions)`.
This node coordinates `g` only while that partition's shard is loaded here
(`load_shard`, called when this node becomes the partition's Raft leader and has read
its records); before that a request gets NOT_COORDINATOR, while loading
COORDINATOR_LOAD_IN_PROGRESS. `unload_shard` (leadership lost) answers every parked
request of the shard with NOT_COORDINATOR; a newer leader rebuilds the same state from
the log.

Durability: an offset commit is answered only after `GroupLog.append` resolves (quorum
commit), and offsets enter memory only then, so OffsetFetch never shows an offset that
a failover could lose. Group metadata is stored when the leader's SyncGroup arrives,
and members get their assignment only once it is stored (Kafka's order).

Ordering: every append starts as a task in call order, so a `GroupLog` that appends in
call order (as a single Raft log does) keeps the records of one key in the order the
coordinator decided them.

Bounds: at most `pending_requests_max` JoinGroup/SyncGroup requests are parked; beyond
that a request is answered COORDINATOR_NOT_AVAILABLE at once and the client retries.

Compaction: the partition would grow by a record per commit forever. Each shard keeps
its *live map*, the last committed value (with its offset) of every key, which is
`live_records` of the log maintained incrementally. When more records were appended
since the last compaction (or load) than `max(compaction_records_min,
compaction_live_ratio * live keys)`, the shard compacts (`_compact`):

1. hold: appends started from now on are queued in call order, not sent;
2. drain: wait until every append started before (1) has resolved, so the live map is
   exactly the replay of the log, and nothing of ours is in flight below what comes next;
3. write the live set through `GroupLog.append` (acks=all); it lands at offsets >= X,
   where X is the offset of its first record;
4. release: the held appends start, in call order, so they land after the live set;
5. `GroupLog.truncate_before(X)`.

Why replaying from X rebuilds the same state: after (2) the log below X holds only
records whose replay is the live map (an append that failed or timed out was never
applied to memory nor to the map; if it still commits, it commits below X and is cut,
which matches memory). The records at X.. restate every live key with its live value,
so for each key the last write at or after X equals its last write in the whole log,
and a key absent there was tombstoned (or never written): replay(log[X:]) ==
replay(log). Commits made during compaction are held until the live set is written and
then land after it, so they win as later records, as they would have anyway. If the
live-set append fails, nothing is truncated; copies of live values that did commit are
harmless (they restate what replay already yields). The truncation itself is a Raft
command that every replica applies at the same log position, so a follower that becomes
coordinator replays the same suffix.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from broker.groups.offsets_log import (
    OffsetAndMetadata,
    Record,
    group_record,
    live_records,
    offset_record,
    partition_for_group,
)
from broker.groups.state import (
    Group,
    GroupConfig,
    GroupCoordinatorShard,
    GroupState,
    JoinParams,
    JoinResult,
    Outcome,
    SyncResult,
)
from client.protocol.errors import ErrorCode, KafkaError
from client.protocol.messages.delete_groups import (
    DeletableGroupResult,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
)
from client.protocol.messages.describe_groups import (
    DescribedGroup,
    DescribedGroupMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
)
from client.protocol.messages.heartbeat import HeartbeatRequest, HeartbeatResponse
from client.protocol.messages.join_group import (
    JoinGroupRequest,
    JoinGroupResponse,
    JoinGroupResponseMember,
)
from client.protocol.messages.leave_group import (
    LeaveGroupRequest,
    LeaveGroupResponse,
    MemberResponse,
)
from client.protocol.messages.list_groups import (
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
)
from client.protocol.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
)
from client.protocol.messages.offset_fetch import (
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchResponseGroup,
    OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
)
from client.protocol.messages.sync_group import SyncGroupRequest, SyncGroupResponse

log = logging.getLogger(__name__)

T = TypeVar("T")
TopicPartition = tuple[str, int]

# Kafka's AclOperation codes allowed on a group without ACLs: READ, DELETE, DESCRIBE.
_GROUP_OPERATIONS = (1 << 3) | (1 << 6) | (1 << 8)


class GroupLog(Protocol):
    """A partition of `__consumer_offsets`, replicated by Raft (the broker implements it)."""

    async def append(self, records: list[Record]) -> int:
        """Append key/value records (value None = tombstone); return the first one's offset.

        Resolves once the records are quorum-committed; raises on failure (leadership
        lost, timeout). Calls must be appended in the order they are made, and the
        records of one call at consecutive offsets in their order (several batches are
        fine as long as nothing else lands between them).
        """
        ...

    async def truncate_before(self, offset: int) -> None:
        """Drop every record below `offset` on every replica (replicated; raises on failure)."""
        ...


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    group: GroupConfig = field(default_factory=GroupConfig)
    offsets_topic_partitions: int = 50
    pending_requests_max: int = 10_000
    offsets_expiry_interval_ms: int = 60_000  # Kafka's offsets.retention.check.interval.ms
    timer_sleep_ms_max: int = 1000  # the timer re-reads the clock at least this often
    #: Compact a shard once more than max(compaction_records_min, compaction_live_ratio *
    #: live keys) records were appended since its load or last compaction (Compaction).
    compaction_records_min: int = 1000
    compaction_live_ratio: int = 2

    def __post_init__(self) -> None:
        assert self.offsets_topic_partitions > 0
        assert self.pending_requests_max > 0
        assert self.offsets_expiry_interval_ms > 0 and self.timer_sleep_ms_max > 0
        assert self.compaction_records_min > 0 and self.compaction_live_ratio >= 1


@dataclass(frozen=True, slots=True)
class CompactionStats:
    """What a shard's compactions did (tests, metrics, the status page)."""

    compactions: int
    last_live_records: int
    last_truncated_before: int
    appended_since_compaction: int


class _Shard:
    """A loaded shard: the pure state, the log it persists to, and its live map."""

    __slots__ = (
        "compacting",
        "compactions",
        "end_offset",
        "grown",
        "held",
        "inflight",
        "last_live_records",
        "last_truncated_before",
        "live",
        "log",
        "state",
    )

    def __init__(self, state: GroupCoordinatorShard, log: GroupLog, loaded: list[Record]) -> None:
        self.state = state
        self.log = log
        #: key -> (offset, value or None for a tombstone): the replay of the log so far.
        #: Loaded records get offset -1: they precede everything appended from now on.
        self.live: dict[bytes, tuple[int, bytes | None]] = {
            k: (-1, v) for k, v in live_records(loaded)
        }
        #: Records in the log since its last compaction: what compaction would remove.
        self.grown = len(loaded)
        #: The offset after the last record this shard appended (-1: none yet).
        self.end_offset = -1
        #: Appends started (not held) and not yet resolved.
        self.inflight: set[asyncio.Future[None]] = set()
        #: While compacting, appends wait here in call order (see Compaction). Not bounded
        #: by count but by time: a compaction lasts at most a drain and one append.
        self.held: list[tuple[list[Record], asyncio.Future[None]]] | None = None
        self.compacting = False
        self.compactions = 0
        self.last_live_records = 0
        self.last_truncated_before = -1

    def note_appended(self, base_offset: int, records: list[Record]) -> None:
        """Fold a committed append into the live map (offsets make the order certain)."""
        for i, (key, value) in enumerate(records):
            offset = base_offset + i
            known = self.live.get(key)
            if known is None or known[0] < offset:
                self.live[key] = (offset, value)
        self.grown += len(records)
        self.end_offset = max(self.end_offset, base_offset + len(records))

    def live_set(self) -> list[Record]:
        return [(k, v) for k, (_, v) in self.live.items() if v is not None]


_LOADING = "loading"


def append_error(exc: BaseException) -> ErrorCode:
    """Map a failed append to what a group client understands (as Kafka does)."""
    if isinstance(exc, KafkaError):
        code = exc.code
        if code in (ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE):
            return code
        if code in (
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode.NOT_ENOUGH_REPLICAS,
            ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            ErrorCode.REQUEST_TIMED_OUT,
        ):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if isinstance(exc, TimeoutError):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    return ErrorCode.NOT_COORDINATOR


class GroupCoordinator:
    """Serves the group APIs for the `__consumer_offsets` partitions loaded on this node."""

    def __init__(
        self,
        clock_ms: Callable[[], int],
        config: CoordinatorConfig | None = None,
        partition_exists: Callable[[str, int], bool] | None = None,
    ) -> None:
        """`clock_ms` is wall-clock milliseconds (commit timestamps are persisted).

        `partition_exists`, if given, makes commits to unknown partitions fail with
        UNKNOWN_TOPIC_OR_PARTITION.
        """
        self._clock_ms = clock_ms
        self.config = config or CoordinatorConfig()
        self._partition_exists = partition_exists
        self._shards: dict[int, _Shard | str] = {}
        self._join_waiters: dict[tuple[str, str], list[asyncio.Future[JoinResult]]] = {}
        self._sync_waiters: dict[tuple[str, str], list[asyncio.Future[SyncResult]]] = {}
        self._waiting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._next_expiry_ms = 0

    # --- shards and routing --------------------------------------------------------------

    def shard_for(self, group_id: str) -> int:
        return partition_for_group(group_id, self.config.offsets_topic_partitions)

    def owns(self, group_id: str) -> bool:
        return isinstance(self._shards.get(self.shard_for(group_id)), _Shard)

    def mark_loading(self, partition: int) -> None:
        """This node leads `partition` and is reading it: COORDINATOR_LOAD_IN_PROGRESS."""
        self._check_partition(partition)
        if not isinstance(self._shards.get(partition), _Shard):
            self._shards[partition] = _LOADING

    def load_shard(self, partition: int, records: Iterable[Record], group_log: GroupLog) -> None:
        """Rebuild the shard from its records and start serving its groups."""
        self._check_partition(partition)
        self._drop_shard(partition)
        loaded = list(records)
        state = GroupCoordinatorShard.load(partition, loaded, self.config.group, self._clock_ms())
        self._shards[partition] = _Shard(state, group_log, loaded)
        self._wake.set()

    def compaction_stats(self, partition: int) -> CompactionStats | None:
        shard = self._shards.get(partition)
        if not isinstance(shard, _Shard):
            return None
        return CompactionStats(
            shard.compactions,
            shard.last_live_records,
            shard.last_truncated_before,
            shard.grown,
        )

    def unload_shard(self, partition: int) -> None:
        """Leadership of `partition` moved away: stop serving it, fail its parked requests."""
        self._drop_shard(partition)
        self._shards.pop(partition, None)

    def loaded_groups(self) -> list[Group]:
        """Every live group of the shards loaded here (read-only use: status pages, metrics)."""
        return [
            group
            for shard in list(self._shards.values())
            if isinstance(shard, _Shard)
            for group in list(shard.state.groups.values())
            if group.state is not GroupState.DEAD
        ]

    def loaded_partitions(self) -> list[int]:
        return sorted(p for p, s in self._shards.items() if isinstance(s, _Shard))

    def _check_partition(self, partition: int) -> None:
        assert 0 <= partition < self.config.offsets_topic_partitions, partition

    def _drop_shard(self, partition: int) -> None:
        shard = self._shards.get(partition)
        if shard is not None:
            self._shards[partition] = _LOADING  # appends in flight see the shard is gone
        for key in [k for k in self._join_waiters if self.shard_for(k[0]) == partition]:
            self._resolve(self._join_waiters, key, JoinResult(key[1], ErrorCode.NOT_COORDINATOR))
        for key in [k for k in self._sync_waiters if self.shard_for(k[0]) == partition]:
            self._resolve(self._sync_waiters, key, SyncResult(key[1], ErrorCode.NOT_COORDINATOR))

    def _lookup(self, group_id: str) -> tuple[_Shard | None, ErrorCode]:
        shard = self._shards.get(self.shard_for(group_id))
        if isinstance(shard, _Shard):
            return shard, ErrorCode.NONE
        if shard == _LOADING:
            return None, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return None, ErrorCode.NOT_COORDINATOR

    def _is_current(self, shard: _Shard) -> bool:
        return self._shards.get(shard.state.partition) is shard

    # --- background timer ----------------------------------------------------------------

    def start(self) -> None:
        assert self._timer is None, "already started"
        self._timer = asyncio.get_running_loop().create_task(self._run_timer())

    async def stop(self) -> None:
        """Stop the timer and pending appends; answer parked requests NOT_COORDINATOR."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        for partition in list(self._shards):
            self.unload_shard(partition)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def tick(self) -> int | None:
        """Fire due deadlines and, when due, expire offsets; return the next deadline."""
        now_ms = self._clock_ms()
        deadlines = []
        for shard in [s for s in self._shards.values() if isinstance(s, _Shard)]:
            for group, out in shard.state.poll(now_ms):
                self._dispatch(shard, group, out)
            if now_ms >= self._next_expiry_ms:
                records = shard.state.expire_offsets(now_ms)
                if records:
                    self._spawn(self._store(self._start_append(shard, records), len(records)))
            deadline = shard.state.next_deadline_ms()
            if deadline is not None:
                deadlines.append(deadline)
        if now_ms >= self._next_expiry_ms:
            self._next_expiry_ms = now_ms + self.config.offsets_expiry_interval_ms
        deadlines.append(self._next_expiry_ms)
        return min(deadlines)

    async def _run_timer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            next_ms = self.tick()
            sleep_ms = self.config.timer_sleep_ms_max
            if next_ms is not None:
                sleep_ms = max(0, min(sleep_ms, next_ms - self._clock_ms()))
            # call_later + Event rather than wait_for: wait_for may swallow a cancellation
            # that races with the event being set (Python 3.11), and stop() would hang.
            alarm = loop.call_later(sleep_ms / 1000, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                alarm.cancel()

    # --- plumbing: parking, dispatch, appends --------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _append(self, shard: _Shard, records: list[Record]) -> None:
        base_offset = await shard.log.append(records)
        shard.note_appended(base_offset, records)
        self._maybe_compact(shard)

    def _start_append(self, shard: _Shard, records: list[Record]) -> asyncio.Future[None]:
        """Start the append now (tasks start in creation order: Ordering).

        While the shard compacts, the append is queued instead and started, still in call
        order, once the live set is written (Compaction).
        """
        if shard.held is not None:
            queued: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            shard.held.append((records, queued))
            return queued
        task = asyncio.ensure_future(self._append(shard, records))
        shard.inflight.add(task)
        task.add_done_callback(shard.inflight.discard)
        return task

    # --- compaction (see the module docstring) --------------------------------------------

    def _maybe_compact(self, shard: _Shard) -> None:
        threshold = max(
            self.config.compaction_records_min,
            self.config.compaction_live_ratio * len(shard.live),
        )
        if shard.compacting or shard.grown <= threshold or not self._is_current(shard):
            return
        shard.compacting = True
        self._spawn(self._compact(shard))

    async def _compact(self, shard: _Shard) -> None:
        truncate_at = -1
        shard.held = []  # 1. hold
        try:
            if shard.inflight:  # 2. drain (asyncio.wait: never cancels what it waits for)
                await asyncio.wait(list(shard.inflight))
            live = shard.live_set()
            if not self._is_current(shard):
                pass
            elif live:
                truncate_at = await shard.log.append(live)  # 3. write the live set
            else:  # everything was deleted: the whole log is superseded
                truncate_at = shard.end_offset
            if truncate_at >= 0:
                shard.grown = len(live)
                shard.last_live_records = len(live)
                # Tombstones below the live set are cut with the log: forget them.
                shard.live = {k: (truncate_at + i, v) for i, (k, v) in enumerate(live)}
        except Exception as exc:
            log.warning("compacting group shard %d failed: %r", shard.state.partition, exc)
            truncate_at = -1
            shard.grown = 0  # back off: try again after another threshold of growth
        finally:
            self._release(shard)  # 4. release, also on failure or cancellation
        try:
            if truncate_at >= 0 and self._is_current(shard):
                await shard.log.truncate_before(truncate_at)  # 5.
                shard.compactions += 1
                shard.last_truncated_before = truncate_at
                log.info(
                    "compacted group shard %d: %d live records from offset %d",
                    shard.state.partition,
                    len(shard.live),
                    truncate_at,
                )
        except Exception as exc:
            log.warning("truncating group shard %d failed: %r", shard.state.partition, exc)
        finally:
            shard.compacting = False

    def _release(self, shard: _Shard) -> None:
        """Start the held appends in call order (or fail them if the shard is gone)."""
        held, shard.held = shard.held or [], None
        current = self._is_current(shard)
        for records, queued in held:
            if queued.done():  # the caller gave up (cancelled) before it was sent
                continue
            if not current:
                queued.set_exception(RuntimeError("group shard unloaded"))
                continue
            task = self._start_append(shard, records)
            task.add_done_callback(partial(_copy_outcome, queued))

    async def _store(self, appended: asyncio.Future[None], count: int) -> None:
        try:
            await appended
        except Exception as exc:  # a lost store is re-derived: the group rebalances again
            log.warning("storing %d group records failed: %r", count, exc)

    async def _store_sync(
        self, shard: _Shard, group: Group, generation_id: int, appended: asyncio.Future[None]
    ) -> None:
        error = ErrorCode.NONE
        try:
            await appended
        except Exception as exc:
            error = append_error(exc)
        if self._is_current(shard):
            out = group.on_sync_stored(self._clock_ms(), generation_id, error)
            self._dispatch(shard, group, out)

    def _dispatch(self, shard: _Shard, group: Group, out: Outcome) -> None:
        """Complete parked requests and start the stores an outcome asks for."""
        for join in out.joins:
            self._resolve(self._join_waiters, (group.group_id, join.member_id), join)
        for sync in out.syncs:
            self._resolve(self._sync_waiters, (group.group_id, sync.member_id), sync)
        if out.store is not None:
            appended = self._start_append(shard, [group_record(group.group_id, out.store)])
            if out.store_is_sync:
                self._spawn(self._store_sync(shard, group, group.generation_id, appended))
            else:
                self._spawn(self._store(appended, 1))
        self._wake.set()

    @staticmethod
    def _resolve(
        waiters: dict[tuple[str, str], list[asyncio.Future[T]]], key: tuple[str, str], value: T
    ) -> None:
        for fut in waiters.pop(key, []):
            if not fut.done():
                fut.set_result(value)

    async def _await_outcome(
        self,
        shard: _Shard,
        group: Group,
        out: Outcome,
        waiters: dict[tuple[str, str], list[asyncio.Future[T]]],
        busy: T,
    ) -> T:
        """The caller's result: immediate, or parked until the state machine produces it."""
        if out.reply is not None:
            self._dispatch(shard, group, out)
            return out.reply  # type: ignore[return-value]
        assert out.parked is not None
        if self._waiting >= self.config.pending_requests_max:
            self._dispatch(shard, group, out)
            return busy
        key = (group.group_id, out.parked)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        waiters.setdefault(key, []).append(fut)
        self._waiting += 1
        try:
            self._dispatch(shard, group, out)
            return await fut
        finally:
            self._waiting -= 1
            parked = waiters.get(key)
            if parked is not None and fut in parked:
                parked.remove(fut)
                if not parked:
                    del waiters[key]

    # --- JoinGroup / SyncGroup / Heartbeat / LeaveGroup ----------------------------------

    async def handle_join_group(
        self, request: JoinGroupRequest, version: int, client_id: str, client_host: str
    ) -> JoinGroupResponse:
        shard, error = self._lookup(request.group_id)
        if not request.group_id:
            error = ErrorCode.INVALID_GROUP_ID
        if shard is None or error is not ErrorCode.NONE:
            return _join_response(JoinResult(request.member_id, error), version)
        instance_id = request.group_instance_id if version >= 5 else None
        rebalance_timeout_ms = request.rebalance_timeout_ms if version >= 1 else -1
        if rebalance_timeout_ms < 0:
            rebalance_timeout_ms = request.session_timeout_ms
        params = JoinParams(
            member_id=request.member_id,
            group_instance_id=instance_id,
            client_id=client_id,
            client_host=client_host,
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=tuple((p.name, p.metadata) for p in request.protocols),
            require_known_member_id=version >= 4,
            supports_skip_assignment=version >= 9,
        )
        new_member_id = f"{instance_id or client_id}-{uuid.uuid4()}"
        now_ms = self._clock_ms()
        group = shard.state.get_or_create(request.group_id, now_ms)
        out = group.join(now_ms, params, new_member_id)
        if out.reply is not None:
            shard.state.discard_if_unused(request.group_id)
        busy = JoinResult(request.member_id, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        result = await self._await_outcome(shard, group, out, self._join_waiters, busy)
        return _join_response(result, version)

    async def handle_sync_group(self, request: SyncGroupRequest, version: int) -> SyncGroupResponse:
        shard, error = self._lookup(request.group_id)
        if not request.group_id:
            error = ErrorCode.INVALID_GROUP_ID
        group = shard.state.get(request.group_id) if shard is not None else None
        if shard is not None and error is ErrorCode.NONE and group is None:
            error = ErrorCode.UNKNOWN_MEMBER_ID
        if shard is None or group is None or error is not ErrorCode.NONE:
            return SyncGroupResponse(error_code=error)
        out = group.sync(
            self._clock_ms(),
            request.member_id,
            request.generation_id,
            request.group_instance_id if version >= 3 else None,
            request.protocol_type if version >= 5 else None,
            request.protocol_name if version >= 5 else None,
            [(a.member_id, a.assignment) for a in request.assignments],
        )
        busy = SyncResult(request.member_id, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        result = await self._await_outcome(shard, group, out, self._sync_waiters, busy)
        return SyncGroupResponse(
            error_code=result.error,
            protocol_type=result.protocol_type,
            protocol_name=result.protocol_name,
            assignment=result.assignment,
        )

    async def handle_heartbeat(self, request: HeartbeatRequest, version: int) -> HeartbeatResponse:
        shard, error = self._lookup(request.group_id)
        if not request.group_id:
            error = ErrorCode.INVALID_GROUP_ID
        if shard is None or error is not ErrorCode.NONE:
            return HeartbeatResponse(error_code=error)
        group = shard.state.get(request.group_id)
        if group is None:
            return HeartbeatResponse(error_code=ErrorCode.UNKNOWN_MEMBER_ID)
        instance_id = request.group_instance_id if version >= 3 else None
        error = group.heartbeat(
            self._clock_ms(), request.member_id, request.generation_id, instance_id
        )
        return HeartbeatResponse(error_code=error)

    async def handle_leave_group(
        self, request: LeaveGroupRequest, version: int
    ) -> LeaveGroupResponse:
        if version >= 3:
            leaving = [(m.member_id, m.group_instance_id) for m in request.members]
        else:
            leaving = [(request.member_id, None)]
        shard, error = self._lookup(request.group_id)
        group = shard.state.get(request.group_id) if shard is not None else None
        if shard is None or error is not ErrorCode.NONE:
            return LeaveGroupResponse(error_code=error)
        if group is None:
            errors = [ErrorCode.UNKNOWN_MEMBER_ID] * len(leaving)
        else:
            errors, out = group.leave(self._clock_ms(), leaving)
            self._dispatch(shard, group, out)
        if version < 3:
            return LeaveGroupResponse(error_code=errors[0])
        members = tuple(
            MemberResponse(member_id=m, group_instance_id=i, error_code=e)
            for (m, i), e in zip(leaving, errors)
        )
        return LeaveGroupResponse(error_code=ErrorCode.NONE, members=members)

    # --- OffsetCommit / OffsetFetch ------------------------------------------------------

    async def handle_offset_commit(
        self, request: OffsetCommitRequest, version: int
    ) -> OffsetCommitResponse:
        generation_id = request.generation_id_or_member_epoch if version >= 1 else -1
        member_id = request.member_id if version >= 1 else ""
        instance_id = request.group_instance_id if version >= 7 else None
        now_ms = self._clock_ms()
        shard, error = self._lookup(request.group_id)
        group = shard.state.get(request.group_id) if shard is not None else None
        if shard is not None and error is ErrorCode.NONE:
            if group is None and generation_id < 0:
                group = shard.state.get_or_create(request.group_id, now_ms)
            if group is None:
                error = ErrorCode.ILLEGAL_GENERATION  # a member of a group that is gone
            else:
                error = group.validate_offset_commit(now_ms, member_id, instance_id, generation_id)
        errors: dict[TopicPartition, ErrorCode] = {}
        accepted: dict[TopicPartition, OffsetAndMetadata] = {}
        for topic in request.topics:
            for p in topic.partitions:
                tp = (topic.name, p.partition_index)
                errors[tp] = error
                if error is ErrorCode.NONE:
                    errors[tp] = self._check_commit(tp, p.committed_metadata)
                if errors[tp] is ErrorCode.NONE:
                    commit_ms = (
                        p.commit_timestamp if version == 1 and p.commit_timestamp >= 0 else now_ms
                    )
                    epoch = p.committed_leader_epoch if version >= 6 else -1
                    metadata = p.committed_metadata or ""
                    accepted[tp] = OffsetAndMetadata(p.committed_offset, epoch, metadata, commit_ms)
        if accepted and shard is not None and group is not None:
            append_result = await self._commit(shard, group, accepted)
            for tp in accepted:
                errors[tp] = append_result
        return _commit_response(request, errors)

    def _check_commit(self, tp: TopicPartition, metadata: str | None) -> ErrorCode:
        if (
            metadata is not None
            and len(metadata.encode()) > self.config.group.offset_metadata_bytes_max
        ):
            return ErrorCode.OFFSET_METADATA_TOO_LARGE
        if self._partition_exists is not None and not self._partition_exists(*tp):
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return ErrorCode.NONE

    async def _commit(
        self, shard: _Shard, group: Group, offsets: dict[TopicPartition, OffsetAndMetadata]
    ) -> ErrorCode:
        records = [offset_record(group.group_id, t, p, o) for (t, p), o in offsets.items()]
        group.commits_in_flight += 1
        try:
            await self._start_append(shard, records)
        except Exception as exc:
            return append_error(exc)
        finally:
            group.commits_in_flight -= 1
        if not self._is_current(shard):
            # Durable, but this node no longer coordinates the group; the new leader has it.
            return ErrorCode.NONE
        if group.state is not GroupState.DEAD:
            group.apply_offsets(offsets)
        return ErrorCode.NONE

    async def handle_offset_fetch(
        self, request: OffsetFetchRequest, version: int
    ) -> OffsetFetchResponse:
        if version >= 8:
            groups = tuple(
                self._fetch_group(g.group_id, _wanted(g.topics, version)) for g in request.groups
            )
            return OffsetFetchResponse(groups=groups)
        fetched = self._fetch_group(request.group_id, _wanted(request.topics, version))
        error = ErrorCode(fetched.error_code)
        if version < 2 and error is not ErrorCode.NONE:
            # v0-1 have no group-level error: report it on every requested partition.
            topics = tuple(
                OffsetFetchResponseTopic(
                    name=t.name,
                    partitions=tuple(
                        OffsetFetchResponsePartition(
                            partition_index=i, committed_offset=-1, metadata="", error_code=error
                        )
                        for i in t.partition_indexes
                    ),
                )
                for t in request.topics or ()
            )
            return OffsetFetchResponse(topics=topics)
        topics = tuple(
            OffsetFetchResponseTopic(
                name=t.name,
                partitions=tuple(
                    OffsetFetchResponsePartition(
                        partition_index=p.partition_index,
                        committed_offset=p.committed_offset,
                        committed_leader_epoch=p.committed_leader_epoch,
                        metadata=p.metadata,
                        error_code=p.error_code,
                    )
                    for p in t.partitions
                ),
            )
            for t in fetched.topics
        )
        return OffsetFetchResponse(topics=topics, error_code=error)

    def _fetch_group(
        self, group_id: str, wanted: list[TopicPartition] | None
    ) -> OffsetFetchResponseGroup:
        shard, error = self._lookup(group_id)
        if shard is None or error is not ErrorCode.NONE:
            return OffsetFetchResponseGroup(group_id=group_id, error_code=error)
        group = shard.state.get(group_id)
        found: dict[TopicPartition, OffsetAndMetadata | None]
        if group is None or group.state is GroupState.DEAD:
            found = dict.fromkeys(wanted or [])
        else:
            found = group.fetch_offsets(wanted)
        by_topic: dict[str, list[OffsetFetchResponsePartitions]] = {}
        for (topic, partition), o in found.items():
            by_topic.setdefault(topic, []).append(
                OffsetFetchResponsePartitions(
                    partition_index=partition,
                    committed_offset=-1 if o is None else o.offset,
                    committed_leader_epoch=-1 if o is None else o.leader_epoch,
                    metadata="" if o is None else o.metadata,
                    error_code=ErrorCode.NONE,
                )
            )
        topics = tuple(
            OffsetFetchResponseTopics(name=t, partitions=tuple(ps)) for t, ps in by_topic.items()
        )
        return OffsetFetchResponseGroup(group_id=group_id, topics=topics, error_code=ErrorCode.NONE)

    # --- ListGroups / DescribeGroups / DeleteGroups --------------------------------------

    async def handle_list_groups(
        self, request: ListGroupsRequest, version: int
    ) -> ListGroupsResponse:
        states = {s.lower() for s in request.states_filter} if version >= 4 else set()
        types = {t.lower() for t in request.types_filter} if version >= 5 else set()
        listed = []
        for shard in self._shards.values():
            if not isinstance(shard, _Shard):
                continue
            for group in shard.state.groups.values():
                if group.state is GroupState.DEAD:
                    continue
                if states and group.state.value.lower() not in states:
                    continue
                if types and "classic" not in types:
                    continue
                listed.append(
                    ListedGroup(
                        group_id=group.group_id,
                        protocol_type=group.protocol_type or "",
                        group_state=group.state.value,
                        group_type="classic",
                    )
                )
        loading = any(s == _LOADING for s in self._shards.values())
        error = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS if loading else ErrorCode.NONE
        return ListGroupsResponse(error_code=error, groups=tuple(listed))

    async def handle_describe_groups(
        self, request: DescribeGroupsRequest, version: int
    ) -> DescribeGroupsResponse:
        operations = (
            _GROUP_OPERATIONS
            if version >= 3 and request.include_authorized_operations
            else -(2**31)
        )
        described = tuple(self._describe(g, operations) for g in request.groups)
        return DescribeGroupsResponse(groups=described)

    def _describe(self, group_id: str, operations: int) -> DescribedGroup:
        shard, error = self._lookup(group_id)
        if shard is None or error is not ErrorCode.NONE:
            return DescribedGroup(error_code=error, group_id=group_id)
        group = shard.state.get(group_id)
        if group is None:
            return DescribedGroup(
                group_id=group_id,
                group_state=GroupState.DEAD.value,
                authorized_operations=operations,
            )
        stable = group.state is GroupState.STABLE
        members = tuple(
            DescribedGroupMember(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                # Kafka shows metadata and assignment only once the group is Stable.
                member_metadata=m.metadata_for(group.protocol_name) if stable else b"",
                member_assignment=m.assignment if stable else b"",
            )
            for m in group.members.values()
        )
        return DescribedGroup(
            group_id=group_id,
            group_state=group.state.value,
            protocol_type=group.protocol_type or "",
            protocol_data=(group.protocol_name or "") if stable else "",
            members=members,
            authorized_operations=operations,
        )

    async def handle_delete_groups(
        self, request: DeleteGroupsRequest, version: int
    ) -> DeleteGroupsResponse:
        results = []
        for group_id in request.groups_names:
            error = await self._delete_group(group_id)
            results.append(DeletableGroupResult(group_id=group_id, error_code=error))
        return DeleteGroupsResponse(results=tuple(results))

    async def _delete_group(self, group_id: str) -> ErrorCode:
        shard, error = self._lookup(group_id)
        if shard is None or error is not ErrorCode.NONE:
            return error
        group = shard.state.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if group.state is not GroupState.EMPTY:
            return ErrorCode.NON_EMPTY_GROUP
        records = [offset_record(group_id, t, p, None) for t, p in group.offsets]
        records.append(group_record(group_id, None))
        group.state = GroupState.DEAD  # no joins or commits while the tombstones commit
        try:
            await self._start_append(shard, records)
        except Exception as exc:
            if group.state is GroupState.DEAD:
                group.state = GroupState.EMPTY
            return append_error(exc)
        if shard.state.groups.get(group_id) is group:
            del shard.state.groups[group_id]
        return ErrorCode.NONE


def _copy_outcome(target: asyncio.Future[None], source: asyncio.Future[None]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(None)


class _FetchTopic(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def partition_indexes(self) -> Sequence[int]: ...


def _wanted(topics: Iterable[_FetchTopic] | None, version: int) -> list[TopicPartition] | None:
    """The partitions an OffsetFetch names; None means every partition of the group."""
    if topics is None:
        return None
    return [(t.name, i) for t in topics for i in t.partition_indexes]


def _join_response(result: JoinResult, version: int) -> JoinGroupResponse:
    ok = result.error is ErrorCode.NONE
    protocol_name = result.protocol_name if ok else None
    if protocol_name is None and version < 7:
        protocol_name = ""  # not nullable before v7
    return JoinGroupResponse(
        error_code=result.error,
        generation_id=result.generation_id,
        protocol_type=result.protocol_type if ok else None,
        protocol_name=protocol_name,
        leader=result.leader_id,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=tuple(
            JoinGroupResponseMember(
                member_id=m.member_id, group_instance_id=m.group_instance_id, metadata=m.metadata
            )
            for m in result.members
        ),
    )


def _commit_response(
    request: OffsetCommitRequest, errors: dict[TopicPartition, ErrorCode]
) -> OffsetCommitResponse:
    return OffsetCommitResponse(
        topics=tuple(
            OffsetCommitResponseTopic(
                name=t.name,
                partitions=tuple(
                    OffsetCommitResponsePartition(
                        partition_index=p.partition_index,
                        error_code=errors[(t.name, p.partition_index)],
                    )
                    for p in t.partitions
                ),
            )
            for t in request.topics
        )
    )
