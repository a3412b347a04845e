"""Kafka record batch v2 (magic 2): header layout, validation, stamping, encoding, decoding.

The broker treats a producer's batch as opaque bytes: it validates the 61-byte
header and the CRC-32C (which covers attributes..end, so baseOffset and
partitionLeaderEpoch can be rewritten without recomputing it), stamps the base
offset and leader epoch, and stores the bytes. Only clients (and tests) decode
records. So the header path is short and never decompresses, and the record
path is written for CPython's costs: precompiled structs, varint lookup tables
for small values, one pass per batch, no per-record method calls.

Validation errors come in two kinds, because Kafka answers them with two codes:
CorruptRecordError (CORRUPT_MESSAGE, 2: bad CRC, unreadable header or records)
and its subclass InvalidRecordError (INVALID_RECORD, 87: a well-formed batch
the produce path must refuse, such as magic 1, a non-zero base offset, two
batches in one partition, or a record count that disagrees with the offsets).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import getitem
from typing import NamedTuple

from crc32c import crc32c

from client.protocol.compression import CODEC_MASK, Codec, compress, decompress
from client.protocol.exceptions import (
    CorruptRecordError,
    LocalProtocolError,
    UnsupportedCodecError,
)

# ---------------------------------------------------------------- header layout
BASE_OFFSET_OFFSET = 0  # int64
BATCH_LENGTH_OFFSET = 8  # int32, bytes after this field
PARTITION_LEADER_EPOCH_OFFSET = 12  # int32
MAGIC_OFFSET = 16  # int8
CRC_OFFSET = 17  # uint32, CRC-32C of attributes..end
ATTRIBUTES_OFFSET = 21  # int16
LAST_OFFSET_DELTA_OFFSET = 23  # int32
BASE_TIMESTAMP_OFFSET = 27  # int64
MAX_TIMESTAMP_OFFSET = 35  # int64
PRODUCER_ID_OFFSET = 43  # int64
PRODUCER_EPOCH_OFFSET = 51  # int16
BASE_SEQUENCE_OFFSET = 53  # int32
RECORDS_COUNT_OFFSET = 57  # int32
RECORDS_OFFSET = 61
BATCH_HEADER_BYTES = RECORDS_OFFSET
LOG_OVERHEAD_BYTES = 12  # baseOffset + batchLength: what batchLength does not count
BATCH_LENGTH_MIN = BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES  # 49
MAGIC_V2 = 2

# Attributes bits.
COMPRESSION_MASK = CODEC_MASK
TIMESTAMP_TYPE_MASK = 0x08  # 0 CreateTime, 1 LogAppendTime
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20
DELETE_HORIZON_MASK = 0x40

TIMESTAMP_TYPE_CREATE = 0
TIMESTAMP_TYPE_LOG_APPEND = 1
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1
NO_TIMESTAMP = -1

# Control record types (key: version int16, type int16).
CONTROL_TYPE_ABORT = 0
CONTROL_TYPE_COMMIT = 1

# The smallest record: length, attributes, timestampDelta, offsetDelta,
# keyLength, valueLength, headerCount, one byte each. Bounds loops on hostile counts.
RECORD_BYTES_MIN = 7
DECOMPRESSED_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
VARINT_BYTES_MAX = 5
VARLONG_BYTES_MAX = 10

HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")
assert HEADER_STRUCT.size == BATCH_HEADER_BYTES
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")
_CODEC_ID_MAX = 4  # zstd; plain int: an IntEnum lookup costs ~0.1 us on the hot path
_CRC_COPY_BYTES_MAX = 4096
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


Headers = tuple[tuple[str, bytes | None], ...]


class InvalidRecordError(CorruptRecordError):
    """A readable batch that Kafka refuses with INVALID_RECORD (87) rather than CORRUPT_MESSAGE."""


# ---------------------------------------------------------------- varints
def _zigzag_varint(value: int) -> bytes:
    """Kafka's signed varint/varlong: zigzag, then 7 bits a byte, low group first."""
    u = (value << 1) ^ (value >> 63)
    out = bytearray()
    while u > 0x7F:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


# Encoded bytes of every small non-negative value: lengths, deltas and counts
# of ordinary records hit this table instead of a Python loop.
_ENC_LIMIT = 1 << 14
_ENC: list[bytes] = [_zigzag_varint(v) for v in range(_ENC_LIMIT)]
_ENC_NULL = _zigzag_varint(-1)
# Tables of the record decoder's fast path, which handles 1- and 2-byte varints
# (values -8192..8191: every length, delta and count of ordinary records) by lookup
# instead of shifting and masking in Python. A 2-byte varint (b, c) is read as
# _V2[b][c]; its row has 128 entries, so a third byte (c >= 0x80) raises IndexError.
# Length tables hold None for negative lengths, so arithmetic on them raises
# TypeError. Both errors send the record to the careful decoder, which either
# decodes it (long varints) or raises CorruptRecordError.
_V1: list[int] = [(u >> 1) ^ -(u & 1) for u in range(0x80)]
_V2: list[list[int] | None] = [
    None if b < 0x80 else [(u >> 1) ^ -(u & 1) for u in range(b & 0x7F, 1 << 14, 0x80)]
    for b in range(0x100)
]
_L1: list[int | None] = [v if v >= 0 else None for v in _V1]
_L2: list[list[int | None] | None] = [
    None if row is None else [v if v >= 0 else None for v in row] for row in _V2
]
# Lengths plus the varint's own width: one addition finds the end of a record.
_L1P: list[int | None] = [None if v is None else v + 1 for v in _L1]
_L2P: list[list[int | None] | None] = [
    None if row is None else [None if v is None else v + 2 for v in row] for row in _L2
]


