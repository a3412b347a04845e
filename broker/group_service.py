"""Consumer groups on the broker: `__consumer_offsets` partitions feed the group coordinator.

Group state and committed offsets live in the internal topic `__consumer_offsets`, a set
of ordinary Raft-replicated partitions. The coordinator of a group is the leader of the
partition its id hashes to (Kafka's rule). When this node becomes leader of such a
partition (and has committed an entry of its term), it reads the partition up to its
high watermark, rebuilds that shard of group state, and starts serving its groups; when
it loses the leadership it drops the shard, and clients move on through
NOT_COORDINATOR + FindCoordinator. Writes (offset commits, group metadata) are appended
as Kafka record batches with acks=all, so an acknowledged commit is quorum-committed.

The topic is created on the first FindCoordinator, like Kafka does, with the configured
partition count and a replication factor the cluster can hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from broker.groups.coordinator import CoordinatorConfig, GroupCoordinator
from broker.groups.offsets_log import Record
from broker.groups.state import GroupConfig
from broker.partition import AppendOutcome, Partition, PartitionError
from client.protocol.api_keys import ApiKey
from client.protocol.errors import ErrorCode
from client.protocol.messages.find_coordinator import (
    Coordinator,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from client.protocol.records import RecordBatchBuilder, decode_batches

if TYPE_CHECKING:
    from broker.kafka_server import Handler, RequestContext
    from broker.node import Node

log = logging.getLogger("raftka.groups")

OFFSETS_TOPIC = "__consumer_offsets"
COORDINATOR_GROUP = 0
COMMIT_TIMEOUT_MS = 10_000
_LOAD_READ_BYTES = 4 << 20
#: FindCoordinator waits at most this long for a leader, then for a loading shard.
_FIND_WAIT_S = 3.0
#: Under the default message_bytes_max (1 MiB), with room for batch overhead.
_BATCH_BYTES_MAX = 512 << 10


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class PartitionGroupLog:
    """`GroupLog` over one `__consumer_offsets` partition led by this node."""

    def __init__(self, partition: Partition, batch_bytes_max: int = _BATCH_BYTES_MAX) -> None:
        self.partition = partition
        self.batch_bytes_max = batch_bytes_max

    def _batches(self, records: list[Record]) -> list[bytes]:
        """The records as batches of at most ~`batch_bytes_max` (a live set can be large)."""
        now = _wall_ms()
        batches = []
        builder = RecordBatchBuilder(batch_bytes_max=1 << 30)
        size = 0
        for key, value in records:
            record_bytes = len(key) + len(value or b"") + 32
            if size and size + record_bytes > self.batch_bytes_max:
                batches.append(builder.build())
                builder = RecordBatchBuilder(batch_bytes_max=1 << 30)
                size = 0
            builder.append(key, value, (), now)
            size += record_bytes
        batches.append(builder.build())
        return batches

    async def append(self, records: list[Record]) -> int:
        assert records, "nothing to append"
        # No lock: `produce` reaches the partition's FIFO proposal queue before its first
        # suspension, and tasks take their first step in creation order, so the batches
        # of one call land consecutively and calls land in call order; concurrent commits
        # share fsyncs.
        produces = [
            asyncio.ensure_future(self.partition.produce(batch, -1, COMMIT_TIMEOUT_MS))
            for batch in self._batches(records)
        ]
        outcomes = await asyncio.gather(*produces, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, PartitionError):
                raise RuntimeError(f"offsets append failed: {outcome.code.name}") from None
            if isinstance(outcome, BaseException):
                raise outcome
        first = outcomes[0]
        assert isinstance(first, AppendOutcome)
        return first.base_offset

    async def truncate_before(self, offset: int) -> None:
        try:
            await self.partition.truncate_before(offset, COMMIT_TIMEOUT_MS)
        except PartitionError as error:
            raise RuntimeError(f"offsets truncation failed: {error.code.name}") from None


class GroupService:
    def __init__(self, node: Node) -> None:
        cfg = node.config
        self.node = node
        self.partitions_total = cfg.offsets_topic_partitions
        self.coordinator = GroupCoordinator(
            _wall_ms,
            CoordinatorConfig(
                group=GroupConfig(
                    initial_rebalance_delay_ms=cfg.group_initial_rebalance_delay_ms,
                    join_window_ms=cfg.group_join_window_ms,
                    offsets_retention_ms=cfg.offsets_retention_ms,
                    min_session_timeout_ms=cfg.group_session_timeout_ms_min,
                    max_session_timeout_ms=cfg.group_session_timeout_ms_max,
                    group_members_max=cfg.group_members_max,
                    offset_metadata_bytes_max=cfg.offsets_metadata_bytes_max,
                ),
                offsets_topic_partitions=cfg.offsets_topic_partitions,
                offsets_expiry_interval_ms=cfg.offsets_retention_check_interval_ms,
                compaction_records_min=cfg.offsets_compaction_records_min,
                compaction_live_ratio=cfg.offsets_compaction_live_ratio,
            ),
            partition_exists=self._partition_exists,
        )
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._creating: asyncio.Task[Any] | None = None

    def _partition_exists(self, topic: str, index: int) -> bool:
        return self.node.controller.image.partition(topic, index) is not None

    def start(self) -> None:
        self.coordinator.start()

    async def stop(self) -> None:
        for task in self._loading.values():
            task.cancel()
        await self.coordinator.stop()

    # -- shard ownership follows partition leadership -------------------------------------
    def on_partition_change(self, partition: Partition) -> None:
        if partition.topic != OFFSETS_TOPIC or partition.index >= self.partitions_total:
            return
        index = partition.index
        loaded = index in self.coordinator.loaded_partitions() or index in self._loading
        if partition.is_leader and not loaded:
            self.coordinator.mark_loading(index)
            task = asyncio.get_running_loop().create_task(self._load(partition))
            self._loading[index] = task
        elif not partition.is_leader and loaded:
            pending = self._loading.pop(index, None)
            if pending is not None:
                pending.cancel()
            self.coordinator.unload_shard(index)

    async def _load(self, partition: Partition) -> None:
        try:
            records: list[Record] = []
            offset = partition.log_start_offset
            while offset < partition.high_watermark:
                result = partition.read(offset, _LOAD_READ_BYTES)
                if not result.batches:
                    break
                for batch in decode_batches(result.to_bytes()):
                    if batch.header.is_control:
                        continue
                    records.extend((r.key or b"", r.value) for r in batch.records)
                offset = result.next_offset
                await asyncio.sleep(0)  # a long shard must not stall the event loop
            if partition.is_leader:
                self.coordinator.load_shard(partition.index, records, PartitionGroupLog(partition))
                log.info("loaded group shard %d (%d records)", partition.index, len(records))
        except Exception:
            log.exception("loading group shard %d failed", partition.index)
            self.coordinator.unload_shard(partition.index)
        finally:
            self._loading.pop(partition.index, None)

    # -- FindCoordinator ------------------------------------------------------------------
    async def _ensure_topic(self) -> None:
        if OFFSETS_TOPIC in self.node.controller.image.topics:
            return
        if self._creating is None or self._creating.done():
            self._creating = asyncio.get_running_loop().create_task(
                self.node.create_topic(
                    OFFSETS_TOPIC,
                    self.partitions_total,
                    min(
                        self.node.config.offsets_replication_factor(),
                        max(1, len(self.node.controller.image.brokers)),
                    ),
                    {"cleanup.policy": "delete"},
                    internal=True,
                )
            )
        await asyncio.wait({self._creating}, timeout=5)
        await self.node.wait_for_partitions(OFFSETS_TOPIC, 5)

    async def _await_leaders(self, keys: list[str]) -> None:
        """Wait (bounded) until the partitions of `keys` have a known leader.

        Why: a topic that was just created (by another request) has no leaders for some
        milliseconds; COORDINATOR_NOT_AVAILABLE then would make clients query again
        only after their coordinator-query interval (about a second for librdkafka).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FIND_WAIT_S
        shards = {self.coordinator.shard_for(key) for key in keys}
        while loop.time() < deadline:
            info = self.node.controller.image.topics.get(OFFSETS_TOPIC)
            if info is None:
                return
            if all(self.node.leader_of(info.partitions[i]) is not None for i in shards):
                return
            await asyncio.sleep(self.node.config.tick_ms / 1000 / 2)

    async def _await_load(self, keys: list[str]) -> None:
        """Wait (bounded) until the shards of `keys` that this node is loading are loaded.

        Why: right after `__consumer_offsets` is created (or this node took over), naming
        this node at once sends the client into COORDINATOR_LOAD_IN_PROGRESS, and clients
        back off for up to a second on that; the load itself takes milliseconds.
        """
        pending = {
            task
            for key in keys
            if (task := self._loading.get(self.coordinator.shard_for(key))) is not None
        }
        if pending:
            await asyncio.wait(pending, timeout=_FIND_WAIT_S)

    def _coordinator_for(self, key: str, listener: str) -> tuple[ErrorCode, Any]:
        info = self.node.controller.image.topics.get(OFFSETS_TOPIC)
        if info is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        assignment = info.partitions[self.coordinator.shard_for(key)]
        leader = self.node.leader_of(assignment)
        if leader is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        broker = self.node.controller.image.brokers.get(leader.leader_id)
        address = broker.listener(listener) if broker is not None else None
        if address is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
        return ErrorCode.NONE, (leader.leader_id, address.host, address.port)

    async def handle_find_coordinator(
        self, request: FindCoordinatorRequest, ctx: RequestContext
    ) -> FindCoordinatorResponse:
        await self._ensure_topic()
        if ctx.version >= 4:
            keys = list(request.coordinator_keys)
        else:
            keys = [request.key]
        if request.key_type == COORDINATOR_GROUP:
            await self._await_leaders(keys)
            await self._await_load(keys)
        results = []
        for key in keys:
            if request.key_type != COORDINATOR_GROUP:
                results.append((key, ErrorCode.INVALID_REQUEST, None))
                continue
            code, where = self._coordinator_for(key, ctx.listener_name)
            results.append((key, code, where))
        if ctx.version >= 4:
            return FindCoordinatorResponse(
                throttle_time_ms=0,
                coordinators=tuple(
                    Coordinator(
                        key=key,
                        node_id=where[0] if where else -1,
                        host=where[1] if where else "",
                        port=where[2] if where else -1,
                        error_code=code,
                    )
                    for key, code, where in results
                ),
            )
        _, code, where = results[0]
        return FindCoordinatorResponse(
            throttle_time_ms=0,
            error_code=code,
            error_message=None if code == ErrorCode.NONE else code.name,
            node_id=where[0] if where else -1,
            host=where[1] if where else "",
            port=where[2] if where else -1,
        )

    # -- dispatch -------------------------------------------------------------------------
    def handlers(self) -> dict[int, Handler]:
        c = self.coordinator

        async def join(request: Any, ctx: RequestContext) -> Any:
            return await c.handle_join_group(request, ctx.version, ctx.client_id, ctx.client_host)

        def simple(method: Any) -> Handler:
            async def handle(request: Any, ctx: RequestContext) -> Any:
                return await method(request, ctx.version)

            return handle

        return {
            int(ApiKey.FIND_COORDINATOR): self.handle_find_coordinator,
            int(ApiKey.JOIN_GROUP): join,
            int(ApiKey.SYNC_GROUP): simple(c.handle_sync_group),
            int(ApiKey.HEARTBEAT): simple(c.handle_heartbeat),
            int(ApiKey.LEAVE_GROUP): simple(c.handle_leave_group),
            int(ApiKey.OFFSET_COMMIT): simple(c.handle_offset_commit),
            int(ApiKey.OFFSET_FETCH): simple(c.handle_offset_fetch),
            int(ApiKey.LIST_GROUPS): simple(c.handle_list_groups),
            int(ApiKey.DESCRIBE_GROUPS): simple(c.handle_describe_groups),
            int(ApiKey.DELETE_GROUPS): simple(c.handle_delete_groups),
        }
