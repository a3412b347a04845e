"""Hostile and malformed input against a live broker (bad-input.md sections 6.1-6.5).

Each case checks what the broker answers (the exact Kafka error code, or a close) and
that it does so within a second; then that the process is alive, a canary producer on
another connection still succeeds and, for per-partition errors, the same connection
still serves a valid request. At the end the broker's log has no traceback and its RSS
has not grown by more than 50 MB.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from crc32c import crc32c

from client.protocol.compression import Codec
from client.protocol.messages.api_versions import ApiVersionsRequest
from client.protocol.messages.delete_records import (
    DeleteRecordsPartition,
    DeleteRecordsRequest,
    DeleteRecordsTopic,
)
from client.protocol.messages.fetch import FetchPartition, FetchRequest, FetchTopic
from client.protocol.messages.list_offsets import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from client.protocol.messages.metadata import MetadataRequest, MetadataRequestTopic
from client.protocol.messages.produce import ProduceResponse
from client.protocol.records import (
    ATTRIBUTES_OFFSET,
    BATCH_LENGTH_OFFSET,
    CRC_OFFSET,
    MAGIC_OFFSET,
    RECORDS_COUNT_OFFSET,
)
from tests.e2e.conftest import (
    Canary,
    RawClient,
    create_topic,
    partition_response,
    produce_request,
    simple_batch,
)
from tests.harness import BrokerProcess

RSS_GROWTH_BYTES_MAX = 50 << 20

CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_OUT_OF_RANGE = 1
MESSAGE_TOO_LARGE = 10
INVALID_REQUIRED_ACKS = 21
UNSUPPORTED_VERSION = 35
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75
UNSUPPORTED_COMPRESSION_TYPE = 76
INVALID_RECORD = 87


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Env:
    """The shared broker, a topic for bad produces, and the after-each-case checks."""

    def __init__(self, broker: BrokerProcess, topic: str, canary: Canary) -> None:
        self.broker = broker
        self.topic = topic
        self.canary = canary
        self.address = broker.kafka_address

    def healthy(self) -> None:
        assert self.broker.is_running(), self.broker.log_tail()
        self.canary.check()

    def produce_ok(self, raw: RawClient) -> int:
        """A valid produce on `raw`: the connection still works. Returns the base offset."""
        part = partition_response(raw.request(produce_request(self.topic, 0, simple_batch()), 9))
        assert part.error_code == 0, part
        return part.base_offset


@pytest.fixture(scope="module")
def env(broker: BrokerProcess, fresh_topic_module: str) -> Iterator[Env]:
    topic, canary_topic = fresh_topic_module + "-bad", fresh_topic_module + "-canary"
    with RawClient(broker.kafka_address) as raw:
        create_topic(raw, topic, 2)
        create_topic(raw, canary_topic, 1)
    rss_before = _rss_bytes(broker.pid)
    log_start = broker.log_path.stat().st_size
    yield Env(broker, topic, Canary(broker.kafka_address, canary_topic))
    assert broker.is_running()
    assert _rss_bytes(broker.pid) - rss_before < RSS_GROWTH_BYTES_MAX
    with open(broker.log_path, "rb") as f:
        f.seek(log_start)
        assert b"Traceback" not in f.read(), broker.log_tail(80)


@pytest.fixture(scope="module")
def fresh_topic_module() -> str:
    import os
    import uuid

    return f"badin-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# -- 6.1 frame level and 6.2 header level: the broker closes --------------------------------
def _header(api_key: int, version: int, correlation_id: int, client_id: bytes = b"e2e") -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


CLOSE_CASES: dict[str, bytes] = {
    "B1 size 0x7FFFFFFF": struct.pack(">I", 0x7FFFFFFF) + b"\x00" * 16,
    "B2 negative size": struct.pack(">I", 0x80000000) + b"\x00" * 16,
    "B2 size -1": struct.pack(">i", -1) + b"\x00" * 16,
    "B3 size 0": struct.pack(">i", 0),
    "B3 size below header": _frame(b"\x00\x12\x00"),
    "B4 HTTP GET": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "B5 TLS ClientHello": bytes.fromhex("160301012c010001280303") + b"\x11" * 64,
    "H1 unknown api key 999": _frame(_header(999, 0, 1)),
    "H3 Fetch v3 (below served range)": _frame(_header(1, 3, 1) + b"\x00" * 24),
    "H3 Metadata v99": _frame(_header(3, 99, 1) + b"\x00" * 8),
    "H5 client_id longer than frame": _frame(struct.pack(">hhih", 18, 0, 1, 500) + b"abc"),
    "H8 truncated Metadata v1 body": _frame(_header(3, 1, 1) + b"\x00\x00\x00\x02\x00\x05ab"),
    "S1 array count 2^31-1": _frame(_header(3, 1, 1) + struct.pack(">i", 0x7FFFFFFF) + b"\0" * 20),
    "S1 produce topics 2^31-1": _frame(
        _header(0, 3, 1) + struct.pack(">hhii", -1, -1, 1000, 0x7FFFFFFF) + b"\0" * 20
    ),
    "S3 negative array count": _frame(_header(3, 1, 1) + struct.pack(">i", -7) + b"\0" * 20),
}


@pytest.mark.parametrize("name", list(CLOSE_CASES))
def test_garbage_closes_the_connection(env: Env, name: str) -> None:
    with RawClient(env.address) as raw:
        raw.send_raw(CLOSE_CASES[name])
        sent_back = raw.wait_closed()
    assert sent_back == b"", f"{name}: broker answered {sent_back[:64]!r} instead of closing"
    env.healthy()


def test_truncated_frame_then_eof_is_closed(env: Env) -> None:
    with RawClient(env.address) as raw:
        raw.send_raw(struct.pack(">i", 100) + _header(18, 0, 1))
        raw.sock.shutdown(1)  # SHUT_WR: EOF in the middle of the frame
        assert raw.wait_closed() == b""
    env.healthy()


def test_good_requests_before_garbage_are_answered(env: Env) -> None:
    """A valid request pipelined ahead of garbage in the same write is answered, then close."""
    with RawClient(env.address) as raw:
        _, frame = raw.conn.send_request(ApiVersionsRequest(), version=0)
        raw.send_raw(frame + b"GET / HTTP/1.1\r\n\r\n")
        sent_back = raw.wait_closed()
    (size,) = struct.unpack_from(">i", sent_back)
    assert len(sent_back) == 4 + size
    env.healthy()


def test_api_versions_too_new_answers_v0_unsupported_version(env: Env) -> None:
    """H2: an ApiVersions v4 (or later) request gets a v0 response: 35 plus the ranges."""
    body = b"\x06raftka\x041.0\x00"  # compact strings and tags: whatever v4 might carry
    with RawClient(env.address) as raw:
        raw.send_raw(_frame(_header(18, 4, 4242) + b"\x00" + body))
        raw.sock.settimeout(1.0)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
            chunk = raw.sock.recv(65536)
            assert chunk, "closed instead of answering"
            data += chunk
        correlation_id, error_code, count = struct.unpack_from(">ihi", data, 4)
        assert (correlation_id, error_code) == (4242, UNSUPPORTED_VERSION)
        ranges = {
            struct.unpack_from(">h", data, 14 + 6 * i)[0]: struct.unpack_from(
                ">hh", data, 16 + 6 * i
            )
            for i in range(count)
        }
        assert len(data) == 14 + 6 * count  # exactly v0: no throttle time, no tagged fields
        assert ranges[18] == (0, 3)
        assert ranges[0][1] >= 7 and ranges[1] == (4, 12)
        # The connection stays open: the client retries at a version both know.
        (versions := raw.request(ApiVersionsRequest(), 0))
        assert versions.error_code == 0
    env.healthy()


def test_negative_correlation_id_is_echoed(env: Env) -> None:
    with RawClient(env.address) as raw:
        raw.send_raw(_frame(_header(18, 0, -5)))
        raw.sock.settimeout(1.0)
        data = raw.sock.recv(65536)
        assert struct.unpack_from(">ii", data)[1] == -5
    env.healthy()


def test_produce_v2_is_refused(env: Env) -> None:
    """H3 (DESIGN: advertise 0-9, serve 3-9): a v2 Produce is closed or answered with 35."""
    with RawClient(env.address) as raw:
        try:
            response = raw.request(produce_request(env.topic, 0, simple_batch()), 2)
        except ConnectionError:
            pass
        else:
            assert partition_response(response).error_code == UNSUPPORTED_VERSION
            env.produce_ok(raw)
    env.healthy()


# -- 6.4 produce validation: per-partition codes, connection stays usable -------------------
def _recrc(batch: bytearray) -> bytearray:
    struct.pack_into(">I", batch, CRC_OFFSET, crc32c(bytes(batch[ATTRIBUTES_OFFSET:])))
    return batch


def _flip_record_byte() -> bytes:
    batch = bytearray(simple_batch(3))
    batch[-3] ^= 0xFF
    return bytes(batch)


def _bad_crc_field() -> bytes:
    batch = bytearray(simple_batch(3))
    batch[CRC_OFFSET] ^= 0x01
    return bytes(batch)


def _truncated() -> bytes:
    return simple_batch(5)[:-7]


def _short_length() -> bytes:
    batch = bytearray(simple_batch(1))
    struct.pack_into(">i", batch, BATCH_LENGTH_OFFSET, 20)
    return bytes(batch)


def _magic(value: int) -> bytes:
    batch = bytearray(simple_batch(1))
    batch[MAGIC_OFFSET] = value
    return bytes(batch)


def _base_offset(value: int) -> bytes:
    batch = bytearray(simple_batch(2))
    struct.pack_into(">q", batch, 0, value)  # not covered by the CRC
    return bytes(batch)


def _records_count(value: int) -> bytes:
    batch = bytearray(simple_batch(3))
    struct.pack_into(">i", batch, RECORDS_COUNT_OFFSET, value)
    return bytes(_recrc(batch))


def _codec(codec_id: int) -> bytes:
    batch = bytearray(simple_batch(2))
    struct.pack_into(">h", batch, ATTRIBUTES_OFFSET, codec_id)
    return bytes(_recrc(batch))


PRODUCE_CASES: dict[str, tuple[Callable[[], bytes | None], tuple[int, ...]]] = {
    "P1 flipped record byte": (_flip_record_byte, (CORRUPT_MESSAGE,)),
    "P2 bad crc field": (_bad_crc_field, (CORRUPT_MESSAGE,)),
    "P3 batchLength beyond bytes": (_truncated, (INVALID_RECORD, CORRUPT_MESSAGE)),
    "P4 batchLength below header": (_short_length, (CORRUPT_MESSAGE,)),
    "P5 magic 1": (lambda: _magic(1), (INVALID_RECORD,)),
    "P5 magic 0": (lambda: _magic(0), (INVALID_RECORD,)),
    "P6 two batches": (lambda: simple_batch(1) + simple_batch(1), (INVALID_RECORD,)),
    "P7 empty records": (lambda: b"", (INVALID_RECORD,)),
    "P7 null records": (lambda: None, (INVALID_RECORD,)),
    "P8 baseOffset 5": (lambda: _base_offset(5), (INVALID_RECORD,)),
    "P9 recordsCount too big": (lambda: _records_count(9), (INVALID_RECORD,)),
    "P9 recordsCount too small": (lambda: _records_count(1), (INVALID_RECORD,)),
    "P10 batch over max.message.bytes": (
        lambda: simple_batch(1, value_bytes=1_100_000),
        (MESSAGE_TOO_LARGE,),
    ),
    "P13 codec id 5": (lambda: _codec(5), (UNSUPPORTED_COMPRESSION_TYPE, CORRUPT_MESSAGE)),
    "P13 codec id 7": (lambda: _codec(7), (UNSUPPORTED_COMPRESSION_TYPE, CORRUPT_MESSAGE)),
}


@pytest.mark.parametrize("name", list(PRODUCE_CASES))
def test_bad_batch_gets_partition_error_and_connection_stays_usable(env: Env, name: str) -> None:
    make, codes = PRODUCE_CASES[name]
    with RawClient(env.address) as raw:
        end_before = env.produce_ok(raw) + 1
        part = partition_response(raw.request(produce_request(env.topic, 0, make()), 9))
        assert part.error_code in codes, f"{name}: {part}"
        assert part.base_offset == -1
        # Nothing was appended: the next valid batch lands right after the previous one.
        assert env.produce_ok(raw) == end_before
    env.healthy()


def test_zstd_before_produce_v7_is_unsupported_compression(env: Env) -> None:
    """P12: zstd needs Produce v7; the same batch at v7 is accepted."""
    batch = simple_batch(5, compression=Codec.ZSTD)
    with RawClient(env.address) as raw:
        part = partition_response(raw.request(produce_request(env.topic, 0, batch), 6))
        assert part.error_code == UNSUPPORTED_COMPRESSION_TYPE
        assert (
            partition_response(raw.request(produce_request(env.topic, 0, batch), 7)).error_code == 0
        )
    env.healthy()


def test_garbage_compressed_payload_is_corrupt_message(env: Env) -> None:
    """P14: the codec says gzip but the payload is not gzip."""
    batch = bytearray(simple_batch(3))
    struct.pack_into(">h", batch, ATTRIBUTES_OFFSET, int(Codec.GZIP))
    with RawClient(env.address) as raw:
        response = raw.request(produce_request(env.topic, 1, bytes(_recrc(batch))), 9)
        assert partition_response(response).error_code == CORRUPT_MESSAGE
    env.healthy()


def test_invalid_acks(env: Env) -> None:
    with RawClient(env.address) as raw:
        part = partition_response(
            raw.request(produce_request(env.topic, 0, simple_batch(), acks=5), 9)
        )
        assert part.error_code == INVALID_REQUIRED_ACKS
        env.produce_ok(raw)
    env.healthy()


@pytest.mark.parametrize("partition", [2, 999, -1])
def test_unknown_partition(env: Env, partition: int) -> None:
    with RawClient(env.address) as raw:
        response = raw.request(produce_request(env.topic, partition, simple_batch()), 9)
        assert partition_response(response).error_code == UNKNOWN_TOPIC_OR_PARTITION
        env.produce_ok(raw)
    env.healthy()


def test_produce_to_unknown_topic(env: Env) -> None:
    with RawClient(env.address) as raw:
        response = raw.request(produce_request(env.topic + "-nope", 0, simple_batch()), 9)
        assert partition_response(response).error_code == UNKNOWN_TOPIC_OR_PARTITION
        env.produce_ok(raw)
    env.healthy()


def test_mixed_partitions_get_their_own_codes(env: Env) -> None:
    """One request, one good and one bad partition: the good one is appended."""
    from client.protocol.messages.produce import (
        PartitionProduceData,
        ProduceRequest,
        TopicProduceData,
    )

    request = ProduceRequest(
        acks=-1,
        timeout_ms=5000,
        topic_data=(
            TopicProduceData(
                name=env.topic,
                partition_data=(
                    PartitionProduceData(index=0, records=_flip_record_byte()),
                    PartitionProduceData(index=1, records=simple_batch(2)),
                ),
            ),
        ),
    )
    with RawClient(env.address) as raw:
        response: ProduceResponse = raw.request(request, 9)
        codes = {p.index: p.error_code for p in response.responses[0].partition_responses}
        assert codes == {0: CORRUPT_MESSAGE, 1: 0}
    env.healthy()


# -- 6.5 fetch and list offsets --------------------------------------------------------------
def _fetch(topic: str, offset: int, epoch: int = -1, partition: int = 0) -> FetchRequest:
    return FetchRequest(
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=0x7FFFFFFF,  # S5: huge max_bytes is clamped, not allocated
        topics=(
            FetchTopic(
                topic=topic,
                partitions=(
                    FetchPartition(
                        partition=partition,
                        fetch_offset=offset,
                        current_leader_epoch=epoch,
                        partition_max_bytes=1 << 20,
                    ),
                ),
            ),
        ),
    )


def _fetch_code(raw: RawClient, request: FetchRequest) -> int:
    return raw.request(request, 12).responses[0].partitions[0].error_code


def _leader_epoch(raw: RawClient, topic: str) -> int:
    response = raw.request(
        MetadataRequest(
            topics=(MetadataRequestTopic(name=topic),), allow_auto_topic_creation=False
        ),
        12,
    )
    return response.topics[0].partitions[0].leader_epoch


def test_fetch_offsets_out_of_range_and_epoch_fencing(env: Env) -> None:
    with RawClient(env.address) as raw:
        end = env.produce_ok(raw) + 1
        epoch = _leader_epoch(raw, env.topic)
        assert epoch >= 1
        assert _fetch_code(raw, _fetch(env.topic, end)) == 0  # at the end: empty, no error
        assert _fetch_code(raw, _fetch(env.topic, end + 1)) == OFFSET_OUT_OF_RANGE
        assert _fetch_code(raw, _fetch(env.topic, 1 << 40)) == OFFSET_OUT_OF_RANGE
        assert _fetch_code(raw, _fetch(env.topic, -3)) == OFFSET_OUT_OF_RANGE
        assert _fetch_code(raw, _fetch(env.topic, 0, epoch=epoch)) == 0
        assert _fetch_code(raw, _fetch(env.topic, 0, epoch=epoch - 1)) == FENCED_LEADER_EPOCH
        assert _fetch_code(raw, _fetch(env.topic, 0, epoch=epoch + 1)) == UNKNOWN_LEADER_EPOCH
        assert _fetch_code(raw, _fetch(env.topic, 0, partition=7)) in (
            UNKNOWN_TOPIC_OR_PARTITION,
            6,
        )
        assert _fetch_code(raw, _fetch(env.topic + "-nope", 0)) in (UNKNOWN_TOPIC_OR_PARTITION, 6)
        # The same connection still fetches real data.
        fetched = raw.request(_fetch(env.topic, 0, epoch=epoch), 12).responses[0].partitions[0]
        assert fetched.error_code == 0 and fetched.high_watermark == end and fetched.records
    env.healthy()


def test_fetch_below_log_start_after_delete_records(env: Env) -> None:
    with RawClient(env.address) as raw:
        end = env.produce_ok(raw) + 1
        env.produce_ok(raw)
        delete = DeleteRecordsRequest(
            topics=(
                DeleteRecordsTopic(
                    name=env.topic,
                    partitions=(DeleteRecordsPartition(partition_index=0, offset=end),),
                ),
            ),
            timeout_ms=5000,
        )
        result = raw.request(delete, 2).topics[0].partitions[0]
        assert (result.error_code, result.low_watermark) == (0, end)
        assert _fetch_code(raw, _fetch(env.topic, end - 1)) == OFFSET_OUT_OF_RANGE
        assert _fetch_code(raw, _fetch(env.topic, end)) == 0
        listed = raw.request(
            ListOffsetsRequest(
                replica_id=-1,
                topics=(
                    ListOffsetsTopic(
                        name=env.topic,
                        partitions=(ListOffsetsPartition(partition_index=0, timestamp=-2),),
                    ),
                ),
            ),
            7,
        )
        assert listed.topics[0].partitions[0].offset == end
    env.healthy()


def test_list_offsets_epoch_fencing(env: Env) -> None:
    with RawClient(env.address) as raw:
        epoch = _leader_epoch(raw, env.topic)
        codes = []
        for e in (epoch, epoch - 1, epoch + 1):
            request = ListOffsetsRequest(
                replica_id=-1,
                topics=(
                    ListOffsetsTopic(
                        name=env.topic,
                        partitions=(
                            ListOffsetsPartition(
                                partition_index=0, timestamp=-1, current_leader_epoch=e
                            ),
                        ),
                    ),
                ),
            )
            codes.append(raw.request(request, 7).topics[0].partitions[0].error_code)
        assert codes == [0, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH]
    env.healthy()


# -- B9: pipelining ---------------------------------------------------------------------------
def test_one_hundred_pipelined_requests_answered_in_order(env: Env) -> None:
    """Produce, Metadata, Fetch and bad produces interleaved, all sent before any is read."""
    with RawClient(env.address) as raw:
        base = env.produce_ok(raw) + 1
        sent: list[tuple[int, str]] = []
        for i in range(100):
            kind = ("produce", "metadata", "fetch", "bad")[i % 4]
            if kind == "produce":
                body = produce_request(env.topic, 0, simple_batch())
                sent.append((raw.send(body, 9), kind))
            elif kind == "metadata":
                sent.append((raw.send(MetadataRequest(topics=None), 12), kind))
            elif kind == "fetch":
                sent.append((raw.send(_fetch(env.topic, base), 12), kind))
            else:
                body = produce_request(env.topic, 0, _bad_crc_field())
                sent.append((raw.send(body, 9), kind))
        raw.deadline_s = 5.0  # a hundred answers, several of them fsynced appends
        offsets = []
        for correlation_id, kind in sent:
            event = raw.recv()  # ClientConnection already fails on an out-of-order id
            assert event.correlation_id == correlation_id
            if kind == "produce":
                part = partition_response(event.response)
                assert part.error_code == 0
                offsets.append(part.base_offset)
            elif kind == "bad":
                assert partition_response(event.response).error_code == CORRUPT_MESSAGE
            elif kind == "fetch":
                assert event.response.responses[0].partitions[0].error_code == 0
        # Every produce appended once; their order is the next test's business.
        assert sorted(offsets) == list(range(base, base + 25))
    env.healthy()


def test_pipelined_produces_are_appended_in_request_order(env: Env) -> None:
    """Kafka appends pipelined produces to one partition in the order they were sent."""
    with RawClient(env.address, deadline_s=10.0) as raw:
        for _ in range(10):
            ids = [raw.send(produce_request(env.topic, 1, simple_batch()), 9) for _ in range(60)]
            offsets = [partition_response(raw.recv().response).base_offset for _ in ids]
            assert offsets == sorted(offsets), offsets
