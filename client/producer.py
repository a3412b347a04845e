"""Producer: send() returns a future of RecordMetadata; a sender task ships batches.

Theory of operation.

`send()` picks a partition (explicit, murmur2 of the key, or sticky for null
keys), appends the record to the accumulator's open batch for that partition
and returns a `RecordFuture`: a thin per-record handle (batch result + index)
in the style of Java's FutureRecordMetadata, so the hot path allocates one
small object per record and no asyncio future. When the buffer is full, send()
waits (back-pressure) up to `max_block_ms`; when the topic is unknown, it waits
for metadata up to the same bound.

The sender task loops: ask the accumulator which leaders have ready batches
(full, lingered `linger_ms`, or flushing), drain one request's worth per
leader, build each batch once (compression included) and write one Produce
request per node without waiting for the previous answer (pipelining, at most
`requests_in_flight_per_connection_max` per node). Responses are handled in
callbacks: success resolves the batch; a retriable error puts the batch back
in order (the accumulator halts that partition until earlier in-flight batches
return) after `retry_backoff_ms`, applying the leader hint of the response
(KIP-951) or marking the leader unknown and requesting a metadata refresh;
anything else, or `delivery_timeout_ms` passing, fails the batch's records.

Idempotence (on by default with acks=all when the broker offers
InitProducerId): the producer gets a producer id and epoch, the accumulator
gives each partition's batches consecutive sequence numbers on their first
drain, and the broker drops duplicates of retried batches, so retries neither
duplicate nor reorder. Up to 5 batches per partition may then be in flight;
without idempotence the limit is 1. When the numbering cannot continue (the
broker forgot the producer id, or a sequenced batch expired unsent), the sender
waits for in-flight requests to finish, takes a new producer id and restarts
every partition's sequences at 0 (the situation KIP-360 solves with an epoch bump).

`flush()` sends everything now and waits for every batch that existed when it
was called; `close()` flushes (losing nothing) and stops the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import Any

from crc32c import crc32c

from client.accumulator import Accumulator, ProducerBatch
from client.client import ClientConfig, KafkaClient
from client.clock import SYSTEM_CLOCK, Clock
from client.errors import (
    ClientClosedError,
    ErrorCode,
    KafkaError,
    KafkaTimeoutError,
    RecordTooLargeError,
    RetriableKafkaError,
    exception_for,
)
from client.partitioner import DefaultPartitioner
from client.protocol import records
from client.protocol.api_keys import ApiKey
from client.protocol.compression import Codec
from client.protocol.messages.init_producer_id import InitProducerIdRequest
from client.protocol.messages.produce import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from client.structs import RecordMetadata, TopicPartition

log = logging.getLogger(__name__)

CODECS = {
    None: Codec.NONE,
    "none": Codec.NONE,
    "gzip": Codec.GZIP,
    "snappy": Codec.SNAPPY,
    "lz4": Codec.LZ4,
    "zstd": Codec.ZSTD,
}
RECORD_OVERHEAD_BYTES = 21  # varint lengths, attributes, deltas: an upper bound per record
_IDEMPOTENCE_HEADER = struct.Struct(">qhi")  # producer id, epoch, base sequence
_CRC = struct.Struct(">I")

Headers = Sequence[tuple[str, bytes | None]]


class _SequenceRetry(RetriableKafkaError):
    """A sequence problem the producer repairs itself (waiting, or a new producer id)."""

    code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class _BatchResult:
    """Completion state of one batch, shared by its records' futures."""

    __slots__ = ("future", "partition", "payload", "topic")

    def __init__(self, loop: asyncio.AbstractEventLoop, tp: TopicPartition) -> None:
        self.future: asyncio.Future[tuple[int, int]] = loop.create_future()
        self.payload: bytearray | None = None
        self.topic = tp.topic
        self.partition = tp.partition