def encode_varint(value: int) -> bytes:
    """Encode a signed varint or varlong (zigzag) as Kafka's record format does."""
    if 0 <= value < _ENC_LIMIT:
        return _ENC[value]
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise LocalProtocolError(f"varlong out of range: {value}")
    return _zigzag_varint(value)


def decode_varint(buf: bytes, pos: int, bytes_max: int = VARLONG_BYTES_MAX) -> tuple[int, int]:
    """Decode a zigzag varint at `pos`; return (value, position after it).

    Raises CorruptRecordError when the varint runs past the buffer or past
    `bytes_max` bytes (5 for varint, 10 for varlong).
    """
    u = 0
    shift = 0
    end = min(len(buf), pos + bytes_max)
    while pos < end:
        b = buf[pos]
        pos += 1
        u |= (b & 0x7F) << shift
        if b < 0x80:
            value = (u >> 1) ^ -(u & 1)
            if bytes_max <= VARINT_BYTES_MAX and not _INT32_MIN <= value <= _INT32_MAX:
                raise CorruptRecordError("varint out of int32 range")
            return value, pos
        shift += 7
    raise CorruptRecordError("varint too long or truncated")


# ---------------------------------------------------------------- header
class BatchHeader(NamedTuple):
    """The 61-byte v2 batch header, fields in wire order.

    A NamedTuple rather than a frozen dataclass on purpose: it is built from
    struct.unpack_from's tuple in one C call (about 0.2 us) where a frozen slotted
    dataclass of 13 fields costs about 2.5 us on this machine, and the broker
    builds one per produced batch. It is immutable and slotted all the same.
    """

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def compression(self) -> int:
        """Codec id of attributes bits 0-2 (see compression.Codec)."""
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        """0 CreateTime, 1 LogAppendTime."""
        return (self.attributes & TIMESTAMP_TYPE_MASK) >> 3

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def record_count(self) -> int:
        return self.records_count

    @property
    def batch_bytes(self) -> int:
        """Size of the whole batch on the wire, header included."""
        return self.batch_length + LOG_OVERHEAD_BYTES

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0


_new_tuple = tuple.__new__
_unpack_header = HEADER_STRUCT.unpack_from
_unpack_int32 = _INT32.unpack_from


def read_batch_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> BatchHeader:
    """Parse the header at `offset` without checking anything but that 61 bytes are there."""
    if offset < 0 or len(buf) - offset < BATCH_HEADER_BYTES:
        raise CorruptRecordError("fewer than 61 bytes for a record batch header")
    return _new_tuple(BatchHeader, _unpack_header(buf, offset))


def batch_crc_ok(buf: bytes | bytearray | memoryview, offset: int = 0) -> bool:
    """True when the stored CRC matches CRC-32C over attributes..end of the batch at `offset`."""
    header = read_batch_header(buf, offset)
    end = offset + header.batch_length + LOG_OVERHEAD_BYTES
    if header.batch_length < BATCH_LENGTH_MIN or end > len(buf):
        return False
    return crc32c(memoryview(buf)[offset + ATTRIBUTES_OFFSET : end]) == header.crc


def validate_batch(buf: bytes | bytearray | memoryview, *, produce: bool = True) -> BatchHeader:
    """Check that `buf` is exactly one valid v2 batch; return its header. Never decompresses.

    Checks, in Kafka's order: a complete batch is present, batchLength covers a
    header and no more than the buffer, magic is 2, nothing follows the batch,
    the CRC-32C matches, the codec is known, and recordsCount agrees with
    lastOffsetDelta and with the bytes available. With `produce` (a client's
    Produce request) also: baseOffset is 0, exactly lastOffsetDelta + 1 >= 1
    records, no control batch, and a sequence whenever a producer id is set.

    Raises CorruptRecordError (CORRUPT_MESSAGE), InvalidRecordError
    (INVALID_RECORD) or UnsupportedCodecError.
    """
    # One straight-line function: this runs once per produced batch, and in
    # CPython every call and attribute lookup shows up next to the CRC itself.
    n = len(buf)
    if n < BATCH_HEADER_BYTES:
        _raise_short(buf, n)
    fields = _unpack_header(buf, 0)
    batch_length = fields[1]
    if batch_length < BATCH_LENGTH_MIN:
        raise CorruptRecordError(f"batchLength {batch_length} is below the header size")
    if batch_length + LOG_OVERHEAD_BYTES > n:
        raise InvalidRecordError(
            f"truncated batch: batchLength says {batch_length + LOG_OVERHEAD_BYTES} bytes, {n} present"
        )
    if fields[3] != MAGIC_V2:
        raise InvalidRecordError(f"record batch magic {fields[3]}, only 2 is supported")
    if batch_length + LOG_OVERHEAD_BYTES != n:
        raise InvalidRecordError("bytes after the record batch (only one batch is allowed)")
    if produce and fields[0] != 0:
        raise InvalidRecordError(f"baseOffset {fields[0]} from a client, must be 0")
    # Copying a small batch is cheaper than making a memoryview of it.
    tail = (
        buf[ATTRIBUTES_OFFSET:] if n < _CRC_COPY_BYTES_MAX else memoryview(buf)[ATTRIBUTES_OFFSET:]
    )
    if crc32c(tail) != fields[4]:
        raise CorruptRecordError("record batch CRC-32C mismatch")
    attributes = fields[5]
    codec = attributes & COMPRESSION_MASK
    if codec > _CODEC_ID_MAX:
        raise UnsupportedCodecError(f"unknown compression codec {codec}")
    count = fields[12]
    last_offset_delta = fields[6]
    if produce:
        if count < 1 or last_offset_delta != count - 1:
            raise InvalidRecordError(
                f"record count {count} does not match lastOffsetDelta {last_offset_delta}"
            )
        if attributes & CONTROL_MASK:
            raise InvalidRecordError("clients may not write control batches")
        if fields[9] >= 0 and fields[11] < 0:
            raise InvalidRecordError("idempotent batch without a base sequence")
    elif count < 0 or (count and last_offset_delta < count - 1):
        raise CorruptRecordError(
            f"record count {count} does not fit lastOffsetDelta {last_offset_delta}"
        )
    if not codec and count * RECORD_BYTES_MIN > batch_length - BATCH_LENGTH_MIN:
        raise InvalidRecordError(f"record count {count} cannot fit in {batch_length} bytes")
    return _new_tuple(BatchHeader, fields)


