"""The record decoder's fast path agrees with the careful one-record decoder, and the columns API.

_decode_rows reads 1- and 2-byte varints by table lookup and hands anything else
to _decode_record. These tests hold the two to the same answers on valid
records of every varint width and on mutated bytes: the same rows, or
CorruptRecordError from both.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.protocol import records as r
from client.protocol.compression import Codec
from client.protocol.exceptions import CorruptRecordError
from client.protocol.records import (
    BatchColumns,
    Record,
    decode_batch,
    decode_batch_columns,
    encode_batch,
)


def _careful(data: bytes, count: int, base_offset: int, base_timestamp: int) -> list[r.Row]:
    """The reference: every record through _decode_record, then no bytes may be left."""
    rows = []
    pos = 0
    for _ in range(count):
        row, pos = r._decode_record(data, pos, base_offset, base_timestamp)
        rows.append(row)
    if pos != len(data):
        raise CorruptRecordError("bytes left after the declared record count")
    return rows


def _outcome(fn, *args) -> object:
    try:
        return fn(*args)
    except CorruptRecordError:
        return CorruptRecordError


def _records_area(batch: bytes) -> bytes:
    return batch[r.RECORDS_OFFSET :]


# Sizes and deltas on both sides of each varint width boundary (1, 2, 3+ bytes).
widths = st.sampled_from([0, 1, 63, 64, 65, 8191, 8192, 8193, 70_000])
blobs = st.none() | widths.map(lambda n: b"k" * n) | st.binary(max_size=40)
headers_st = st.lists(
    st.tuples(st.text(max_size=6), st.none() | st.binary(max_size=10)), max_size=2
).map(tuple)
records_st = st.lists(
    st.tuples(
        widths | st.integers(0, 2**40), blobs, blobs, headers_st, st.sampled_from([0, 0, 62, 8130])
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=records_st, base_offset=st.integers(0, 2**62), base_ts=st.integers(-1, 2**42))
def test_fast_path_matches_careful_on_every_varint_width(
    items, base_offset: int, base_ts: int
) -> None:
    records = []
    offset_delta = -1
    for dt, k, v, h, gap in items:  # increasing deltas with gaps, as compaction leaves them
        offset_delta += 1 + gap
        records.append(Record(offset_delta, dt, k, v, h))
    batch = encode_batch(records, base_timestamp=base_ts, base_offset=base_offset)
    data = _records_area(batch)
    fast = r._decode_rows(data, len(records), base_offset, base_ts)
    assert fast == _careful(data, len(records), base_offset, base_ts)
    want = [
        (base_offset + x.offset_delta, base_ts + x.timestamp_delta, x.key, x.value, x.headers)
        for x in records
    ]
    assert fast == want
    assert [tuple(x) for x in decode_batch(batch).records] == want


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.sampled_from([0, 5, 70, 200]), min_size=1, max_size=4),
    with_headers=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3),
    cut=st.integers(-3, 3),
    count_skew=st.integers(-1, 1),
)
def test_fast_path_matches_careful_on_mutated_bytes(
    sizes, with_headers: bool, edits, cut: int, count_skew: int
) -> None:
    headers = (("h", b"v"),) if with_headers else ()
    records = [
        Record(i, 70 * i, None if i % 2 else b"key", None if i % 3 == 2 else b"v" * n, headers)
        for i, n in enumerate(sizes)
    ]
    data = bytearray(_records_area(encode_batch(records, base_timestamp=10)))
    for pos, byte in edits:
        data[pos % len(data)] = byte
    if cut > 0:
        del data[-cut:]
    elif cut < 0:
        data += b"\x00" * -cut
    count = max(0, len(records) + count_skew)
    got = _outcome(r._decode_rows, bytes(data), count, 7, 10)
    assert got == _outcome(_careful, bytes(data), count, 7, 10)


def test_non_minimal_varints_are_read() -> None:
    """A 2-byte varint for 0 (0x80 0x00) is legal: the fast path hands it to the careful one."""
    body = b"\x00" + b"\x80\x00" + b"\x00" + b"\x01" + b"\x06abc" + b"\x00"
    data = r.encode_varint(len(body)) + body
    assert r._decode_rows(data, 1, 100, 5) == [(100, 5, None, b"abc", ())]


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00\x00\x03abc\x06abc\x00",  # key length -2
        b"\x00\x00\x00\x01\x05abc\x00",  # value length -3
        b"\x00\x00\x00\x01\x00",  # no header count
        b"\x00\x00\x00\x01\x06abc\x00\x00",  # one byte after the record's fields
        b"\x00\x00\x00\x01\x01\x00\x00",  # the same after a null value
        b"\x00\x00\x00\x01\x01",  # null value, no header count
        b"\x00\x00\x00\x01\x06abc\x04\x02h\x01",  # two headers, room for one
    ],
)
def test_malformed_record_raises(body: bytes) -> None:
    data = r.encode_varint(len(body)) + body
    with pytest.raises(CorruptRecordError):
        r._decode_rows(data, 1, 0, 0)


def test_length_shorter_than_fields_raises() -> None:
    body = b"\x00\x00\x00\x01\x06abc\x00"
    data = r.encode_varint(len(body) - 2) + body
    with pytest.raises(CorruptRecordError):
        r._decode_rows(data, 1, 0, 0)


@pytest.mark.parametrize("codec", list(Codec))
def test_columns_match_decode_batch(codec: Codec) -> None:
    records = [
        Record(i * 2, i * 1000, str(i).encode() if i % 3 else None, b"x" * (i * 37), (("n", b"1"),))
        for i in range(300)
    ]
    batch = encode_batch(records, base_timestamp=1_700_000_000_000, compression=codec)
    decoded = decode_batch(batch)
    cols = decode_batch_columns(batch)
    assert isinstance(cols, BatchColumns)
    assert cols.header == decoded.header
    rows = list(zip(cols.offsets, cols.timestamps_ms, cols.keys, cols.values, cols.headers))
    assert rows == [tuple(x) for x in decoded.records]


def test_columns_of_an_empty_batch_are_empty() -> None:
    batch = bytearray(encode_batch([Record(0, 0, None, b"x")], base_timestamp=0))
    # Re-sign a copy whose count and records area say zero records.
    del batch[r.RECORDS_OFFSET :]
    struct.pack_into(">i", batch, r.BATCH_LENGTH_OFFSET, r.BATCH_LENGTH_MIN)
    struct.pack_into(">i", batch, r.RECORDS_COUNT_OFFSET, 0)
    struct.pack_into(">i", batch, r.LAST_OFFSET_DELTA_OFFSET, 0)
    from crc32c import crc32c

    struct.pack_into(">I", batch, r.CRC_OFFSET, crc32c(bytes(batch[r.ATTRIBUTES_OFFSET :])))
    cols = decode_batch_columns(bytes(batch))
    assert cols.offsets == cols.timestamps_ms == cols.keys == cols.values == cols.headers == ()
    assert decode_batch(bytes(batch)).records == ()
