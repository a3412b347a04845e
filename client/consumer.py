"""Consumer: assign or subscribe, then getone/getmany/async-for over prefetched records.

Theory of operation. The consumer is a thin coordinator of three parts:
`SubscriptionState` (what is assigned, positions, pauses), the `Fetcher` task
(prefetches into a bounded buffer, see fetcher.py) and, with `subscribe()`, a
`GroupMembership` task (group.py) that changes the assignment on rebalances.
Reading never blocks heartbeats: membership and fetching run in their own
tasks, and getmany() only waits on "records buffered" or its timeout.

Positions advance as records are handed out. With `enable_auto_commit`, a task
commits the positions every `auto_commit_interval_ms`, and once more before
partitions are revoked (and on close), so a clean shutdown re-delivers nothing.
Without a group id the consumer still works with `assign()`; positions then
start from `auto_offset_reset` (or `seek`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from client.client import ClientConfig, KafkaClient
from client.clock import SYSTEM_CLOCK, Clock
from client.cluster import ClusterMetadata, MetadataChange
from client.errors import ClientClosedError, IllegalStateError, KafkaError
from client.fetcher import (
    EARLIEST,
    LATEST,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    Fetcher,
    SubscriptionState,
)
from client.group import GroupMembership, RebalanceListener
from client.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

ISOLATION_LEVELS = {"read_uncommitted": READ_UNCOMMITTED, "read_committed": READ_COMMITTED}


class Consumer:
    """An asyncio Kafka consumer. Use `async with Consumer(...) as c:` or start()/close()."""

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092",
        group_id: str | None = None,
        client_id: str = "raftka-consumer",
        group_instance_id: str | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 50 * 1024 * 1024,
        partition_fetch_bytes_max: int = 1024 * 1024,
        prefetch_bytes_max: int = 64 * 1024 * 1024,
        max_poll_records: int = 500,
        isolation_level: str = "read_uncommitted",
        partition_assignment_strategy: Sequence[str] = ("range", "cooperative-sticky"),
        session_timeout_ms: int = 45000,
        heartbeat_interval_ms: int = 3000,
        rebalance_timeout_ms: int = 300000,
        request_timeout_ms: int = 30000,
        metadata_max_age_ms: int = 300000,
        retry_backoff_ms: int = 100,
        key_deserializer: Callable[[bytes], Any] | None = None,
        value_deserializer: Callable[[bytes], Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if isolation_level not in ISOLATION_LEVELS:
            raise ValueError(f"isolation_level must be one of {sorted(ISOLATION_LEVELS)}")
        self._client = KafkaClient(
            ClientConfig(
                bootstrap_servers=bootstrap_servers,
                client_id=client_id,
                request_timeout_ms=request_timeout_ms,
                metadata_max_age_ms=metadata_max_age_ms,
                retry_backoff_ms=retry_backoff_ms,
            ),
            clock,
        )
        self._subs = SubscriptionState()
        self._fetcher = Fetcher(
            self._client,
            self._subs,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_bytes=fetch_max_bytes,
            partition_fetch_bytes_max=partition_fetch_bytes_max,
            prefetch_bytes_max=prefetch_bytes_max,
            isolation_level=ISOLATION_LEVELS[isolation_level],
            auto_offset_reset=auto_offset_reset,
            position_initializer=self._committed_positions if group_id else None,
        )
        self.group_id = group_id
        self._group_options = {
            "assignors": tuple(partition_assignment_strategy),
            "session_timeout_ms": session_timeout_ms,
            "rebalance_timeout_ms": rebalance_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "group_instance_id": group_instance_id,
        }
        self._group: GroupMembership | None = None
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.max_poll_records = max_poll_records
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._topics: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._listener: RebalanceListener | None = None
        self._committed_positions_cache: dict[TopicPartition, int] = {}
        self._auto_commit_task: asyncio.Task[None] | None = None
        self._leaving: set[asyncio.Future[None]] = set()
        self._started = False
        self._closed = False
        self._initial_topics = topics

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def client(self) -> KafkaClient:
        return self._client

    async def start(self) -> None:
        await self._client.start()
        self._fetcher.start()
        if self.enable_auto_commit:
            self._auto_commit_task = asyncio.create_task(self._auto_commit_loop())
        self._started = True
        if self._initial_topics:
            self.subscribe(self._initial_topics)

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit (if auto-commit), leave the group, stop fetching, close connections."""
        if self._closed:
            return
        self._closed = True
        if self._auto_commit_task is not None:
            self._auto_commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auto_commit_task
        if self._group is not None:
            await self._group.close()  # revokes, which commits
        elif self.enable_auto_commit:
            with contextlib.suppress(KafkaError):
                await self.commit()
        await self._fetcher.close()
        await self._client.close()

    stop = close

    def _check_open(self) -> None:
        if self._closed or not self._started:
            raise ClientClosedError("consumer is not running")

    # ---- assignment ----------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Take these partitions, no group membership (commits still go to group_id if set)."""
        self._check_open()
        if self._group is not None:
            raise IllegalStateError("assign() after subscribe(): unsubscribe() first")
        tps = frozenset(partitions)
        self._client.add_topics(tp.topic for tp in tps)
        self._set_assignment(tps)

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._subs.assignment)

    def _set_assignment(self, tps: frozenset[TopicPartition]) -> None:
        self._subs.assign(tps)
        self._fetcher.drop_buffered(keep=lambda tp: tp in tps)
        self._fetcher.wake()

    def subscribe(
        self,
        topics: Iterable[str] = (),
        pattern: str | None = None,
        listener: RebalanceListener | None = None,
    ) -> None:
        """Join `group_id` for these topics (or every topic matching `pattern`)."""
        self._check_open()
        if self.group_id is None:
            raise IllegalStateError("subscribe() needs a group_id")
        if self._subs.assignment and self._group is None:
            raise IllegalStateError("subscribe() after assign(): unsubscribe() first")
        self._listener = listener
        if pattern is not None:
            self._pattern = re.compile(pattern)
            self._client.want_all_topics = True
            self._client.cluster.add_listener(self._on_metadata)
            self._topics = self._matching_topics(self._client.cluster)
        else:
            self._topics = frozenset(topics)
        self._client.add_topics(self._topics)
        if self._group is None:
            self._group = GroupMembership(
                self._client,
                self.group_id,
                topics=lambda: self._topics,
                on_assignment=self._set_assignment,
                before_revoke=self._before_revoke,
                listener=listener,
                **self._group_options,  # type: ignore[arg-type]
            )
            self._group.start()
        else:
            self._group.listener = listener
            self._group.request_rejoin()

    def subscription(self) -> frozenset[str]:
        return self._topics

    def unsubscribe(self) -> None:
        self._topics = frozenset()
        self._pattern = None
        if self._group is not None:
            group, self._group = self._group, None
            task = asyncio.ensure_future(group.close())
            self._leaving.add(task)  # asyncio holds tasks weakly: keep it alive until done
            task.add_done_callback(self._leaving.discard)
        self._set_assignment(frozenset())

    def _matching_topics(self, cluster: ClusterMetadata) -> frozenset[str]:
        assert self._pattern is not None
        return frozenset(
            t for t in cluster.topics(exclude_internal=True) if self._pattern.fullmatch(t)
        )

    def _on_metadata(self, cluster: ClusterMetadata, change: MetadataChange) -> None:
        if self._pattern is None or not (change.topics_added or change.topics_removed):
            return
        topics = self._matching_topics(cluster)
        if topics != self._topics:
            self._topics = topics
            if self._group is not None:
                self._group.request_rejoin()

    async def _before_revoke(self, revoked: frozenset[TopicPartition]) -> None:
        if self.enable_auto_commit:
            await self.commit({tp: o for tp, o in self._positions().items() if tp in revoked})

    # ---- positions and offsets -----------------------------------------------------------

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._subs.seek(tp, offset)
        self._fetcher.drop_buffered(keep=lambda other: other != tp)

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        await self._seek_to(tps, EARLIEST)

    async def seek_to_end(self, *tps: TopicPartition) -> None:
        await self._seek_to(tps, LATEST)

    async def _seek_to(self, tps: Sequence[TopicPartition], timestamp: int) -> None:
        targets = list(tps) or list(self._subs.assignment)
        offsets = await self._fetcher.list_offsets({tp: timestamp for tp in targets})
        for tp, offset in offsets.items():
            self.seek(tp, offset)

    async def position(self, tp: TopicPartition, timeout_ms: int = 30000) -> int:
        """The offset of the next record to be returned for `tp`."""
        state = self._subs.state(tp)
        deadline = self._client.clock.monotonic_ms() + timeout_ms
        while state.position is None:
            self._fetcher.wake()
            if self._client.clock.monotonic_ms() > deadline:
                raise KafkaError(f"no position for {tp} within {timeout_ms} ms")
            await self._fetcher.wait_for_records(min(100, timeout_ms))
            await asyncio.sleep(0)
            state = self._subs.state(tp)
        return state.position

    def highwater(self, tp: TopicPartition) -> int:
        return self._subs.state(tp).high_watermark

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self._subs.state(tp).last_stable_offset

    async def committed(self, tp: TopicPartition) -> OffsetAndMetadata | None:
        return (await self._membership().fetch_committed([tp])).get(tp)

    def _membership(self) -> GroupMembership:
        if self.group_id is None:
            raise IllegalStateError("committed offsets need a group_id")
        if self._group is not None:
            return self._group
        # assign() with a group id: commit as a "simple" consumer (generation -1).
        return GroupMembership(
            self._client,
            self.group_id,
            topics=lambda: frozenset(),
            on_assignment=lambda _tps: None,
            before_revoke=lambda _tps: None,
        )

    async def _committed_positions(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self._membership().fetch_committed(tps)
        return {tp: om.offset for tp, om in found.items() if om is not None}

    def _positions(self) -> dict[TopicPartition, OffsetAndMetadata]:
        return {
            tp: OffsetAndMetadata(s.position)
            for tp, s in self._subs.assignment.items()
            if s.position is not None
        }

    async def commit(
        self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None
    ) -> None:
        """Commit `offsets` (next offset to read), or every current position."""
        if offsets is None:
            todo = self._positions()
        else:
            todo = {
                tp: o if isinstance(o, OffsetAndMetadata) else OffsetAndMetadata(o)
                for tp, o in offsets.items()
            }
        await self._membership().commit(todo)
        for tp, om in todo.items():
            self._committed_positions_cache[tp] = om.offset

    async def _auto_commit_loop(self) -> None:
        while True:
            await self._client.clock.sleep_ms(self.auto_commit_interval_ms)
            changed = {
                tp: om
                for tp, om in self._positions().items()
                if self._committed_positions_cache.get(tp) != om.offset
            }
            if changed and (self._group is None or self._group.stable):
                try:
                    await self.commit(changed)
                except KafkaError as e:
                    log.info("auto-commit failed: %s", e)

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return await self._fetcher.list_offsets({tp: EARLIEST for tp in tps})

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return await self._fetcher.list_offsets({tp: LATEST for tp in tps})

    async def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        return await self._fetcher.list_offsets(timestamps)

    async def topics(self) -> frozenset[str]:
        self._client.want_all_topics = True
        await self._client.refresh_metadata()
        return self._client.cluster.topics(exclude_internal=True)

    def partitions_for_topic(self, topic: str) -> tuple[int, ...] | None:
        return self._client.cluster.partitions_for(topic)

    # ---- pausing -------------------------------------------------------------------------

    def pause(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self._subs.state(tp).paused = True

    def resume(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self._subs.state(tp).paused = False
        self._fetcher.wake()

    def paused(self) -> frozenset[TopicPartition]:
        return frozenset(tp for tp, s in self._subs.assignment.items() if s.paused)

    # ---- reading -------------------------------------------------------------------------

    async def getmany(
        self,
        *tps: TopicPartition,
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records buffered now, or the first to arrive within `timeout_ms`."""
        self._check_open()
        clock = self._client.clock
        deadline = clock.monotonic_ms() + timeout_ms
        budget = max_records or self.max_poll_records
        while True:
            out = self._fetcher.take(tps or None, budget)
            if out:
                return self._deserialize(out)
            remaining = deadline - clock.monotonic_ms()
            if remaining <= 0:
                return {}
            await self._fetcher.wait_for_records(remaining)

    async def getone(self, *tps: TopicPartition) -> ConsumerRecord:
        """The next record (waits as long as it takes)."""
        if not tps:
            self._check_open()
            record = self._fetcher.take_one()
            if record is not None:
                if self._key_deserializer is None and self._value_deserializer is None:
                    return record
                return self._deserialize({record.tp: [record]})[record.tp][0]
        while True:
            out = await self.getmany(*tps, timeout_ms=60000, max_records=1)
            for records in out.values():
                return records[0]

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self.getone()
        except ClientClosedError:
            raise StopAsyncIteration from None

    def _deserialize(
        self, out: dict[TopicPartition, list[ConsumerRecord]]
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        kd, vd = self._key_deserializer, self._value_deserializer
        if kd is None and vd is None:
            return out
        return {
            tp: [
                r._replace(
                    key=kd(r.key) if kd and r.key is not None else r.key,
                    value=vd(r.value) if vd and r.value is not None else r.value,
                )
                for r in records
            ]
            for tp, records in out.items()
        }