def _raise_short(buf: bytes | bytearray | memoryview, n: int) -> None:
    if n < LOG_OVERHEAD_BYTES:
        raise InvalidRecordError("no complete record batch")
    batch_length = _unpack_int32(buf, BATCH_LENGTH_OFFSET)[0]
    if batch_length < BATCH_LENGTH_MIN:
        raise CorruptRecordError(f"batchLength {batch_length} is below the header size")
    raise InvalidRecordError(f"truncated batch: {n} bytes present")


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Yield a memoryview of each complete batch in a records field, in order.

    A Fetch response may end with a partial batch (the broker cuts at a byte
    limit): the walk stops there silently. A batchLength too small to hold a
    header is corruption (nothing after it can be trusted) and raises.
    """
    view = memoryview(buf)
    n = len(view)
    pos = 0
    while n - pos >= LOG_OVERHEAD_BYTES:
        batch_length = _unpack_int32(view, pos + BATCH_LENGTH_OFFSET)[0]
        if batch_length < BATCH_LENGTH_MIN:
            raise CorruptRecordError(f"batchLength {batch_length} is below the header size")
        end = pos + LOG_OVERHEAD_BYTES + batch_length
        if end > n:
            return
        yield view[pos:end]
        pos = end


def split_batches(buf: bytes | bytearray | memoryview) -> list[memoryview]:
    """All complete batches of a records field (a partial trailing batch is dropped)."""
    return list(iter_batches(buf))


# ---------------------------------------------------------------- stamping
_pack_int64_into = _INT64.pack_into
_pack_int32_into = _INT32.pack_into


def stamp_batch(buf: bytearray | memoryview, base_offset: int, partition_leader_epoch: int) -> None:
    """Write baseOffset and partitionLeaderEpoch in place. Both lie outside the CRC."""
    _pack_int64_into(buf, BASE_OFFSET_OFFSET, base_offset)
    _pack_int32_into(buf, PARTITION_LEADER_EPOCH_OFFSET, partition_leader_epoch)


def stamped_batch(
    buf: bytes | bytearray | memoryview, base_offset: int, partition_leader_epoch: int
) -> bytes:
    """A copy of an immutable batch with baseOffset and partitionLeaderEpoch replaced (one copy)."""
    view = memoryview(buf)
    return b"".join(
        (
            _INT64.pack(base_offset),
            view[BATCH_LENGTH_OFFSET:PARTITION_LEADER_EPOCH_OFFSET],
            _INT32.pack(partition_leader_epoch),
            view[MAGIC_OFFSET:],
        )
    )


# ---------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class Record:
    """One record as the wire holds it: offset and timestamp relative to the batch."""

    offset_delta: int
    timestamp_delta: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


class DecodedRecord(NamedTuple):
    """A decoded record with absolute offset and timestamp.

    A NamedTuple so that the decoder builds each one with a single C call; the
    per-record cost dominates decoding in CPython.
    """

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """The key/value of a control batch's record (a transaction marker)."""

    version: int
    type: int  # CONTROL_TYPE_ABORT or CONTROL_TYPE_COMMIT
    coordinator_epoch: int


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch's header and its records, offsets and timestamps made absolute."""

    header: BatchHeader
    records: tuple[DecodedRecord, ...]

    @property
    def control(self) -> ControlRecord | None:
        """The control record of a control batch, else None."""
        if not self.header.is_control or not self.records:
            return None
        first = self.records[0]
        return parse_control_record(first.key, first.value)


def parse_control_record(key: bytes | None, value: bytes | None) -> ControlRecord:
    """Read a control record's key (version, type) and value (version, coordinator epoch)."""
    if key is None or len(key) < _CONTROL_KEY.size:
        raise CorruptRecordError("control record key shorter than 4 bytes")
    version, control_type = _CONTROL_KEY.unpack_from(key)
    coordinator_epoch = -1
    if value is not None and len(value) >= _CONTROL_VALUE.size:
        coordinator_epoch = _CONTROL_VALUE.unpack_from(value)[1]
    return ControlRecord(version, control_type, coordinator_epoch)


def decode_batch(
    buf: bytes | bytearray | memoryview,
    *,
    decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
) -> DecodedBatch:
    """Validate (CRC included) and fully decode exactly one batch, decompressing if needed."""
    header, rows = _decode_batch_rows(buf, decompressed_bytes_max)
    # Plain tuples in the loop, named ones made by a C-level map afterwards:
    # cheaper than a tuple.__new__ call per record from Python.
    return DecodedBatch(header, tuple(map(_new_tuple, repeat(DecodedRecord), rows)))


@dataclass(frozen=True, slots=True)
class BatchColumns:
    """A decoded batch as parallel tuples, one entry per record (what decode_batch_columns returns).

    For callers that build their own record objects: zip(offsets, timestamps_ms,
    keys, values, headers) in C costs less than a DecodedRecord per record and
    then a second object from it. Offsets and timestamps are absolute.
    """

    header: BatchHeader
    offsets: tuple[int, ...]
    timestamps_ms: tuple[int, ...]
    keys: tuple[bytes | None, ...]
    values: tuple[bytes | None, ...]
    headers: tuple[Headers, ...]


