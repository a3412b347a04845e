"""An in-process fake Kafka cluster for the client's own tests (no Docker, no real broker).

It speaks the real wire protocol through client.protocol's ServerConnection, keeps
partition logs in memory, and lets tests inject faults: per-partition error codes for
the next Produce answers, leadership moves, and dropped connections. It implements just
enough of each API for the client's paths; the real broker is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from client.protocol import records
from client.protocol.api_keys import api_versions_keys
from client.protocol.connection import RequestReceived, ServerConnection
from client.protocol.messages import (
    api_versions,
    create_topics,
    delete_topics,
    fetch,
    find_coordinator,
    init_producer_id,
    list_offsets,
    metadata,
    offset_commit,
    offset_fetch,
    produce,
)

NOT_LEADER_OR_FOLLOWER = 6
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3


@dataclass
class PartitionLog:
    leader: int
    epoch: int = 0
    batches: list[tuple[int, bytes]] = field(default_factory=list)  # (base offset, stamped bytes)
    end_offset: int = 0
    sequences: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (seq, offset)

    def append(self, batch: bytes) -> int:
        header = records.read_batch_header(batch)
        if header.producer_id >= 0:
            seen = self.sequences.get(header.producer_id)
            if seen is not None and header.base_sequence <= seen[0]:
                return seen[1]  # a retried duplicate: the original offset
        buf = bytearray(batch)
        records.stamp_batch(buf, self.end_offset, self.epoch)
        base = self.end_offset
        self.batches.append((base, bytes(buf)))
        self.end_offset += header.record_count
        if header.producer_id >= 0:
            self.sequences[header.producer_id] = (header.base_sequence, base)
        return base

    def read(self, offset: int, bytes_max: int) -> bytes:
        out: list[bytes] = []
        size = 0
        for _base, data in self.batches:
            header = records.read_batch_header(data)
            if header.last_offset < offset:
                continue
            if out and size + len(data) > bytes_max:
                break
            out.append(data)
            size += len(data)
        return b"".join(out)


class FakeCluster:
    """N fake brokers sharing one in-memory state."""

    def __init__(self, nodes: int = 1) -> None:
        self.node_ids = list(range(1, nodes + 1))
        self.ports: dict[int, int] = {}
        self.topics: dict[str, list[PartitionLog]] = {}
        self.produce_errors: dict[tuple[str, int], list[int]] = {}
        self.committed: dict[tuple[str, str, int], int] = {}
        self.requests: list[tuple[int, str]] = []  # (node id, request class name)
        self.stalled: set[str] = set()  # request class names never answered
        self._servers: list[asyncio.Server] = []
        self._transports: dict[int, set[asyncio.Transport]] = {}
        self._appended = asyncio.Event()
        self._next_pid = 1000

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for node_id in self.node_ids:
            server = await loop.create_server(
                lambda n=node_id: _FakeBrokerProtocol(self, n), "127.0.0.1", 0
            )
            self.ports[node_id] = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self.drop_connections()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports.values())

    def create_topic(self, name: str, partitions: int, leaders: list[int] | None = None) -> None:
        leaders = leaders or [self.node_ids[i % len(self.node_ids)] for i in range(partitions)]
        self.topics[name] = [PartitionLog(leader) for leader in leaders]

    def move_leader(self, topic: str, partition: int, node_id: int) -> None:
        log = self.topics[topic][partition]
        log.leader = node_id
        log.epoch += 1

    def drop_connections(self, node_id: int | None = None) -> None:
        for n, transports in self._transports.items():
            if node_id is None or n == node_id:
                for t in list(transports):
                    t.abort()

    def values(self, topic: str, partition: int) -> list[bytes | None]:
        return [
            r.value
            for _base, data in self.topics[topic][partition].batches
            for r in records.decode_batch(data).records
        ]

    # ---- handlers ------------------------------------------------------------------------

    async def handle(self, node_id: int, header: Any, body: Any) -> Any:
        name = type(body).__name__
        self.requests.append((node_id, name))
        if name in self.stalled:
            await asyncio.Event().wait()  # never answers; the connection's close cancels it
        handler = getattr(self, "_" + name, None)
        assert handler is not None, f"fake broker has no handler for {name}"
        result = handler(node_id, header, body)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    def _ApiVersionsRequest(self, node_id: int, header: Any, body: Any) -> Any:
        return api_versions.ApiVersionsResponse(api_keys=api_versions_keys())

    def _MetadataRequest(self, node_id: int, header: Any, body: Any) -> Any:
        names = list(self.topics) if body.topics is None else [t.name for t in body.topics]
        topics = []
        for name in names:
            logs = self.topics.get(name)
            if logs is None:
                topics.append(
                    metadata.MetadataResponseTopic(error_code=UNKNOWN_TOPIC_OR_PARTITION, name=name)
                )
                continue
            parts = tuple(
                metadata.MetadataResponsePartition(
                    partition_index=i,
                    leader_id=log.leader,
                    leader_epoch=log.epoch,
                    replica_nodes=(log.leader,),
                    isr_nodes=(log.leader,),
                )
                for i, log in enumerate(logs)
            )
            topics.append(metadata.MetadataResponseTopic(name=name, partitions=parts))
        brokers = tuple(
            metadata.MetadataResponseBroker(node_id=n, host="127.0.0.1", port=p)
            for n, p in self.ports.items()
        )
        return metadata.MetadataResponse(
            brokers=brokers, cluster_id="fake", controller_id=1, topics=tuple(topics)
        )

    def _InitProducerIdRequest(self, node_id: int, header: Any, body: Any) -> Any:
        self._next_pid += 1
        return init_producer_id.InitProducerIdResponse(producer_id=self._next_pid)

    def _ProduceRequest(self, node_id: int, header: Any, body: Any) -> Any:
        out = []
        for t in body.topic_data:
            parts = []
            for p in t.partition_data:
                parts.append(self._produce_partition(node_id, t.name, p.index, bytes(p.records)))
            out.append(produce.TopicProduceResponse(name=t.name, partition_responses=tuple(parts)))
        self._appended.set()
        self._appended = asyncio.Event()
        return produce.ProduceResponse(responses=tuple(out))

    def _produce_partition(self, node_id: int, topic: str, index: int, data: bytes) -> Any:
        injected = self.produce_errors.get((topic, index))
        if injected:
            return produce.PartitionProduceResponse(index=index, error_code=injected.pop(0))
        logs = self.topics.get(topic)
        if logs is None or index >= len(logs):
            return produce.PartitionProduceResponse(
                index=index, error_code=UNKNOWN_TOPIC_OR_PARTITION
            )
        log = logs[index]
        if log.leader != node_id:
            return produce.PartitionProduceResponse(index=index, error_code=NOT_LEADER_OR_FOLLOWER)
        return produce.PartitionProduceResponse(index=index, base_offset=log.append(data))

    async def _FetchRequest(self, node_id: int, header: Any, body: Any) -> Any:
        response = self._fetch_once(node_id, body)
        if not any(p.records for t in response.responses for p in t.partitions):
            waiter = self._appended
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(body.max_wait_ms / 1000):
                    await waiter.wait()
            response = self._fetch_once(node_id, body)
        return response

    def _fetch_once(self, node_id: int, body: Any) -> Any:
        topics = []
        for t in body.topics:
            parts = []
            for p in t.partitions:
                logs = self.topics.get(t.topic)
                if logs is None or p.partition >= len(logs):
                    parts.append(
                        fetch.PartitionData(
                            partition_index=p.partition, error_code=UNKNOWN_TOPIC_OR_PARTITION
                        )
                    )
                    continue
                log = logs[p.partition]
                if log.leader != node_id:
                    error, data = NOT_LEADER_OR_FOLLOWER, b""
                elif p.fetch_offset > log.end_offset or p.fetch_offset < 0:
                    error, data = OFFSET_OUT_OF_RANGE, b""
                else:
                    error, data = 0, log.read(p.fetch_offset, p.partition_max_bytes)
                parts.append(
                    fetch.PartitionData(
                        partition_index=p.partition,
                        error_code=error,
                        high_watermark=log.end_offset,
                        last_stable_offset=log.end_offset,
                        log_start_offset=0,
                        records=data,
                    )
                )
            topics.append(fetch.FetchableTopicResponse(topic=t.topic, partitions=tuple(parts)))
        return fetch.FetchResponse(responses=tuple(topics))

    def _ListOffsetsRequest(self, node_id: int, header: Any, body: Any) -> Any:
        topics = []
        for t in body.topics:
            parts = []
            for p in t.partitions:
                log = self.topics[t.name][p.partition_index]
                offset = 0 if p.timestamp == -2 else log.end_offset
                parts.append(
                    list_offsets.ListOffsetsPartitionResponse(
                        partition_index=p.partition_index,
                        offset=offset,
                        old_style_offsets=(offset,),
                        leader_epoch=log.epoch,
                    )
                )
            topics.append(
                list_offsets.ListOffsetsTopicResponse(name=t.name, partitions=tuple(parts))
            )
        return list_offsets.ListOffsetsResponse(topics=tuple(topics))

    def _FindCoordinatorRequest(self, node_id: int, header: Any, body: Any) -> Any:
        n = self.node_ids[0]
        keys = body.coordinator_keys or (body.key,)
        return find_coordinator.FindCoordinatorResponse(
            node_id=n,
            host="127.0.0.1",
            port=self.ports[n],
            coordinators=tuple(
                find_coordinator.Coordinator(key=k, node_id=n, host="127.0.0.1", port=self.ports[n])
                for k in keys
            ),
        )

    def _OffsetCommitRequest(self, node_id: int, header: Any, body: Any) -> Any:
        topics = []
        for t in body.topics:
            for p in t.partitions:
                self.committed[(body.group_id, t.name, p.partition_index)] = p.committed_offset
            topics.append(
                offset_commit.OffsetCommitResponseTopic(
                    name=t.name,
                    partitions=tuple(
                        offset_commit.OffsetCommitResponsePartition(
                            partition_index=p.partition_index
                        )
                        for p in t.partitions
                    ),
                )
            )
        return offset_commit.OffsetCommitResponse(topics=tuple(topics))

    def _OffsetFetchRequest(self, node_id: int, header: Any, body: Any) -> Any:
        groups = body.groups or (
            offset_fetch.OffsetFetchRequestGroup(
                group_id=body.group_id,
                topics=tuple(
                    offset_fetch.OffsetFetchRequestTopics(
                        name=t.name, partition_indexes=t.partition_indexes
                    )
                    for t in body.topics or ()
                ),
            ),
        )
        g = groups[0]
        rtopics = []
        for t in g.topics:
            rtopics.append(
                offset_fetch.OffsetFetchResponseTopic(
                    name=t.name,
                    partitions=tuple(
                        offset_fetch.OffsetFetchResponsePartition(
                            partition_index=i,
                            committed_offset=self.committed.get((g.group_id, t.name, i), -1),
                        )
                        for i in t.partition_indexes
                    ),
                )
            )
        rgroup = offset_fetch.OffsetFetchResponseGroup(
            group_id=g.group_id,
            topics=tuple(
                offset_fetch.OffsetFetchResponseTopics(
                    name=t.name,
                    partitions=tuple(
                        offset_fetch.OffsetFetchResponsePartitions(
                            partition_index=p.partition_index, committed_offset=p.committed_offset
                        )
                        for p in t.partitions
                    ),
                )
                for t in rtopics
            ),
        )
        return offset_fetch.OffsetFetchResponse(topics=tuple(rtopics), groups=(rgroup,))

    def _CreateTopicsRequest(self, node_id: int, header: Any, body: Any) -> Any:
        results = []
        for t in body.topics:
            error = 36 if t.name in self.topics else 0  # TOPIC_ALREADY_EXISTS
            if not error:
                self.create_topic(t.name, max(1, t.num_partitions))
            results.append(
                create_topics.CreatableTopicResult(
                    name=t.name, error_code=error, num_partitions=t.num_partitions
                )
            )
        return create_topics.CreateTopicsResponse(topics=tuple(results))

    def _DeleteTopicsRequest(self, node_id: int, header: Any, body: Any) -> Any:
        names = list(body.topic_names) + [t.name for t in body.topics if t.name]
        results = []
        for name in names:
            error = 0 if self.topics.pop(name, None) is not None else UNKNOWN_TOPIC_OR_PARTITION
            results.append(delete_topics.DeletableTopicResult(name=name, error_code=error))
        return delete_topics.DeleteTopicsResponse(responses=tuple(results))


class _FakeBrokerProtocol(asyncio.Protocol):
    def __init__(self, cluster: FakeCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.wire = ServerConnection()
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.cluster._transports.setdefault(self.node_id, set()).add(transport)
        self.task = asyncio.ensure_future(self._serve())

    def data_received(self, data: bytes) -> None:
        for event in self.wire.receive_data(data):
            assert isinstance(event, RequestReceived), event
            self.queue.put_nowait(event)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.cluster._transports[self.node_id].discard(self.transport)
        if self.task is not None:
            self.task.cancel()

    async def _serve(self) -> None:
        # One request at a time, in order: Kafka's per-connection ordering guarantee.
        while True:
            event = await self.queue.get()
            response = await self.cluster.handle(self.node_id, event.header, event.body)
            if type(event.body).__name__ == "ProduceRequest" and event.body.acks == 0:
                continue
            assert self.transport is not None
            if not self.transport.is_closing():
                self.transport.write(self.wire.send_response(event.header, response))
