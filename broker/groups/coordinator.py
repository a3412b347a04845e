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
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from broker.groups.offsets_log import (
    OffsetAndMetadata,
    Record,
    group_record,
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

    async def append(self, records: list[Record]) -> None:
        """Append key/value records (value None = tombstone).

        Resolves once the records are quorum-committed; raises on failure (leadership
        lost, timeout). Calls must be appended in the order they are made.
        """
        ...


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    group: GroupConfig = field(default_factory=GroupConfig)
    offsets_topic_partitions: int = 50
    pending_requests_max: int = 10_000
    offsets_expiry_interval_ms: int = 60_000  # Kafka's offsets.retention.check.interval.ms
    timer_sleep_ms_max: int = 1000  # the timer re-reads the clock at least this often

    def __post_init__(self) -> None:
        assert self.offsets_topic_partitions > 0
        assert self.pending_requests_max > 0
        assert self.offsets_expiry_interval_ms > 0 and self.timer_sleep_ms_max > 0


class _Shard:
    """A loaded shard: the pure state and the log it persists to."""

    __slots__ = ("log", "state")

    def __init__(self, state: GroupCoordinatorShard, log: GroupLog) -> None:
        self.state = state
        self.log = log


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
        state = GroupCoordinatorShard.load(partition, records, self.config.group, self._clock_ms())
        self._shards[partition] = _Shard(state, group_log)
        self._wake.set()

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
        await shard.log.append(records)

    def _start_append(self, shard: _Shard, records: list[Record]) -> asyncio.Future[None]:
        """Start the append now (tasks start in creation order: Ordering)."""
        return asyncio.ensure_future(self._append(shard, records))

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