def decode_batch_columns(
    buf: bytes | bytearray | memoryview,
    *,
    decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
) -> BatchColumns:
    """decode_batch's checks and records, as columns (see BatchColumns)."""
    header, columns = decode_batch_column_parts(buf, decompressed_bytes_max=decompressed_bytes_max)
    if not columns:
        return BatchColumns(header, (), (), (), (), ())
    if len(columns) == 1:
        return BatchColumns(header, *columns[0])
    offsets, timestamps, keys, values, headers = (
        tuple(chain.from_iterable(parts)) for parts in zip(*columns, strict=True)
    )
    return BatchColumns(header, offsets, timestamps, keys, values, headers)


def decode_batch_column_parts(
    buf: bytes | bytearray | memoryview,
    *,
    decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
) -> tuple[BatchHeader, list[Columns]]:
    """decode_batch_columns's answer before joining: consecutive parts, each five columns
    (offsets, timestamps_ms, keys, values, headers). For callers that build one object per
    record anyway (the consumer): joining the parts would copy every column once more."""
    header, data = _records_area(buf, decompressed_bytes_max)
    segments = _decode_segments(
        data, header.records_count, header.base_offset, header.base_timestamp
    )
    columns = [s if isinstance(s, tuple) else tuple(zip(*s, strict=True)) for s in segments]
    return header, [c for c in columns if c]  # type: ignore[misc]


def _decode_batch_rows(
    buf: bytes | bytearray | memoryview, decompressed_bytes_max: int
) -> tuple[BatchHeader, list[Row]]:
    header, data = _records_area(buf, decompressed_bytes_max)
    rows = _decode_rows(data, header.records_count, header.base_offset, header.base_timestamp)
    return header, rows


def _records_area(
    buf: bytes | bytearray | memoryview, decompressed_bytes_max: int
) -> tuple[BatchHeader, bytes]:
    """A validated batch's header and its records area, decompressed."""
    header = validate_batch(buf, produce=False)
    view = memoryview(buf)[RECORDS_OFFSET:]
    codec = header.attributes & COMPRESSION_MASK
    if codec:
        data = decompress(codec, view, decompressed_bytes_max=decompressed_bytes_max)
        if header.records_count * RECORD_BYTES_MIN > len(data):
            raise CorruptRecordError(f"record count {header.records_count} cannot fit")
    else:
        data = bytes(view)
    return header, data


def decode_batches(
    buf: bytes | bytearray | memoryview,
    *,
    decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
) -> list[DecodedBatch]:
    """Decode every complete batch of a records field (a partial trailing batch is ignored)."""
    return [
        decode_batch(batch, decompressed_bytes_max=decompressed_bytes_max)
        for batch in iter_batches(buf)
    ]


Row = tuple[int, int, bytes | None, bytes | None, Headers]


def _decode_records(
    data: bytes, count: int, base_offset: int, base_timestamp: int
) -> tuple[DecodedRecord, ...]:
    # Plain tuples in the loop, named ones made by a C-level map afterwards:
    # cheaper than a tuple.__new__ call per record from Python.
    rows = _decode_rows(data, count, base_offset, base_timestamp)
    return tuple(map(_new_tuple, repeat(DecodedRecord), rows))


def _decode_rows(data: bytes, count: int, base_offset: int, base_timestamp: int) -> list[Row]:
    """(offset, timestamp_ms, key, value, headers) of each record of an uncompressed records area."""
    segments = _decode_segments(data, count, base_offset, base_timestamp)
    if len(segments) == 1 and isinstance(segments[0], list):
        return segments[0]
    rows: list[Row] = []
    for segment in segments:
        rows.extend(segment if isinstance(segment, list) else zip(*segment, strict=True))
    return rows


Columns = tuple[
    tuple[int, ...],
    tuple[int, ...],
    tuple[bytes | None, ...],
    tuple[bytes | None, ...],
    tuple[Headers, ...],
]
Segment = list[Row] | Columns  # records read one by one, or a run read column-wise


def _decode_segments(
    data: bytes, count: int, base_offset: int, base_timestamp: int
) -> list[Segment]:
    """The records of an uncompressed records area, in order, as rows or columns.

    Runs of records with the same shape (what one producer's batch of equal-sized
    values is made of) are read column-wise by C code (_uniform_run, _run_columns);
    the others, record by record (_decode_some). A failed run attempt doubles the
    number of records read one by one before the next attempt, so batches of
    varied records pay for O(log count) attempts only.
    """
    segments: list[Segment] = []
    rows: list[Row] = []
    pos = 0
    done = 0
    singles = _SINGLES_MIN
    while done < count:
        left = count - done
        run = _uniform_run(data, pos, left) if left >= _RUN_MIN else None
        if run is not None:
            if rows:
                segments.append(rows)
                rows = []
            segments.append(_run_columns(data, pos, run, base_offset, base_timestamp))
            pos += run.size * run.stride
            done += run.size
            singles = _SINGLES_MIN
        else:
            n = min(singles, left)
            pos = _decode_some(rows, data, pos, n, base_offset, base_timestamp)
            done += n
            singles = min(singles * 2, _SINGLES_MAX)
    if rows or not segments:
        segments.append(rows)
    if pos != len(data):
        raise CorruptRecordError("bytes left after the declared record count")
    return segments


