"""Record batch v2: round trips, layout, stamping, control batches, multi-batch walking."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from client.protocol import records as r
from client.protocol.compression import Codec, compress, decompress
from client.protocol.exceptions import CorruptRecordError, LocalProtocolError
from client.protocol.records import (
    BatchHeader,
    Record,
    RecordBatchBuilder,
    decode_batch,
    decode_batches,
    encode_batch,
    iter_batches,
    read_batch_header,
    split_batches,
    stamp_batch,
    stamped_batch,
    validate_batch,
)

nullable_bytes = st.none() | st.binary(max_size=300)
headers_st = st.lists(
    st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=20)), max_size=3
).map(tuple)
record_input = st.tuples(nullable_bytes, nullable_bytes, headers_st, st.integers(-(10**6), 10**6))


def _build(items: list, codec: int = Codec.NONE, **kw: object) -> bytes:
    builder = RecordBatchBuilder(compression=codec, batch_bytes_max=1 << 30, **kw)  # type: ignore[arg-type]
    for key, value, headers, ts in items:
        assert builder.append(key, value, headers, ts)
    return builder.build()


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(record_input, min_size=1, max_size=20),
    codec=st.sampled_from(list(Codec)),
    base_ts=st.integers(0, 2**41),
    producer=st.tuples(
        st.integers(-1, 2**63 - 1), st.integers(-1, 2**15 - 1), st.integers(-1, 2**31 - 1)
    ),
    transactional=st.booleans(),
)
def test_builder_round_trip(items, codec, base_ts, producer, transactional) -> None:
    items = [(k, v, h, base_ts + dt) for k, v, h, dt in items]
    pid, epoch, seq = producer
    buf = _build(
        items,
        codec,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        is_transactional=transactional,
    )
    header = validate_batch(buf, produce=False)
    assert header.magic == 2
    assert header.compression == codec
    assert header.is_transactional == transactional
    assert not header.is_control
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == producer
    assert header.record_count == len(items)
    assert header.last_offset_delta == len(items) - 1
    assert header.batch_bytes == len(buf)
    assert header.base_timestamp == items[0][3]
    assert header.max_timestamp == max(i[3] for i in items)
    decoded = decode_batch(buf)
    assert decoded.header == header
    got = [(x.offset, x.timestamp_ms, x.key, x.value, x.headers) for x in decoded.records]
    want = [(i, ts, k, v, tuple(h)) for i, (k, v, h, ts) in enumerate(items)]
    assert got == want


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 2**31 - 1), unique=True, min_size=1, max_size=10).map(sorted),
    fields=st.lists(
        st.tuples(st.integers(-(2**40), 2**40), nullable_bytes, nullable_bytes, headers_st),
        min_size=10,
        max_size=10,
    ),
    codec=st.sampled_from(list(Codec)),
)
def test_explicit_deltas_round_trip(offsets, fields, codec) -> None:
    recs = [Record(o, *f) for o, f in zip(offsets, fields)]
    """Negative timestamp deltas, gaps in offsets (as after compaction), large varints."""
    base_ts = 2**42
    buf = encode_batch(recs, base_timestamp=base_ts, compression=codec, base_offset=1000)
    decoded = decode_batch(buf)
    assert [
        (x.offset - 1000, x.timestamp_ms - base_ts, x.key, x.value, x.headers)
        for x in decoded.records
    ] == [(x.offset_delta, x.timestamp_delta, x.key, x.value, tuple(x.headers)) for x in recs]


def test_header_layout_offsets_match_the_struct() -> None:
    buf = _build([(b"k", b"v", (), 5)], producer_id=7, producer_epoch=3, base_sequence=11)
    assert struct.unpack_from(">q", buf, r.BASE_OFFSET_OFFSET)[0] == 0
    assert struct.unpack_from(">i", buf, r.BATCH_LENGTH_OFFSET)[0] == len(buf) - 12
    assert buf[r.MAGIC_OFFSET] == 2
    assert struct.unpack_from(">I", buf, r.CRC_OFFSET)[0] == crc32c(buf[r.ATTRIBUTES_OFFSET :])
    assert struct.unpack_from(">q", buf, r.PRODUCER_ID_OFFSET)[0] == 7
    assert struct.unpack_from(">h", buf, r.PRODUCER_EPOCH_OFFSET)[0] == 3
    assert struct.unpack_from(">i", buf, r.BASE_SEQUENCE_OFFSET)[0] == 11
    assert struct.unpack_from(">i", buf, r.RECORDS_COUNT_OFFSET)[0] == 1
    assert struct.unpack_from(">q", buf, r.BASE_TIMESTAMP_OFFSET)[0] == 5
    assert struct.unpack_from(">q", buf, r.MAX_TIMESTAMP_OFFSET)[0] == 5
    assert r.RECORDS_OFFSET == 61
    assert isinstance(read_batch_header(buf), BatchHeader)


@settings(max_examples=30, deadline=None)
@given(
    base_offset=st.integers(0, 2**63 - 1),
    epoch=st.integers(-1, 2**31 - 1),
    codec=st.sampled_from(list(Codec)),
)
def test_stamping_keeps_the_crc_valid(base_offset, epoch, codec) -> None:
    buf = _build([(b"k", b"v" * 50, (), 1), (None, b"w", (), 2)], codec)
    copy = stamped_batch(buf, base_offset, epoch)
    mutable = bytearray(buf)
    stamp_batch(mutable, base_offset, epoch)
    assert bytes(mutable) == copy
    assert copy[r.ATTRIBUTES_OFFSET :] == buf[r.ATTRIBUTES_OFFSET :]
    header = validate_batch(copy, produce=False)
    assert (header.base_offset, header.partition_leader_epoch) == (base_offset, epoch)
    assert r.batch_crc_ok(copy)
    if base_offset <= 2**62:
        assert [x.offset for x in decode_batch(copy).records] == [base_offset, base_offset + 1]
    # A stamped batch is no longer acceptable as a client's produce batch.
    if base_offset:
        with pytest.raises(r.InvalidRecordError):
            validate_batch(copy)


def test_stamp_through_a_memoryview_of_a_larger_buffer() -> None:
    one = _build([(b"a", b"b", (), 1)])
    two = _build([(b"c", b"d", (), 2), (b"e", b"f", (), 3)])
    joined = bytearray(one + two)
    for i, view in enumerate(iter_batches(joined)):
        stamp_batch(view, 10 * i, 4)
    del view
    offsets = [x.offset for b in decode_batches(joined) for x in b.records]
    assert offsets == [0, 10, 11]


def test_control_batch_decodes_its_marker() -> None:
    buf = r.build_control_batch(
        control_type=r.CONTROL_TYPE_COMMIT,
        producer_id=42,
        producer_epoch=2,
        coordinator_epoch=9,
        timestamp_ms=1234,
        base_offset=77,
    )
    header = validate_batch(buf, produce=False)
    assert header.is_control and header.is_transactional
    decoded = decode_batch(buf)
    assert decoded.control == r.ControlRecord(
        version=0, type=r.CONTROL_TYPE_COMMIT, coordinator_epoch=9
    )
    assert decoded.records[0].offset == 77
    with pytest.raises(r.InvalidRecordError):
        validate_batch(stamped_batch(buf, 0, -1))  # clients may not write control batches
    plain = decode_batch(_build([(b"k", b"v", (), 1)]))
    assert plain.control is None


def test_multi_batch_split_and_partial_tail() -> None:
    batches = [_build([(b"k%d" % i, b"v" * i, (), i)]) for i in range(1, 4)]
    joined = b"".join(batches)
    assert [bytes(v) for v in split_batches(joined)] == batches
    for cut in range(1, len(batches[-1])):
        views = split_batches(joined[:-cut])
        assert [bytes(v) for v in views] == batches[:2]
    assert split_batches(b"") == []
    assert split_batches(joined[:11]) == []
    assert len(decode_batches(joined + batches[0][:30])) == 3
    # A second batch in one produce records field is refused.
    with pytest.raises(r.InvalidRecordError):
        validate_batch(joined)


def test_builder_respects_batch_bytes_max() -> None:
    builder = RecordBatchBuilder(batch_bytes_max=400)
    assert builder.append(None, b"x" * 1000, (), 0)  # the first record always fits
    assert not builder.append(None, b"x", (), 0)
    builder = RecordBatchBuilder(batch_bytes_max=400)
    accepted = 0
    while builder.append(None, b"x" * 50, (), 0):
        accepted += 1
    buf = builder.build()
    assert len(buf) <= 400 and accepted == builder.record_count == 5
    assert builder.size_bytes == len(buf)


def test_builder_rejects_bad_input() -> None:
    with pytest.raises(LocalProtocolError):
        RecordBatchBuilder().build()
    with pytest.raises(LocalProtocolError):
        RecordBatchBuilder().append("text", b"v", (), 0)  # type: ignore[arg-type]
    builder = RecordBatchBuilder()
    builder.append(bytearray(b"k"), memoryview(b"v"), [("h", bytearray(b"x"))], 0)  # type: ignore[list-item]
    assert decode_batch(builder.build()).records[0][2:] == (b"k", b"v", (("h", b"x"),))


def test_produce_validation_rules() -> None:
    good = _build(
        [(None, b"v", (), 1), (None, b"v", (), 2)], producer_id=1, producer_epoch=0, base_sequence=0
    )
    assert validate_batch(good).record_count == 2

    def resigned(buf: bytes | bytearray) -> bytes:
        buf = bytearray(buf)
        struct.pack_into(">I", buf, r.CRC_OFFSET, crc32c(bytes(buf[r.ATTRIBUTES_OFFSET :])))
        return bytes(buf)

    wrong_delta = bytearray(good)
    struct.pack_into(">i", wrong_delta, r.LAST_OFFSET_DELTA_OFFSET, 5)
    with pytest.raises(r.InvalidRecordError):
        validate_batch(resigned(wrong_delta))
    validate_batch(resigned(wrong_delta), produce=False)  # compacted batches have gaps
    no_seq = bytearray(good)
    struct.pack_into(">i", no_seq, r.BASE_SEQUENCE_OFFSET, -1)
    with pytest.raises(r.InvalidRecordError):
        validate_batch(resigned(no_seq))


@pytest.mark.parametrize("codec", list(Codec))
def test_compression_round_trip_and_bound(codec: Codec) -> None:
    data = b"0123456789abcdef" * 4096
    packed = compress(codec, data)
    assert decompress(codec, packed, decompressed_bytes_max=len(data)) == data
    with pytest.raises(CorruptRecordError):
        decompress(codec, packed, decompressed_bytes_max=len(data) - 1)
    assert decompress(codec, compress(codec, b""), decompressed_bytes_max=0) == b""


def test_snappy_reads_raw_blocks_and_xerial_frames() -> None:
    import cramjam

    data = bytes(range(256)) * 500
    raw = bytes(cramjam.snappy.compress_raw(data))
    assert decompress(Codec.SNAPPY, raw, decompressed_bytes_max=len(data)) == data
    framed = compress(Codec.SNAPPY, data)
    assert framed.startswith(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01")
    assert decompress(Codec.SNAPPY, framed, decompressed_bytes_max=len(data)) == data
    # Some producers write version and compat little-endian; they are ignored.
    odd = framed[:8] + b"\x01\x00\x00\x00\x01\x00\x00\x00" + framed[16:]
    assert decompress(Codec.SNAPPY, odd, decompressed_bytes_max=len(data)) == data


def test_varint_helpers() -> None:
    for value in (0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)):
        encoded = r.encode_varint(value)
        assert r.decode_varint(encoded + b"\xff", 0) == (value, len(encoded))
    assert r.encode_varint(300) == b"\xd8\x04"