class RecordFuture:
    """The future result of one `send()`: awaitable, with the asyncio.Future query API."""

    __slots__ = ("_batch", "_index", "_timestamp_ms")

    def __init__(self, batch: _BatchResult, index: int, timestamp_ms: int) -> None:
        self._batch = batch
        self._index = index
        self._timestamp_ms = timestamp_ms

    def done(self) -> bool:
        return self._batch.future.done()

    def exception(self) -> BaseException | None:
        return self._batch.future.exception()

    def result(self) -> RecordMetadata:
        base_offset, log_append_time_ms = self._batch.future.result()
        b = self._batch
        return RecordMetadata(
            b.topic,
            b.partition,
            base_offset + self._index if base_offset >= 0 else -1,
            log_append_time_ms if log_append_time_ms >= 0 else self._timestamp_ms,
        )

    def add_done_callback(self, fn: Callable[[RecordFuture], object]) -> None:
        self._batch.future.add_done_callback(lambda _f: fn(self))

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        yield from self._batch.future.__await__()
        return self.result()


class Producer:
    """An asyncio Kafka producer. Use `async with Producer(...) as p:` or start()/close()."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092",
        *,
        client_id: str = "raftka-producer",
        acks: int | str = -1,
        compression: str | None = None,
        linger_ms: int = 5,
        batch_bytes_max: int = 16384,
        buffer_bytes_max: int = 32 * 1024 * 1024,
        request_bytes_max: int = 1024 * 1024,
        enable_idempotence: bool | None = None,
        retry_backoff_ms: int = 100,
        delivery_timeout_ms: int = 120000,
        request_timeout_ms: int = 30000,
        max_block_ms: int = 60000,
        metadata_max_age_ms: int = 300000,
        requests_in_flight_per_connection_max: int = 5,
        key_serializer: Callable[[Any], bytes] | None = None,
        value_serializer: Callable[[Any], bytes] | None = None,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.acks = -1 if acks == "all" else int(acks)
        if self.acks not in (-1, 0, 1):
            raise ValueError(f"acks must be -1/'all', 0 or 1, not {acks!r}")
        if compression not in CODECS:
            raise ValueError(f"unknown compression {compression!r}")
        if enable_idempotence and self.acks != -1:
            raise ValueError("idempotence needs acks=all (-1)")
        self._codec = int(CODECS[compression])
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
        self._clock = clock
        self._idempotence_wanted = enable_idempotence
        self.idempotent = False
        self._reset_producer_id = False
        self.producer_id_resets = 0
        self._producer_id = records.NO_PRODUCER_ID
        self._producer_epoch = records.NO_PRODUCER_EPOCH
        self.request_bytes_max = request_bytes_max
        self._record_bytes_max = min(request_bytes_max, buffer_bytes_max)
        self.buffer_bytes_max = buffer_bytes_max
        self.delivery_timeout_ms = delivery_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.max_block_ms = max_block_ms
        self._requests_per_connection_max = requests_in_flight_per_connection_max
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._partitioner = DefaultPartitioner(rng or random.Random(), sticky_bytes=batch_bytes_max)
        self._acc = Accumulator(
            self._new_builder,
            batch_bytes_max=batch_bytes_max,
            linger_ms=linger_ms,
            buffer_bytes_max=buffer_bytes_max,
            retry_backoff_ms=retry_backoff_ms,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._requests_in_flight: dict[int, int] = {}
        self._connecting: set[int] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self._results: set[_BatchResult] = set()
        self._closed = False
        self._started = False

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def client(self) -> KafkaClient:
        return self._client

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._client.start()
        await self._maybe_init_idempotence()
        self._sender = asyncio.create_task(self._sender_loop(), name="producer-sender")
        self._started = True

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Send everything buffered, wait for the answers, then stop. Loses nothing."""
        if self._closed:
            return
        if self._started:
            with contextlib.suppress(KafkaError):
                await self.flush()
        self._closed = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for task in list(self._tasks):
            task.cancel()
        for batch in self._acc.abort_undrained():
            self._fail(batch, ClientClosedError("producer closed"))
        await self._client.close()

    async def _maybe_init_idempotence(self) -> None:
        if self._idempotence_wanted is False or self.acks != -1:
            return
        node_id = self._client._candidate_nodes()[0]
        conn = await self._client.connection(node_id)
        if ApiKey.INIT_PRODUCER_ID not in conn.api_versions:
            if self._idempotence_wanted:
                raise KafkaError("the broker does not support idempotent producers")
            return
        await self._init_producer_id()
        self.idempotent = True
        self._acc.assign_sequences = True
        self._acc.in_flight_per_partition_max = 5

    async def _init_producer_id(self) -> None:
        """Get a (new) producer id and epoch; retriable errors retry up to max_block_ms."""
        deadline = self._clock.monotonic_ms() + self.max_block_ms
        while True:
            request = InitProducerIdRequest(
                transactional_id=None, transaction_timeout_ms=-1, producer_id=-1, producer_epoch=-1
            )
            response = await self._client.send_any(request)
            if not response.error_code:
                break
            error = exception_for(response.error_code, "InitProducerId")
            if not error.retriable or self._clock.monotonic_ms() > deadline:
                raise error
            await self._clock.sleep_ms(self._client.config.retry_backoff_ms)
        self._producer_id = response.producer_id
        self._producer_epoch = response.producer_epoch

    async def _maybe_reset_producer_id(self) -> None:
        """After a sequence gap or an unknown producer id (KIP-360's situation): once nothing
        is in flight, take a new producer id and restart every partition's sequences at 0.
        Batches already acknowledged are unaffected; queued ones get fresh sequences."""
        if any(self._requests_in_flight.values()):
            return
        try:
            await self._init_producer_id()
        except KafkaError as e:
            log.warning("cannot get a new producer id: %s", e)
            await self._clock.sleep_ms(self._client.config.retry_backoff_ms)
            return
        self._acc.reset_all_sequences()
        self._reset_producer_id = False
        self.producer_id_resets += 1

    # ---- sending -------------------------------------------------------------------------

    def _new_builder(self, tp: TopicPartition, bytes_max: int) -> records.RecordBatchBuilder:
        return records.RecordBatchBuilder(compression=self._codec, batch_bytes_max=bytes_max)

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> RecordFuture:
        """Buffer one record; the returned future resolves when the broker acknowledged it."""
        if self._closed or not self._started:
            raise ClientClosedError("producer is not running")
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        size = RECORD_OVERHEAD_BYTES + (len(key) if key else 0) + (len(value) if value else 0)
        if headers:
            size += sum(len(k) + (len(v) if v else 0) + 10 for k, v in headers)
        if size > self._record_bytes_max:
            raise RecordTooLargeError(f"record of about {size} bytes is too large")
        cluster = self._client.cluster
        if partition is None:
            count = cluster.partitions_for(topic)
            if count is None:
                count = await self._client.wait_for_topic(topic, self.max_block_ms)
            partition = self._partitioner.partition(
                topic, key, len(count), cluster.available_partitions_for(topic), size
            )
        else:
            count = cluster.partitions_for(topic)
            if count is None:
                count = await self._client.wait_for_topic(topic, self.max_block_ms)
            if not 0 <= partition < len(count):
                raise exception_for(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{topic} has no partition {partition}"
                )
        tp = TopicPartition(topic, partition)
        if timestamp_ms is None:
            timestamp_ms = self._clock.wall_ms()
        appended = self._acc.try_append(tp, key, value, headers or (), timestamp_ms)
        if appended is not None:  # the hot path: no clock read, no await, no new batch
            batch, index = appended
            return RecordFuture(batch.handle, index, timestamp_ms)  # type: ignore[arg-type]
        now_ms = self._clock.monotonic_ms()
        appended = self._acc.append(tp, key, value, headers or (), timestamp_ms, now_ms, size)
        while appended is None:
            await self._wait_for_space(size)
            now_ms = self._clock.monotonic_ms()
            appended = self._acc.append(tp, key, value, headers or (), timestamp_ms, now_ms, size)
        batch, index = appended
        result = batch.handle
        if result is None:
            assert self._loop is not None
            result = batch.handle = _BatchResult(self._loop, tp)
            self._results.add(result)
            self._wake.set()  # a new batch: the sender may need a shorter wait
        assert isinstance(result, _BatchResult)
        return RecordFuture(result, index, timestamp_ms)

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> RecordMetadata:
        future = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await future

    async def _wait_for_space(self, size: int) -> None:
        self._wake.set()
        try:
            async with asyncio.timeout(self.max_block_ms / 1000):
                while not self._acc.has_room(size):
                    self._space.clear()
                    await self._space.wait()
        except TimeoutError:
            raise KafkaTimeoutError(f"no buffer space within {self.max_block_ms} ms") from None

    async def flush(self, timeout_ms: int | None = None) -> None:
        """Send every buffered record now and wait until each batch is done."""
        pending = [r.future for r in self._results]
        if not pending:
            return
        self._acc.flushing += 1
        self._wake.set()
        try:
            async with asyncio.timeout(None if timeout_ms is None else timeout_ms / 1000):
                await asyncio.wait(pending)
        finally:
            self._acc.flushing -= 1

    def partitions_for(self, topic: str) -> tuple[int, ...] | None:
        return self._client.cluster.partitions_for(topic)

    # ---- the sender task -----------------------------------------------------------------

    async def _sender_loop(self) -> None:
        while True:
            if self._reset_producer_id:
                await self._maybe_reset_producer_id()
            delay_ms = 100 if self._reset_producer_id else self._run_once()
            if delay_ms > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_ms / 1000):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)

    def _run_once(self) -> int:
        """One pass: expire, find ready nodes, drain, send. Returns ms to wait."""
        now_ms = self._clock.monotonic_ms()
        cluster = self._client.cluster
        for batch in self._acc.expire(now_ms, self.delivery_timeout_ms):
            if batch.base_sequence >= 0:
                self._reset_producer_id = True  # its sequence numbers will never arrive
            self._fail(batch, KafkaTimeoutError("batch expired before it could be sent"))
        check = self._acc.ready(now_ms, cluster.leader_for)
        if check.unknown_leaders:
            self._client.add_topics(check.unknown_leaders)
            self._client.request_metadata_update()
        nodes = []
        for node_id in check.nodes:
            conn = self._client.ready_connection(node_id)
            if conn is None:
                self._connect_later(node_id)
            elif self._requests_in_flight.get(node_id, 0) < self._requests_per_connection_max:
                nodes.append(node_id)
        if not nodes:
            return min(check.next_check_ms, 1000 if check.nodes or check.unknown_leaders else 10**6)
        drained = self._acc.drain(nodes, self.request_bytes_max, now_ms, cluster.leader_for)
        for node_id, batches in drained.items():
            self._send_batches(node_id, batches, now_ms)
        return 0 if drained else min(check.next_check_ms, 1000)

    def _connect_later(self, node_id: int) -> None:
        if node_id in self._connecting:
            return
        self._connecting.add(node_id)

        async def connect() -> None:
            try:
                await self._client.connection(node_id)
            except KafkaError as e:
                log.info("cannot reach node %s: %s", node_id, e)
                await self._clock.sleep_ms(self._client.config.retry_backoff_ms)
            finally:
                self._connecting.discard(node_id)
                self._wake.set()

        self._tasks.add(task := asyncio.ensure_future(connect()))
        task.add_done_callback(self._tasks.discard)

    def _payload(self, batch: ProducerBatch) -> bytearray:
        result = batch.handle
        assert isinstance(result, _BatchResult)
        if result.payload is None:
            builder = batch.builder
            assert isinstance(builder, records.RecordBatchBuilder)
            result.payload = bytearray(builder.build())
        payload = result.payload
        if self.idempotent:
            _IDEMPOTENCE_HEADER.pack_into(
                payload,
                records.PRODUCER_ID_OFFSET,
                self._producer_id,
                self._producer_epoch,
                batch.base_sequence,
            )
            crc = crc32c(memoryview(payload)[records.ATTRIBUTES_OFFSET :])
            _CRC.pack_into(payload, records.CRC_OFFSET, crc)
        return payload

    def _send_batches(self, node_id: int, batches: list[ProducerBatch], now_ms: int) -> None:
        conn = self._client.ready_connection(node_id)
        by_topic: dict[str, list[PartitionProduceData]] = {}
        for b in batches:
            by_topic.setdefault(b.tp.topic, []).append(
                PartitionProduceData(index=b.tp.partition, records=bytes(self._payload(b)))
            )
        request = ProduceRequest(
            transactional_id=None,
            acks=self.acks,
            timeout_ms=self.request_timeout_ms,
            topic_data=tuple(
                TopicProduceData(name=t, partition_data=tuple(ps)) for t, ps in by_topic.items()
            ),
        )
        if conn is None:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(KafkaError(f"node {node_id} not connected"))
        else:
            version = self._client.version_for(conn, ApiKey.PRODUCE)
            future = conn.send(request, version, expect_response=self.acks != 0)
        self._requests_in_flight[node_id] = self._requests_in_flight.get(node_id, 0) + 1
        future.add_done_callback(partial(self._on_response, node_id, batches))

    def _on_response(
        self, node_id: int, batches: list[ProducerBatch], future: asyncio.Future[Any]
    ) -> None:
        self._requests_in_flight[node_id] -= 1
        self._wake.set()
        now_ms = self._clock.monotonic_ms()
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            for b in batches:
                self._retry_or_fail(b, error or KafkaError("cancelled"), now_ms)
            return
        response = future.result()
        if response is None:  # acks=0: no answer, no offsets
            for b in batches:
                self._succeed(b, -1, -1)
            return
        results = {(t.name, p.index): p for t in response.responses for p in t.partition_responses}
        for b in batches:
            p = results.get((b.tp.topic, b.tp.partition))
            if p is None:
                self._retry_or_fail(b, KafkaError("partition missing in response"), now_ms)
            elif p.error_code in (0, ErrorCode.DUPLICATE_SEQUENCE_NUMBER):
                self._succeed(b, p.base_offset, p.log_append_time_ms)
            else:
                self._on_partition_error(b, p, now_ms, response.node_endpoints)

    def _on_partition_error(
        self, batch: ProducerBatch, p: Any, now_ms: int, node_endpoints: Any = ()
    ) -> None:
        code = p.error_code
        cluster = self._client.cluster
        leader = getattr(p, "current_leader", None)
        if cluster.apply_leader_hint_from(batch.tp, leader, node_endpoints):
            pass  # KIP-951: the new leader is known at once, no Metadata round trip
        elif code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.LEADER_NOT_AVAILABLE):
            cluster.mark_leader_unknown(batch.tp)
            self._client.request_metadata_update()
        elif code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            self._client.request_metadata_update()
        error = exception_for(code, p.error_message)
        if code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER and self.idempotent:
            # Behind a batch being retried the gap closes by itself; otherwise a sequence
            # was lost for good and only a new producer id restarts the numbering.
            if not self._acc.is_halted(batch.tp):
                self._reset_producer_id = True
            error = _SequenceRetry(p.error_message)
        elif code in (ErrorCode.UNKNOWN_PRODUCER_ID, ErrorCode.INVALID_PRODUCER_EPOCH):
            self._reset_producer_id = True
            error = _SequenceRetry(p.error_message)
        self._retry_or_fail(batch, error, now_ms)

    def _retry_or_fail(self, batch: ProducerBatch, error: BaseException, now_ms: int) -> None:
        retriable = getattr(error, "retriable", False)
        if retriable and now_ms - batch.created_ms < self.delivery_timeout_ms and not self._closed:
            self._acc.requeue(batch, now_ms)
        else:
            self._acc.complete(batch)
            self._finish(batch, error=error)

    def _succeed(self, batch: ProducerBatch, base_offset: int, log_append_time_ms: int) -> None:
        self._acc.complete(batch)
        self._finish(batch, value=(base_offset, log_append_time_ms))

    def _fail(self, batch: ProducerBatch, error: BaseException) -> None:
        self._finish(batch, error=error)  # batch already removed from the accumulator

    def _finish(
        self,
        batch: ProducerBatch,
        value: tuple[int, int] | None = None,
        error: BaseException | None = None,
    ) -> None:
        result = batch.handle
        assert isinstance(result, _BatchResult)
        self._results.discard(result)
        result.payload = None
        if not result.future.done():
            if error is not None:
                result.future.set_exception(error)
                result.future.exception()  # retrieved: records' futures re-raise it
            else:
                assert value is not None
                result.future.set_result(value)
        self._space.set()