# A run shorter than this is read record by record: the column set-up would cost more.
_RUN_MIN = 8
_SINGLES_MIN = 8
_SINGLES_MAX = 256
# Byte translation keeping only the continuation bit: b"\0" for a varint's last byte.
_HIGH_BIT = bytes(b & 0x80 for b in range(0x100))
# Compiled "skip a bytes, capture s bytes, skip the rest of the stride" patterns. A
# one-group findall returns the captures as a list of bytes: no tuple per record,
# so nothing per record for the cyclic garbage collector to count and traverse.
_FIELD_PATTERNS: dict[tuple[int, int, int], re.Pattern[bytes]] = {}
_FIELD_PATTERNS_MAX = 256


class _Run(NamedTuple):
    """`size` records of `stride` bytes each, laid out alike (see _uniform_run).

    Positions are within a record; a width of 2 means a 2-byte varint, else 1.
    A field position of -1 means the field is null in every record of the run.
    """

    size: int
    stride: int
    timestamp_at: int
    timestamp_width: int
    offset_at: int
    offset_width: int
    key_at: int
    key_size: int
    value_at: int
    value_size: int


def _varint_width(rec: bytes, p: int) -> int:
    """1 or 2 for a varint of that width at rec[p], else 0 (wider: not handled by runs)."""
    if rec[p] < 0x80:
        return 1
    return 2 if rec[p + 1] < 0x80 else 0


def _length_field(rec: bytes, p: int) -> tuple[int, int, bool]:
    """(width, length, null) of the 1- or 2-byte length varint at rec[p]; width 0 if other."""
    b = rec[p]
    if b == 1:
        return 1, 0, True
    if b < 0x80:
        size = _L1[b]
        return (0, 0, False) if size is None else (1, size, False)
    row = _L2[b]
    c = rec[p + 1]
    size = None if row is None or c >= 0x80 else row[c]
    return (0, 0, False) if size is None else (2, size, False)


