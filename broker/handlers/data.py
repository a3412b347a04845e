"""The data path: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, DeleteRecords.

Produce validates each partition's records without decompressing them (header, CRC,
one batch, sizes; the codes of bad-input.md section 6.4), then hands the batch to the
partition as sent: the log stores the producer's bytes. Partitions of one request are
appended concurrently. Errors are per partition and leave the connection usable.

Fetch serves committed data (up to the high watermark) from the partition leader and
long-polls through the node's bounded `FetchWaiters` until `min_bytes` are available or
`max_wait_ms` runs out. It fences stale and future leader epochs (KIP-320) so that a
client that saw an old leader truncates correctly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from broker.partition import Partition, PartitionError
from client.protocol.compression import decompress
from client.protocol.errors import ErrorCode
from client.protocol.exceptions import CorruptRecordError, UnsupportedCodecError
from client.protocol.messages.delete_records import (
    DeleteRecordsPartitionResult,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
    DeleteRecordsTopicResult,
)
from client.protocol.messages.fetch import (
    FetchableTopicResponse,
    FetchRequest,
    FetchResponse,
    LeaderIdAndEpoch,
    PartitionData,
)
from client.protocol.messages.list_offsets import (
    ListOffsetsPartitionResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
)
from client.protocol.messages.offset_for_leader_epoch import (
    EpochEndOffset,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
)
from client.protocol.messages.produce import (
    PartitionProduceResponse,
    ProduceRequest,
    ProduceResponse,
    TopicProduceResponse,
)
from client.protocol.records import RECORDS_OFFSET, InvalidRecordError, validate_batch

if TYPE_CHECKING:
    from broker.kafka_server import RequestContext
    from broker.node import Node

ZSTD = 4
#: The smallest possible v2 record: length, attributes, three varints, null key/value, 0 headers.
RECORD_BYTES_MIN = 7
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3
#: A ListOffsets by timestamp scans the log; it gives up past this many bytes.
TIMESTAMP_SCAN_BYTES_MAX = 256 << 20


def _leader_partition(node: Node, topic: str, index: int) -> Partition:
    partition = node.partitions.get((topic, index))
    if partition is None:
        info = node.controller.image.topics.get(topic)
        if info is None or not 0 <= index < len(info.partitions):
            raise PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
    if not partition.is_leader:
        raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
    return partition


# -- Produce ------------------------------------------------------------------------------
async def handle_produce(
    node: Node, request: ProduceRequest, ctx: RequestContext
) -> ProduceResponse | None:
    acks = request.acks
    jobs: list[tuple[str, int, Any]] = []
    for topic in request.topic_data:
        for pdata in topic.partition_data:
            jobs.append((topic.name, pdata.index, pdata.records))
    if acks not in (-1, 0, 1):
        results = [
            PartitionProduceResponse(index=i, error_code=ErrorCode.INVALID_REQUIRED_ACKS)
            for _, i, _ in jobs
        ]
    elif ctx.version < 3:
        results = [
            PartitionProduceResponse(index=i, error_code=ErrorCode.UNSUPPORTED_VERSION)
            for _, i, _ in jobs
        ]
    else:
        timeout_ms = max(0, request.timeout_ms)
        if len(jobs) == 1:  # the common case: no task per partition to schedule
            topic_name, index, records = jobs[0]
            results = [
                await _produce_one(node, topic_name, index, records, acks, timeout_ms, ctx.version)
            ]
        else:
            results = list(
                await asyncio.gather(
                    *(
                        _produce_one(node, t, i, r, acks, timeout_ms, ctx.version)
                        for t, i, r in jobs
                    )
                )
            )
    if acks == 0:
        return None
    by_topic: dict[str, list[PartitionProduceResponse]] = {}
    for (topic_name, _, _), result in zip(jobs, results):
        by_topic.setdefault(topic_name, []).append(result)
    return ProduceResponse(
        responses=tuple(
            TopicProduceResponse(name=t, partition_responses=tuple(rs))
            for t, rs in by_topic.items()
        ),
        throttle_time_ms=0,
    )


async def _produce_one(
    node: Node, topic: str, index: int, records: Any, acks: int, timeout_ms: int, version: int
) -> PartitionProduceResponse:
    try:
        partition = _leader_partition(node, topic, index)
        if records is None or len(records) == 0:
            raise PartitionError(ErrorCode.INVALID_RECORD, "the request has no record batch")
        if len(records) > partition_max_message_bytes(node, topic):
            raise PartitionError(
                ErrorCode.MESSAGE_TOO_LARGE, "the record batch is larger than max.message.bytes"
            )
        try:
            header = validate_batch(records)
        except InvalidRecordError as error:
            raise PartitionError(ErrorCode.INVALID_RECORD, str(error)) from None
        except UnsupportedCodecError as error:
            raise PartitionError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, str(error)) from None
        except CorruptRecordError as error:
            raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(error)) from None
        if header.compression == ZSTD and version < 7:
            raise PartitionError(
                ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, "zstd needs Produce v7 or later"
            )
        if header.compression:
            _check_decompresses(
                records, header.compression, header.records_count, node.config.message_bytes_max
            )
        if header.is_transactional:
            raise PartitionError(
                ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactions are not supported"
            )
        outcome = await partition.produce(bytes(records), acks, timeout_ms)
    except PartitionError as error:
        return PartitionProduceResponse(
            index=index, error_code=error.code, base_offset=-1, error_message=error.message or None
        )
    node.metrics.bytes_in.inc(len(records))
    return PartitionProduceResponse(
        index=index,
        error_code=0,
        base_offset=outcome.base_offset,
        log_append_time_ms=-1,
        log_start_offset=outcome.log_start_offset,
    )


#: A compressed batch may expand this many times its limit when checked (Kafka's own
#: records compress well; a bomb beyond this is refused as corrupt).
DECOMPRESSION_EXPANSION_MAX = 64


def _check_decompresses(records: Any, codec: int, count: int, message_bytes_max: int) -> None:
    """A compressed batch must decompress, within bounds, to room for its records (P14).

    The broker stores the producer's bytes as sent; this check keeps garbage out of the
    log without parsing every record.
    """
    try:
        plain = decompress(
            codec,
            memoryview(records)[RECORDS_OFFSET:],
            decompressed_bytes_max=DECOMPRESSION_EXPANSION_MAX * message_bytes_max,
        )
    except CorruptRecordError as error:
        raise PartitionError(ErrorCode.CORRUPT_MESSAGE, f"cannot decompress: {error}") from None
    if len(plain) < count * RECORD_BYTES_MIN:
        raise PartitionError(
            ErrorCode.CORRUPT_MESSAGE, f"{count} records cannot fit in {len(plain)} bytes"
        )


def partition_max_message_bytes(node: Node, topic: str) -> int:
    info = node.controller.image.topics.get(topic)
    if info is not None and "max.message.bytes" in info.configs:
        return int(info.configs["max.message.bytes"])
    return node.config.message_bytes_max


# -- Fetch --------------------------------------------------------------------------------
async def handle_fetch(node: Node, request: FetchRequest, ctx: RequestContext) -> FetchResponse:
    loop = asyncio.get_running_loop()
    max_wait_s = min(max(0, request.max_wait_ms), node.config.fetch_wait_ms_max) / 1000
    deadline = loop.time() + max_wait_s
    max_bytes = min(
        request.max_bytes if ctx.version >= 3 else node.config.fetch_bytes_max,
        node.config.fetch_bytes_max,
    )
    keys = [(t.topic, p.partition) for t in request.topics for p in t.partitions]
    while True:
        response, total_bytes, has_error = _fetch_once(node, request, max_bytes, ctx.version)
        remaining = deadline - loop.time()
        if total_bytes >= max(1, request.min_bytes) or has_error or remaining <= 0:
            return response
        if not await node.fetch_waiters.wait(keys, remaining):
            return _fetch_once(node, request, max_bytes, ctx.version)[0]


def _fetch_once(
    node: Node, request: FetchRequest, max_bytes: int, version: int
) -> tuple[FetchResponse, int, bool]:
    budget = max_bytes
    total = 0
    has_error = False
    topics = []
    for topic in request.topics:
        partitions = []
        for fp in topic.partitions:
            data, size = _fetch_partition(
                node, topic.topic, fp, budget if total else max(budget, 1), version
            )
            if data.error_code:
                has_error = True
            total += size
            budget = max(0, budget - size)
            partitions.append(data)
        topics.append(
            FetchableTopicResponse(
                topic=topic.topic, topic_id=topic.topic_id, partitions=tuple(partitions)
            )
        )
    response = FetchResponse(
        throttle_time_ms=0, error_code=0, session_id=0, responses=tuple(topics)
    )
    return response, total, has_error


def _fetch_partition(
    node: Node, topic: str, fp: Any, budget: int, version: int
) -> tuple[PartitionData, int]:
    try:
        partition = _leader_partition(node, topic, fp.partition)
        epoch = fp.current_leader_epoch if version >= 9 else -1
        if epoch >= 0:
            if epoch < partition.leader_epoch:
                raise PartitionError(ErrorCode.FENCED_LEADER_EPOCH)
            if epoch > partition.leader_epoch:
                raise PartitionError(ErrorCode.UNKNOWN_LEADER_EPOCH)
        limit = min(fp.partition_max_bytes, budget) if budget > 0 else 0
        if limit <= 0:
            records: bytes = b""
            if (
                fp.fetch_offset > partition.high_watermark
                or fp.fetch_offset < partition.log_start_offset
            ):
                raise PartitionError(ErrorCode.OFFSET_OUT_OF_RANGE)
        else:
            if fp.fetch_offset < partition.log_start_offset:
                raise PartitionError(ErrorCode.OFFSET_OUT_OF_RANGE)
            result = partition.read(fp.fetch_offset, limit)
            records = result.to_bytes()
    except PartitionError as error:
        return PartitionData(
            partition_index=fp.partition,
            error_code=error.code,
            high_watermark=-1,
            last_stable_offset=-1,
            log_start_offset=-1,
            current_leader=_leader_hint(node, topic, fp.partition, error.code),
            # Empty, never null: librdkafka rejects a whole response with a null record set.
            records=b"",
        ), 0
    hwm = partition.high_watermark
    return (
        PartitionData(
            partition_index=fp.partition,
            error_code=0,
            high_watermark=hwm,
            last_stable_offset=hwm,
            log_start_offset=partition.log_start_offset,
            aborted_transactions=None if version >= 4 else (),
            preferred_read_replica=-1,
            records=records,
        ),
        len(records),
    )


_LEADER_ERRORS = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
    }
)
_NO_LEADER = LeaderIdAndEpoch(leader_id=-1, leader_epoch=-1)


def _leader_hint(node: Node, topic: str, index: int, code: ErrorCode) -> LeaderIdAndEpoch:
    """KIP-951: tell the client the new leader with the error, so it need not refresh."""
    if code not in _LEADER_ERRORS:
        return _NO_LEADER
    assignment = node.controller.image.partition(topic, index)
    leader = node.leader_of(assignment) if assignment is not None else None
    if leader is None or leader.leader_id == node.node_id:
        return _NO_LEADER
    return LeaderIdAndEpoch(leader_id=leader.leader_id, leader_epoch=leader.epoch)


# -- ListOffsets --------------------------------------------------------------------------
async def handle_list_offsets(
    node: Node, request: ListOffsetsRequest, ctx: RequestContext
) -> ListOffsetsResponse:
    topics = []
    for topic in request.topics:
        partitions = []
        for lp in topic.partitions:
            partitions.append(_list_offset(node, topic.name, lp, ctx.version))
        topics.append(ListOffsetsTopicResponse(name=topic.name, partitions=tuple(partitions)))
    return ListOffsetsResponse(throttle_time_ms=0, topics=tuple(topics))


def _list_offset(node: Node, topic: str, lp: Any, version: int) -> ListOffsetsPartitionResponse:
    try:
        partition = _leader_partition(node, topic, lp.partition_index)
        epoch = lp.current_leader_epoch if version >= 4 else -1
        if epoch >= 0 and epoch != partition.leader_epoch:
            code = (
                ErrorCode.FENCED_LEADER_EPOCH
                if epoch < partition.leader_epoch
                else ErrorCode.UNKNOWN_LEADER_EPOCH
            )
            raise PartitionError(code)
        timestamp = lp.timestamp
        if timestamp == LATEST_TIMESTAMP:
            offset, ts = partition.high_watermark, -1
        elif timestamp == EARLIEST_TIMESTAMP:
            offset, ts = partition.log_start_offset, -1
        else:
            offset, ts = _offset_for_timestamp(partition, timestamp)
    except PartitionError as error:
        return ListOffsetsPartitionResponse(
            partition_index=lp.partition_index, error_code=error.code, timestamp=-1, offset=-1
        )
    return ListOffsetsPartitionResponse(
        partition_index=lp.partition_index,
        error_code=0,
        timestamp=ts,
        offset=offset,
        leader_epoch=partition.leader_epoch,
    )


def _offset_for_timestamp(partition: Partition, timestamp: int) -> tuple[int, int]:
    """First offset whose batch max timestamp is >= timestamp (or the max timestamp, -3).

    Scans batch headers from the log start, bounded by TIMESTAMP_SCAN_BYTES_MAX (a time
    index would make this a lookup; the bound keeps a single request cheap meanwhile).
    """
    import struct

    max_ts = struct.Struct(">q")
    offset = partition.log_start_offset
    scanned = 0
    best: tuple[int, int] = (-1, -1)
    while offset < partition.high_watermark and scanned < TIMESTAMP_SCAN_BYTES_MAX:
        result = partition.read(offset, 1 << 20)
        if not result.batches:
            break
        for batch in result.batches:
            base = max_ts.unpack_from(batch, 0)[0]
            batch_max_ts = max_ts.unpack_from(batch, 35)[0]
            if timestamp == MAX_TIMESTAMP:
                if batch_max_ts >= best[1]:
                    best = (base, batch_max_ts)
            elif batch_max_ts >= timestamp:
                return base, batch_max_ts
            scanned += len(batch)
        offset = result.next_offset
    if timestamp == MAX_TIMESTAMP:
        return best
    return -1, -1


# -- OffsetForLeaderEpoch -----------------------------------------------------------------
async def handle_offset_for_leader_epoch(
    node: Node, request: OffsetForLeaderEpochRequest, ctx: RequestContext
) -> OffsetForLeaderEpochResponse:
    topics = []
    for topic in request.topics:
        results = []
        for p in topic.partitions:
            try:
                partition = _leader_partition(node, topic.topic, p.partition)
                if p.current_leader_epoch >= 0 and p.current_leader_epoch != partition.leader_epoch:
                    raise PartitionError(
                        ErrorCode.FENCED_LEADER_EPOCH
                        if p.current_leader_epoch < partition.leader_epoch
                        else ErrorCode.UNKNOWN_LEADER_EPOCH
                    )
                epoch, end = partition.end_offset_for_epoch(p.leader_epoch)
                results.append(
                    EpochEndOffset(
                        error_code=0, partition=p.partition, leader_epoch=epoch, end_offset=end
                    )
                )
            except PartitionError as error:
                results.append(
                    EpochEndOffset(
                        error_code=error.code, partition=p.partition, leader_epoch=-1, end_offset=-1
                    )
                )
        topics.append(OffsetForLeaderTopicResult(topic=topic.topic, partitions=tuple(results)))
    return OffsetForLeaderEpochResponse(throttle_time_ms=0, topics=tuple(topics))


# -- DeleteRecords ------------------------------------------------------------------------
async def handle_delete_records(
    node: Node, request: DeleteRecordsRequest, ctx: RequestContext
) -> DeleteRecordsResponse:
    topics = []
    for topic in request.topics:
        results = []
        for p in topic.partitions:
            try:
                partition = _leader_partition(node, topic.name, p.partition_index)
                target = partition.high_watermark if p.offset == -1 else p.offset
                if not partition.log_start_offset <= target <= partition.high_watermark:
                    raise PartitionError(ErrorCode.OFFSET_OUT_OF_RANGE)
                low = await partition.truncate_before(target, max(1, request.timeout_ms))
                results.append(
                    DeleteRecordsPartitionResult(
                        partition_index=p.partition_index, low_watermark=low, error_code=0
                    )
                )
            except PartitionError as error:
                results.append(
                    DeleteRecordsPartitionResult(
                        partition_index=p.partition_index, low_watermark=-1, error_code=error.code
                    )
                )
        topics.append(DeleteRecordsTopicResult(name=topic.name, partitions=tuple(results)))
    return DeleteRecordsResponse(throttle_time_ms=0, topics=tuple(topics))
