"""Consumer group membership (the classic protocol): join, sync, heartbeat, commit.

Theory of operation. A background task owns the membership. It finds the
group's coordinator (FindCoordinator), joins (JoinGroup; v4+ first answers
MEMBER_ID_REQUIRED with the id to use), and, if elected leader, runs the
assignor chosen by the broker over every member's subscription and sends the
result in SyncGroup. Then it heartbeats every `heartbeat_interval_ms` until the
coordinator says the group is rebalancing, the member is unknown, or the
generation is stale; then it rejoins.

Eager assignors (range, roundrobin): before rejoining, every owned partition is
revoked (the rebalance listener hears it, auto-commit commits first).
Cooperative (cooperative-sticky, KIP-429): nothing is revoked up front; after
SyncGroup, partitions that left the assignment are revoked and, if any were,
the member rejoins at once so the withheld partitions can be handed over.

Offsets: `commit` sends OffsetCommit with the current generation and member id
(or generation -1 when the consumer only assigns manually); `fetch_committed`
uses OffsetFetch. Coordinator errors forget the coordinator and retry;
generation errors raise CommitFailedError and trigger a rejoin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from client.assignors import (
    ASSIGNORS,
    Assignment,
    Member,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.client import KafkaClient
from client.errors import (
    CommitFailedError,
    ErrorCode,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    exception_for,
)
from client.protocol.messages.heartbeat import HeartbeatRequest
from client.protocol.messages.join_group import JoinGroupRequest, JoinGroupRequestProtocol
from client.protocol.messages.leave_group import LeaveGroupRequest, MemberIdentity
from client.protocol.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from client.protocol.messages.offset_fetch import OffsetFetchRequest, OffsetFetchRequestTopic
from client.protocol.messages.sync_group import SyncGroupRequest, SyncGroupRequestAssignment
from client.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

CONSUMER_PROTOCOL = "consumer"
_COORDINATOR_ERRORS = frozenset(
    {
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    }
)
_REJOIN_ERRORS = frozenset(
    {
        ErrorCode.REBALANCE_IN_PROGRESS,
        ErrorCode.ILLEGAL_GENERATION,
        ErrorCode.UNKNOWN_MEMBER_ID,
        ErrorCode.FENCED_INSTANCE_ID,
    }
)


class RebalanceListener(Protocol):
    """Callbacks around rebalances; they may be coroutines or plain functions."""

    def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> Any: ...
    def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> Any: ...


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        await value


class GroupMembership:
    """Keeps one consumer in its group. Driven by Consumer; see the module docstring."""

    def __init__(
        self,
        client: KafkaClient,
        group_id: str,
        *,
        topics: Callable[[], frozenset[str]],
        on_assignment: Callable[[frozenset[TopicPartition]], None],
        before_revoke: Callable[[frozenset[TopicPartition]], Any],
        assignors: Sequence[str] = ("range", "cooperative-sticky"),
        session_timeout_ms: int = 45000,
        rebalance_timeout_ms: int = 300000,
        heartbeat_interval_ms: int = 3000,
        group_instance_id: str | None = None,
        listener: RebalanceListener | None = None,
    ) -> None:
        for name in assignors:
            if name not in ASSIGNORS:
                raise ValueError(f"unknown assignor {name!r}; known: {sorted(ASSIGNORS)}")
        self._client = client
        self.group_id = group_id
        self._topics = topics
        self._on_assignment = on_assignment
        self._before_revoke = before_revoke
        self._assignors = [ASSIGNORS[n]() for n in assignors]
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.group_instance_id = group_instance_id
        self.listener = listener
        self.member_id = ""
        self.generation_id = -1
        self.protocol_name: str | None = None
        self.owned: frozenset[TopicPartition] = frozenset()
        self._rejoin = asyncio.Event()
        self._rejoin.set()
        self._stable = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.rebalances = 0

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"group-{self.group_id}")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.member_id:
            await self._revoke(self.owned)
            with contextlib.suppress(KafkaError):
                await self._leave()

    def request_rejoin(self) -> None:
        self._rejoin.set()
        self._stable.clear()

    async def wait_stable(self, timeout_ms: float | None = None) -> bool:
        try:
            async with asyncio.timeout(None if timeout_ms is None else timeout_ms / 1000):
                await self._stable.wait()
        except TimeoutError:
            return False
        return True

    @property
    def stable(self) -> bool:
        return self._stable.is_set()

    # ---- the membership task -------------------------------------------------------------

    async def _run(self) -> None:
        backoff_ms = self._client.config.retry_backoff_ms
        while not self._closing:
            try:
                if self._rejoin.is_set():
                    await self._join_and_sync()
                    continue
                await self._heartbeat_once()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.heartbeat_interval_ms / 1000):
                        await self._rejoin.wait()
            except KafkaError as e:
                log.info("group %s: %s", self.group_id, e)
                await self._client.clock.sleep_ms(backoff_ms)

    async def _coordinator(self) -> int:
        return await self._client.find_coordinator(self.group_id)

    async def _send(self, request: Any) -> Any:
        node_id = await self._coordinator()
        try:
            return await self._client.send(node_id, request)
        except (KafkaConnectionError, KafkaTimeoutError):
            self._client.forget_coordinator(self.group_id)
            raise

    def _check_coordinator(self, code: int) -> None:
        if code in _COORDINATOR_ERRORS:
            self._client.forget_coordinator(self.group_id)
            raise exception_for(code, f"group {self.group_id}")

    async def _join_and_sync(self) -> None:
        self._stable.clear()
        cooperative = self._is_cooperative()
        if not cooperative and self.owned:
            await self._revoke(self.owned)
        topics = tuple(sorted(self._topics()))
        await self._client.wait_for_topics_metadata(topics)
        subscription = Subscription(topics, None, tuple(sorted(self.owned)), self.generation_id)
        protocols = tuple(
            JoinGroupRequestProtocol(name=a.name, metadata=encode_subscription(subscription))
            for a in self._assignors
        )
        join = await self._send(
            JoinGroupRequest(
                group_id=self.group_id,
                session_timeout_ms=self.session_timeout_ms,
                rebalance_timeout_ms=self.rebalance_timeout_ms,
                member_id=self.member_id,
                group_instance_id=self.group_instance_id,
                protocol_type=CONSUMER_PROTOCOL,
                protocols=protocols,
            )
        )
        if join.error_code == ErrorCode.MEMBER_ID_REQUIRED:
            self.member_id = join.member_id
            return  # join again at once with the id the coordinator gave us
        if join.error_code == ErrorCode.UNKNOWN_MEMBER_ID:
            self._reset_member()
        self._check_coordinator(join.error_code)
        if join.error_code:
            raise exception_for(join.error_code, f"JoinGroup {self.group_id}")
        self.member_id = join.member_id
        self.generation_id = join.generation_id
        self.protocol_name = join.protocol_name
        assignments: tuple[SyncGroupRequestAssignment, ...] = ()
        if join.leader == join.member_id and not join.skip_assignment:
            assignments = await self._lead(join)
        sync = await self._send(
            SyncGroupRequest(
                group_id=self.group_id,
                generation_id=self.generation_id,
                member_id=self.member_id,
                group_instance_id=self.group_instance_id,
                protocol_type=CONSUMER_PROTOCOL,
                protocol_name=self.protocol_name,
                assignments=assignments,
            )
        )
        self._check_coordinator(sync.error_code)
        if sync.error_code:
            if sync.error_code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION):
                self._reset_member()
            raise exception_for(sync.error_code, f"SyncGroup {self.group_id}")
        await self._install(frozenset(decode_assignment(sync.assignment).partitions))

    async def _lead(self, join: Any) -> tuple[SyncGroupRequestAssignment, ...]:
        assignor = next(a for a in self._assignors if a.name == join.protocol_name)
        members = [Member(m.member_id, decode_subscription(m.metadata)) for m in join.members]
        topics = {t for m in members for t in m.subscription.topics}
        await self._client.wait_for_topics_metadata(tuple(sorted(topics)))
        cluster = self._client.cluster
        counts = {t: len(cluster.partitions_for(t) or ()) for t in topics}
        plan = assignor.assign({t: n for t, n in counts.items() if n}, members)
        return tuple(
            SyncGroupRequestAssignment(
                member_id=m.member_id,
                assignment=encode_assignment(Assignment(plan.get(m.member_id, ()))),
            )
            for m in members
        )

    async def _install(self, assigned: frozenset[TopicPartition]) -> None:
        cooperative = self._is_cooperative()
        revoked = self.owned - assigned if cooperative else frozenset()
        added = assigned - self.owned if cooperative else assigned
        if revoked:
            await self._revoke(revoked)
        self.owned = assigned
        self._on_assignment(assigned)
        self.rebalances += 1
        self._rejoin.clear()
        if self.listener is not None and (added or not cooperative):
            await _maybe_await(self.listener.on_partitions_assigned(added))
        if revoked:
            self.request_rejoin()  # let the withheld partitions move (KIP-429)
        else:
            self._stable.set()

    async def _revoke(self, revoked: frozenset[TopicPartition]) -> None:
        if not revoked:
            return
        with contextlib.suppress(KafkaError):
            await _maybe_await(self._before_revoke(revoked))
        if self.listener is not None:
            await _maybe_await(self.listener.on_partitions_revoked(revoked))
        self.owned = self.owned - revoked
        self._on_assignment(self.owned)

    def _is_cooperative(self) -> bool:
        name = self.protocol_name
        if name is None:
            return all(a.cooperative for a in self._assignors)
        return ASSIGNORS[name].cooperative

    def _reset_member(self) -> None:
        self.member_id = ""
        self.generation_id = -1

    async def _heartbeat_once(self) -> None:
        response = await self._send(
            HeartbeatRequest(
                group_id=self.group_id,
                generation_id=self.generation_id,
                member_id=self.member_id,
                group_instance_id=self.group_instance_id,
            )
        )
        code = response.error_code
        if code == 0:
            return
        self._check_coordinator(code)
        if code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION):
            # Our partitions may already belong to someone else: lost, not revoked.
            self._reset_member()
            self.owned = frozenset()
            self._on_assignment(self.owned)
        if code in _REJOIN_ERRORS:
            self.request_rejoin()
            return
        raise exception_for(code, f"Heartbeat {self.group_id}")

    async def _leave(self) -> None:
        await self._send(
            LeaveGroupRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                members=(
                    MemberIdentity(
                        member_id=self.member_id, group_instance_id=self.group_instance_id
                    ),
                ),
            )
        )
        self._reset_member()

    # ---- offsets -------------------------------------------------------------------------

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if not offsets:
            return
        by_topic: dict[str, list[OffsetCommitRequestPartition]] = {}
        for tp, om in offsets.items():
            by_topic.setdefault(tp.topic, []).append(
                OffsetCommitRequestPartition(
                    partition_index=tp.partition,
                    committed_offset=om.offset,
                    committed_leader_epoch=om.leader_epoch,
                    committed_metadata=om.metadata,
                )
            )
        response = await self._send(
            OffsetCommitRequest(
                group_id=self.group_id,
                generation_id_or_member_epoch=self.generation_id,
                member_id=self.member_id,
                group_instance_id=self.group_instance_id,
                topics=tuple(
                    OffsetCommitRequestTopic(name=t, partitions=tuple(ps))
                    for t, ps in by_topic.items()
                ),
            )
        )
        for t in response.topics:
            for p in t.partitions:
                code = p.error_code
                if not code:
                    continue
                self._check_coordinator(code)
                if code in _REJOIN_ERRORS:
                    self.request_rejoin()
                    raise CommitFailedError(f"commit failed, group rebalanced: {code}")
                raise exception_for(code, f"OffsetCommit {t.name}-{p.partition_index}")

    async def fetch_committed(
        self, tps: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        response = await self._send(
            OffsetFetchRequest(
                group_id=self.group_id,
                topics=tuple(
                    OffsetFetchRequestTopic(name=t, partition_indexes=tuple(ps))
                    for t, ps in by_topic.items()
                ),
            )
        )
        self._check_coordinator(response.error_code)
        if response.error_code:
            raise exception_for(response.error_code, f"OffsetFetch {self.group_id}")
        out: dict[TopicPartition, OffsetAndMetadata | None] = {}
        for t in response.topics:
            for p in t.partitions:
                self._check_coordinator(p.error_code)
                if p.error_code:
                    raise exception_for(p.error_code, f"OffsetFetch {t.name}")
                tp = TopicPartition(t.name, p.partition_index)
                out[tp] = (
                    OffsetAndMetadata(
                        p.committed_offset, p.metadata or "", p.committed_leader_epoch
                    )
                    if p.committed_offset >= 0
                    else None
                )
        return out