def _uniform_run(data: bytes, pos: int, left: int) -> _Run | None:
    """How many records from `pos` have the shape of the one at `pos`, if at least _RUN_MIN.

    Shape: every varint 1 or 2 bytes, no headers, and the same bytes for the
    length, key length and value length fields, and the same widths of the
    timestamp and offset deltas. Records of one shape have one length, so the
    n-th starts n strides on (by induction over the equal length bytes), and one
    struct format reads them all. Checked by strided slices, in C.
    """
    try:
        lb, length, null = _length_field(data, pos)
        if not lb or null or length < 2:
            return None
        stride = lb + length
        rec = data[pos : pos + stride]
        p = lb + 1  # attributes: unused in v2
        tw = _varint_width(rec, p)
        ow = _varint_width(rec, p + tw) if tw else 0
        if not ow:
            return None
        p += tw + ow
        kb, key_size, key_null = _length_field(rec, p)
        if not kb:
            return None
        p += kb + key_size
        vb, value_size, value_null = _length_field(rec, p)
        if not vb:
            return None
        p += vb + value_size
        if p != stride - 1 or rec[p] != 0:
            return None
    except IndexError:
        return None
    n = min(left, (len(data) - pos) // stride)
    if n < _RUN_MIN:
        return None
    stop = pos + n * stride
    # Positions in the record whose byte must be the same in all, and the varint bytes.
    same = [*range(lb), *range(p - value_size - vb - key_size - kb, p - value_size - vb - key_size)]
    same += [*range(p - value_size - vb, p - value_size), stride - 1]
    for a in same:
        column = data[pos + a : stop : stride]
        n = min(n, len(column) - len(column.lstrip(rec[a : a + 1])))
    delta_at = lb + 1
    for width in (tw, ow):
        for i in range(width):
            column = data[pos + delta_at + i : stop : stride].translate(_HIGH_BIT)
            n = min(n, len(column) - len(column.lstrip(b"\x80" if i < width - 1 else b"\0")))
        delta_at += width
    if n < _RUN_MIN:
        return None
    value_at = p - value_size
    key_at = value_at - vb - key_size
    return _Run(
        n,
        stride,
        lb + 1,
        tw,
        lb + 1 + tw,
        ow,
        -1 if key_null else key_at,
        key_size,
        -1 if value_null else value_at,
        value_size,
    )


def _run_columns(
    data: bytes, pos: int, run: _Run, base_offset: int, base_timestamp: int
) -> Columns:
    """The columns of a run found by _uniform_run, built by C loops (slices, map, re)."""
    n = run.size
    stride = run.stride
    end = pos + n * stride
    timestamp_deltas = _strided_varints(
        data, pos + run.timestamp_at, end, stride, run.timestamp_width
    )
    # Records of one batch share few distinct timestamps: one int object each, looked up.
    absolute = {d: base_timestamp + d for d in set(timestamp_deltas)}
    timestamps = tuple(map(absolute.__getitem__, timestamp_deltas))
    deltas = _strided_varints(data, pos + run.offset_at, end, stride, run.offset_width)
    first = deltas[0]
    if deltas == tuple(range(first, first + n)):  # as producers write them: consecutive
        offsets = tuple(range(base_offset + first, base_offset + first + n))
    else:  # gaps, as compaction leaves them
        offsets = tuple(map(base_offset.__add__, deltas))
    nulls: tuple[None, ...] = (None,) * n
    keys = (
        nulls
        if run.key_at < 0
        else _strided_field(data, pos, end, stride, run.key_at, run.key_size)
    )
    values = (
        nulls
        if run.value_at < 0
        else _strided_field(data, pos, end, stride, run.value_at, run.value_size)
    )
    return offsets, timestamps, keys, values, ((),) * n


def _strided_varints(data: bytes, start: int, end: int, stride: int, width: int) -> tuple[int, ...]:
    """The 1- or 2-byte varints at `start`, `start + stride`, ... (widths checked by the caller)."""
    low = data[start:end:stride]
    if width == 1:
        return tuple(map(_V1.__getitem__, low))
    high = data[start + 1 : end : stride]
    return tuple(map(getitem, map(_V2.__getitem__, low), high))  # type: ignore[arg-type]


def _strided_field(
    data: bytes, pos: int, end: int, stride: int, at: int, size: int
) -> tuple[bytes | None, ...]:
    """The `size` bytes at `at` of every record of a run, as one bytes object each."""
    key = (at, size, stride - at - size)
    pattern = _FIELD_PATTERNS.get(key)
    if pattern is None:
        if len(_FIELD_PATTERNS) >= _FIELD_PATTERNS_MAX:
            _FIELD_PATTERNS.clear()
        pattern = _FIELD_PATTERNS[key] = re.compile(b"(?s).{%d}(.{%d}).{%d}" % key)
    return tuple(pattern.findall(data, pos, end))


def _decode_some(
    rows: list[Row], data: bytes, pos: int, n: int, base_offset: int, base_timestamp: int
) -> int:
    """Append the rows of `n` records starting at `pos`; return the position after them.

    The fast loop assumes what nearly every record looks like: varints of one or
    two bytes and non-negative lengths (the tables turn anything else into
    IndexError or TypeError). Each record is first sliced out of `data` so that
    positions inside it are small ints, which CPython caches, where absolute
    positions past 256 would allocate an int per addition. A record the fast
    loop cannot read goes to _decode_record, which reads it or raises
    CorruptRecordError; the loop then resumes at the next record.
    """
    v1 = _V1
    v2 = _V2
    l1 = _L1
    l2 = _L2
    l1p = _L1P
    l2p = _L2P
    slow = decode_varint
    append = rows.append
    goal = len(rows) + n
    done = len(rows)
    # Each pass consumes at least one record or raises: at most `n` passes.
    while done < goal:
        try:
            for _ in repeat(None, goal - done):
                b = data[pos]
                if b < 0x80:
                    end = pos + l1p[b]  # type: ignore[operator]
                    rec = data[pos:end]
                    p = 2  # past the length and attributes (unused in v2)
                elif (c := data[pos + 1]) < 0x80:
                    end = pos + l2p[b][c]  # type: ignore[index,operator]
                    rec = data[pos:end]
                    p = 3
                else:
                    # 8 KiB or more: copying the record would cost more than
                    # the interpreter work saved by small positions.
                    row, pos = _decode_record(data, pos, base_offset, base_timestamp)
                    append(row)
                    continue
                b = rec[p]
                if b < 0x80:
                    timestamp = base_timestamp + v1[b]
                    p += 1
                elif (c := rec[p + 1]) < 0x80:
                    timestamp = base_timestamp + v2[b][c]  # type: ignore[index]
                    p += 2
                else:
                    delta, p = slow(rec, p, VARLONG_BYTES_MAX)
                    timestamp = base_timestamp + delta
                b = rec[p]
                if b < 0x80:
                    offset = base_offset + v1[b]
                    p += 1
                elif (c := rec[p + 1]) < 0x80:
                    offset = base_offset + v2[b][c]  # type: ignore[index]
                    p += 2
                else:
                    delta, p = slow(rec, p, VARINT_BYTES_MAX)
                    offset = base_offset + delta
                b = rec[p]
                if b == 1:  # -1: null key
                    key = None
                    p += 1
                elif b < 0x80:
                    size = l1[b]
                    p += 1
                    key = rec[p : p + size]  # type: ignore[operator]
                    p += size  # type: ignore[operator]
                else:
                    size = l2[b][rec[p + 1]]  # type: ignore[index]
                    p += 2
                    key = rec[p : p + size]  # type: ignore[operator]
                    p += size  # type: ignore[operator]
                # The value runs to the record's last byte, a zero header count,
                # unless the record has headers (or is malformed): then
                # _value_and_headers reads the rest with every check.
                b = rec[p]
                if b == 1:  # -1: null value
                    p += 1
                    if p + 1 != len(rec) or rec[p]:
                        append((offset, timestamp, key, *_value_and_headers(rec, p, -1)))
                    else:
                        append((offset, timestamp, key, None, ()))
                else:
                    if b < 0x80:
                        size = l1[b]
                        p += 1
                    else:
                        size = l2[b][rec[p + 1]]  # type: ignore[index]
                        p += 2
                    value = rec[p:-1]
                    # rec[p + size] also rejects p == len(rec) with size 0.
                    if len(value) != size or rec[p + size]:
                        append((offset, timestamp, key, *_value_and_headers(rec, p, size)))  # type: ignore[arg-type]
                    else:
                        append((offset, timestamp, key, value, ()))
                pos = end
        except (IndexError, TypeError):
            row, pos = _decode_record(data, pos, base_offset, base_timestamp)
            append(row)
        done = len(rows)
    return pos


def _value_and_headers(rec: bytes, pos: int, size: int) -> tuple[bytes | None, Headers]:
    """The value of `size` bytes (-1: null) at `pos` and the headers after it, ending `rec`."""
    value = None
    if size >= 0:
        value = rec[pos : pos + size]
        pos += size
    end = len(rec)
    try:
        if rec[pos] == 0:
            headers: Headers = ()
            pos += 1
        else:
            headers, pos = _decode_headers(rec, pos, end)
    except IndexError:
        raise CorruptRecordError("record runs past the end of the batch") from None
    if pos != end:
        raise CorruptRecordError("record fields do not match its length")
    return value, headers


def _decode_record(data: bytes, pos: int, base_offset: int, base_timestamp: int) -> tuple[Row, int]:
    """The record at `pos` and the position after it, read with every check; any varint width."""
    # The 1- and 2-byte cases are inlined: a call per varint would triple the cost.
    v1 = _V1
    v2 = _V2
    slow = decode_varint
    try:
        b = data[pos]
        if b < 0x80:
            length = v1[b]
            pos += 1
        elif (c := data[pos + 1]) < 0x80:
            length = v2[b][c]  # type: ignore[index]
            pos += 2
        else:
            length, pos = slow(data, pos, VARINT_BYTES_MAX)
        # end may lie past the data or before pos: the pos != end check
        # below and IndexError on any read past the data catch both.
        end = pos + length
        pos += 1  # attributes: unused in v2
        b = data[pos]
        if b < 0x80:
            timestamp_delta = v1[b]
            pos += 1
        elif (c := data[pos + 1]) < 0x80:
            timestamp_delta = v2[b][c]  # type: ignore[index]
            pos += 2
        else:
            timestamp_delta, pos = slow(data, pos, VARLONG_BYTES_MAX)
        b = data[pos]
        if b < 0x80:
            offset_delta = v1[b]
            pos += 1
        elif (c := data[pos + 1]) < 0x80:
            offset_delta = v2[b][c]  # type: ignore[index]
            pos += 2
        else:
            offset_delta, pos = slow(data, pos, VARINT_BYTES_MAX)
        key = None
        b = data[pos]
        if b == 1:  # -1: null key
            pos += 1
        else:
            if b < 0x80:
                size = v1[b]
                pos += 1
            elif (c := data[pos + 1]) < 0x80:
                size = v2[b][c]  # type: ignore[index]
                pos += 2
            else:
                size, pos = slow(data, pos, VARINT_BYTES_MAX)
            if size < 0:
                raise CorruptRecordError(f"key length {size}")
            key = data[pos : pos + size]
            pos += size
        value = None
        b = data[pos]
        if b == 1:  # -1: null value
            pos += 1
        else:
            if b < 0x80:
                size = v1[b]
                pos += 1
            elif (c := data[pos + 1]) < 0x80:
                size = v2[b][c]  # type: ignore[index]
                pos += 2
            else:
                size, pos = slow(data, pos, VARINT_BYTES_MAX)
            if size < 0:
                raise CorruptRecordError(f"value length {size}")
            value = data[pos : pos + size]
            pos += size
        if data[pos] == 0:
            headers: Headers = ()
            pos += 1
        else:
            headers, pos = _decode_headers(data, pos, end)
    except IndexError:
        raise CorruptRecordError("record runs past the end of the batch") from None
    if pos != end:
        raise CorruptRecordError("record fields do not match its length")
    return (base_offset + offset_delta, base_timestamp + timestamp_delta, key, value, headers), pos


def _decode_headers(
    data: bytes, pos: int, end: int
) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = decode_varint(data, pos, VARINT_BYTES_MAX)
    # Each header takes at least two bytes: bounds the loop on a hostile count.
    if count < 0 or count * 2 > end - pos:
        raise CorruptRecordError(f"header count {count} out of range")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        size, pos = decode_varint(data, pos, VARINT_BYTES_MAX)
        if size < 0 or pos + size > end:
            raise CorruptRecordError(f"header key length {size}")
        try:
            name = data[pos : pos + size].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptRecordError("header key is not UTF-8") from None
        pos += size
        size, pos = decode_varint(data, pos, VARINT_BYTES_MAX)
        if size < -1 or pos + size > end:
            raise CorruptRecordError(f"header value length {size}")
        if size == -1:
            headers.append((name, None))
        else:
            headers.append((name, data[pos : pos + size]))
            pos += size
    return tuple(headers), pos


def _encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    parts = [encode_varint(len(headers))]
    for name, value in headers:
        raw = name.encode("utf-8")
        parts.append(encode_varint(len(raw)))
        parts.append(raw)
        if value is None:
            parts.append(_ENC_NULL)
        else:
            value = bytes(value)
            parts.append(encode_varint(len(value)))
            parts.append(value)
    return b"".join(parts)


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise LocalProtocolError(
        f"record keys and values must be bytes or None, not {type(data).__name__}"
    )


class RecordBatchBuilder:
    """Accumulates records into one v2 batch; build() returns its bytes with a correct CRC.

    append() refuses (returns False) a record that would take the batch past
    `batch_bytes_max`, except the first: a record larger than the limit still
    travels alone, as Kafka producers do. The size counted is the uncompressed
    one (an upper bound of what is sent).
    """

    __slots__ = (
        "_base_sequence",
        "_base_timestamp",
        "_batch_bytes_max",
        "_compression",
        "_compression_level",
        "_count",
        "_is_transactional",
        "_max_timestamp",
        "_partition_leader_epoch",
        "_parts",
        "_producer_epoch",
        "_producer_id",
        "_size_bytes",
    )

    def __init__(
        self,
        *,
        compression: int = Codec.NONE,
        batch_bytes_max: int = 1024 * 1024,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = NO_PRODUCER_EPOCH,
        base_sequence: int = NO_SEQUENCE,
        is_transactional: bool = False,
        partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
        compression_level: int | None = None,
    ) -> None:
        if compression not in Codec.__members__.values():
            raise UnsupportedCodecError(f"unknown compression codec {compression}")
        self._compression = int(compression)
        self._compression_level = compression_level
        self._batch_bytes_max = batch_bytes_max
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._is_transactional = is_transactional
        self._partition_leader_epoch = partition_leader_epoch
        self._parts: list[bytes] = []
        self._count = 0
        self._size_bytes = BATCH_HEADER_BYTES
        self._base_timestamp = 0
        self._max_timestamp = 0

    @property
    def record_count(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes of the batch so far if it were built uncompressed."""
        return self._size_bytes

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        timestamp_ms: int,
    ) -> bool:
        """Add one record; False (and nothing added) if it would pass batch_bytes_max."""
        count = self._count
        if count:
            timestamp_delta = timestamp_ms - self._base_timestamp
            if timestamp_ms > self._max_timestamp:
                self._max_timestamp = timestamp_ms
        else:
            self._base_timestamp = self._max_timestamp = timestamp_ms
            timestamp_delta = 0
        enc = _ENC
        delta_bytes = (
            enc[timestamp_delta]
            if 0 <= timestamp_delta < _ENC_LIMIT
            else encode_varint(timestamp_delta)
        )
        offset_bytes = enc[count] if count < _ENC_LIMIT else encode_varint(count)
        if key is None:
            key_len_bytes = _ENC_NULL
            key = b""
        else:
            if type(key) is not bytes:
                key = _as_bytes(key)
            key_len = len(key)
            key_len_bytes = enc[key_len] if key_len < _ENC_LIMIT else encode_varint(key_len)
        if value is None:
            value_len_bytes = _ENC_NULL
            value = b""
        else:
            if type(value) is not bytes:
                value = _as_bytes(value)
            value_len = len(value)
            value_len_bytes = enc[value_len] if value_len < _ENC_LIMIT else encode_varint(value_len)
        header_bytes = _encode_headers(headers) if headers else b"\x00"
        body_len = (
            1
            + len(delta_bytes)
            + len(offset_bytes)
            + len(key_len_bytes)
            + len(key)
            + len(value_len_bytes)
            + len(value)
            + len(header_bytes)
        )
        length_bytes = enc[body_len] if body_len < _ENC_LIMIT else encode_varint(body_len)
        size = self._size_bytes + body_len + len(length_bytes)
        if size > self._batch_bytes_max and count:
            return False
        self._parts += (
            length_bytes,
            b"\x00",
            delta_bytes,
            offset_bytes,
            key_len_bytes,
            key,
            value_len_bytes,
            value,
            header_bytes,
        )
        self._size_bytes = size
        self._count = count + 1
        return True

    def build(self, *, base_offset: int = 0) -> bytes:
        """The finished batch, compressed as configured, CRC-32C filled in."""
        if not self._count:
            raise LocalProtocolError("a record batch needs at least one record")
        payload = b"".join(self._parts)
        attributes = self._compression
        if attributes:
            payload = compress(attributes, payload, level=self._compression_level)
        if self._is_transactional:
            attributes |= TRANSACTIONAL_MASK
        return _assemble(
            base_offset,
            self._partition_leader_epoch,
            attributes,
            self._count - 1,
            self._base_timestamp,
            self._max_timestamp,
            self._producer_id,
            self._producer_epoch,
            self._base_sequence,
            self._count,
            payload,
        )


def _assemble(
    base_offset: int,
    partition_leader_epoch: int,
    attributes: int,
    last_offset_delta: int,
    base_timestamp: int,
    max_timestamp: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    count: int,
    payload: bytes,
) -> bytes:
    fields = (
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    try:
        head = HEADER_STRUCT.pack(
            base_offset,
            BATCH_LENGTH_MIN + len(payload),
            partition_leader_epoch,
            MAGIC_V2,
            0,
            *fields,
        )
    except struct.error as exc:
        raise LocalProtocolError(f"record batch field out of range: {exc}") from None
    crc = crc32c(payload, crc32c(head[ATTRIBUTES_OFFSET:]))
    return b"".join((head[:CRC_OFFSET], _UINT32.pack(crc), head[ATTRIBUTES_OFFSET:], payload))


def build_control_batch(
    *,
    control_type: int,
    producer_id: int,
    producer_epoch: int,
    timestamp_ms: int,
    coordinator_epoch: int = 0,
    base_offset: int = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
) -> bytes:
    """A transaction marker: a transactional control batch holding one control record."""
    key = _CONTROL_KEY.pack(0, control_type)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    body = b"".join(
        (b"\x00", _ENC[0], _ENC[0], _ENC[len(key)], key, _ENC[len(value)], value, b"\x00")
    )
    payload = encode_varint(len(body)) + body
    return _assemble(
        base_offset,
        partition_leader_epoch,
        CONTROL_MASK | TRANSACTIONAL_MASK,
        0,
        timestamp_ms,
        timestamp_ms,
        producer_id,
        producer_epoch,
        NO_SEQUENCE,
        1,
        payload,
    )


def encode_batch(
    records: Sequence[Record],
    *,
    base_timestamp: int,
    compression: int = Codec.NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    is_transactional: bool = False,
    base_offset: int = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
) -> bytes:
    """Encode records with explicit deltas (any order, gaps allowed: as after compaction)."""
    if not records:
        raise LocalProtocolError("a record batch needs at least one record")
    parts = []
    max_timestamp = base_timestamp
    last_offset_delta = 0
    for record in records:
        body = b"".join(
            (
                b"\x00",
                encode_varint(record.timestamp_delta),
                encode_varint(record.offset_delta),
                _ENC_NULL if record.key is None else encode_varint(len(record.key)),
                record.key or b"",
                _ENC_NULL if record.value is None else encode_varint(len(record.value)),
                record.value or b"",
                _encode_headers(record.headers) if record.headers else b"\x00",
            )
        )
        parts.append(encode_varint(len(body)))
        parts.append(body)
        max_timestamp = max(max_timestamp, base_timestamp + record.timestamp_delta)
        last_offset_delta = max(last_offset_delta, record.offset_delta)
    payload = b"".join(parts)
    attributes = int(compression)
    if attributes:
        payload = compress(attributes, payload)
    if is_transactional:
        attributes |= TRANSACTIONAL_MASK
    return _assemble(
        base_offset,
        partition_leader_epoch,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
        payload,
    )
