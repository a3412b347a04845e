"""Hostile record batches (bad-input.md section 6.4): only our typed errors, bounded work and memory."""

from __future__ import annotations

import contextlib
import resource
import struct

import cramjam
import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.protocol import records as r
from client.protocol.compression import Codec, compress, decompress
from client.protocol.exceptions import CorruptRecordError, UnsupportedCodecError
from client.protocol.records import (
    InvalidRecordError,
    RecordBatchBuilder,
    decode_batch,
    split_batches,
    validate_batch,
)

TYPED = (CorruptRecordError, UnsupportedCodecError)


def _good(codec: int = Codec.NONE, n: int = 3) -> bytes:
    builder = RecordBatchBuilder(compression=codec)
    for i in range(n):
        builder.append(b"key%d" % i, b"value" * i, [("h", b"x")], 1000 + i)
    return builder.build()


def _crafted(
    payload: bytes, count: int, attributes: int = 0, last_offset_delta: int | None = None
) -> bytes:
    """A batch with a correct CRC around an arbitrary records area."""
    lod = count - 1 if last_offset_delta is None else last_offset_delta
    return r._assemble(0, -1, attributes, lod, 0, 0, -1, -1, -1, count, payload)


def _resign(buf: bytes | bytearray) -> bytes:
    buf = bytearray(buf)
    struct.pack_into(">I", buf, r.CRC_OFFSET, crc32c(bytes(buf[r.ATTRIBUTES_OFFSET :])))
    return bytes(buf)


def test_flipped_record_byte_is_corrupt_message() -> None:  # P1
    buf = bytearray(_good())
    buf[-3] ^= 0x40
    with pytest.raises(CorruptRecordError) as info:
        validate_batch(bytes(buf))
    assert type(info.value) is CorruptRecordError  # CORRUPT_MESSAGE, not INVALID_RECORD
    assert not r.batch_crc_ok(bytes(buf))


def test_corrupt_crc_field() -> None:  # P2
    buf = bytearray(_good())
    buf[r.CRC_OFFSET] ^= 1
    with pytest.raises(CorruptRecordError):
        decode_batch(bytes(buf))


def test_truncated_batch_is_invalid_record() -> None:  # P3
    buf = _good()
    for cut in (1, 10, len(buf) - 61, len(buf) - 13):
        with pytest.raises(InvalidRecordError):
            validate_batch(buf[:-cut])
    with pytest.raises(InvalidRecordError):
        validate_batch(b"")  # P7


@pytest.mark.parametrize("batch_length", [-1, -(2**31), 0, 48])
def test_batch_length_below_header_is_corrupt(batch_length: int) -> None:  # P4
    buf = bytearray(_good())
    struct.pack_into(">i", buf, r.BATCH_LENGTH_OFFSET, batch_length)
    with pytest.raises(CorruptRecordError) as info:
        validate_batch(bytes(buf))
    assert type(info.value) is CorruptRecordError
    with pytest.raises(CorruptRecordError):
        split_batches(bytes(buf))


def test_batch_length_beyond_buffer() -> None:
    buf = bytearray(_good())
    struct.pack_into(">i", buf, r.BATCH_LENGTH_OFFSET, 2**31 - 1)
    with pytest.raises(InvalidRecordError):
        validate_batch(bytes(buf))
    assert split_batches(bytes(buf)) == []  # a Fetch reader treats it as a partial tail


@pytest.mark.parametrize("magic", [0, 1, 3, -1])
def test_bad_magic_is_invalid_record(magic: int) -> None:  # P5
    buf = bytearray(_good())
    struct.pack_into(">b", buf, r.MAGIC_OFFSET, magic)
    with pytest.raises(InvalidRecordError):
        validate_batch(bytes(buf))


def test_unknown_codec_ids() -> None:  # P13
    for codec in (5, 6, 7):
        buf = _crafted(b"\x00" * 10, 1, attributes=codec)
        with pytest.raises(UnsupportedCodecError):
            validate_batch(buf)
        with pytest.raises(UnsupportedCodecError):
            decompress(codec, b"x", decompressed_bytes_max=10)


def test_huge_record_count_in_a_tiny_body() -> None:
    for attributes in (Codec.NONE, Codec.LZ4):
        payload = compress(attributes, b"\x0e\x00\x00\x00\x01\x01\x00" * 2)
        buf = _crafted(payload, 2**31 - 1, attributes=attributes, last_offset_delta=2**31 - 2)
        with pytest.raises(CorruptRecordError):
            validate_batch(buf) if attributes == Codec.NONE else decode_batch(buf)
        with pytest.raises(CorruptRecordError):
            decode_batch(buf)


def test_count_disagrees_with_records() -> None:  # P9
    good = _good(n=3)
    for count in (2, 4):
        buf = bytearray(good)
        struct.pack_into(">i", buf, r.RECORDS_COUNT_OFFSET, count)
        struct.pack_into(">i", buf, r.LAST_OFFSET_DELTA_OFFSET, count - 1)
        validate_batch(_resign(buf))  # the header alone agrees with itself
        with pytest.raises(CorruptRecordError):
            decode_batch(_resign(buf))
    buf = bytearray(good)
    struct.pack_into(">i", buf, r.RECORDS_COUNT_OFFSET, -5)
    with pytest.raises(CorruptRecordError):
        decode_batch(_resign(buf))


@pytest.mark.parametrize(
    "record",
    [
        b"\xff\xff\xff\xff\xff\x01\x00\x00",  # record length varint of 6 bytes
        b"\x0e\x00" + b"\xff" * 10 + b"\x01",  # timestampDelta varlong of 11 bytes
        b"\x0e\x00\x00" + b"\xff" * 5 + b"\x01",  # offsetDelta varint of 6 bytes
        b"\x0e\x00\x00\x00\xff\xff\xff\xff\x7f\x00",  # key length beyond int32 in 5 bytes
        b"\x0e\x00\x00\x00\x03\x01\x00",  # key length -2
        b"\x0e\x00\x00\x00\x01\x03\x00",  # value length -2
        b"\x0e\x00\x00\x00\x01\x01\xfe\xff\xff\xff\x0f",  # header count 2^31-1
        b"\x10\x00\x00\x00\x01\x01\x02\x01\x00",  # header key length -1
        b"\x14\x00\x00\x00\x01\x01\x02\x04\xff\xfe\x01",  # header key not UTF-8
        b"\x10\x00\x00\x00\x01\x01\x00",  # length says more than is there
        b"\x0c\x00\x00\x00\x01\x01\x00\x00\x00",  # bytes after the last record
        b"\x0e\x00\x00\x00\x01\xfe\xff\xff\xff\x0f\x00",  # value length 2^31-1
    ],
)
def test_bad_record_fields(record: bytes) -> None:
    with pytest.raises(CorruptRecordError):
        decode_batch(_crafted(record, 1))


def test_invalid_header_key_utf8() -> None:
    body = b"\x00\x00\x00\x01\x01\x02\x04\xc3\x28\x01"  # key b"\xc3\x28", null value
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        decode_batch(_crafted(r.encode_varint(len(body)) + body, 1))


@pytest.mark.parametrize("codec", [Codec.GZIP, Codec.SNAPPY, Codec.LZ4, Codec.ZSTD])
def test_garbage_compressed_payload(codec: Codec) -> None:  # P14
    garbage = bytes(range(7, 250)) * 3
    with pytest.raises(CorruptRecordError):
        decode_batch(_crafted(garbage, 1, attributes=codec))
    truncated = compress(codec, b"some records " * 100)[:-7]
    with pytest.raises(CorruptRecordError):
        decode_batch(_crafted(truncated, 1, attributes=codec))


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("codec", [Codec.GZIP, Codec.SNAPPY, Codec.LZ4, Codec.ZSTD])
def test_zip_bomb_is_refused_in_bounded_memory(codec: Codec) -> None:
    bomb_bytes = 512 * 1024 * 1024
    chunk = bytes(1024 * 1024)
    if codec == Codec.GZIP:
        payload = compress(codec, bytes(64 * 1024 * 1024))  # deflate tops out near 1000:1
    elif codec == Codec.SNAPPY:
        # A xerial frame claiming many 32 KiB blocks of zeros.
        block = bytes(cramjam.snappy.compress_raw(bytes(32 * 1024)))
        payload = (
            b"\x82SNAPPY\x00"
            + struct.pack(">ii", 1, 1)
            + (struct.pack(">i", len(block)) + block) * (bomb_bytes // (32 * 1024))
        )
    else:
        module = cramjam.lz4 if codec == Codec.LZ4 else cramjam.zstd
        compressor = module.Compressor()
        for _ in range(bomb_bytes // len(chunk)):
            compressor.compress(chunk)
        payload = bytes(compressor.finish())
    before = _max_rss_bytes()
    with pytest.raises(CorruptRecordError):
        decode_batch(_crafted(payload, 1, attributes=codec), decompressed_bytes_max=1024 * 1024)
    assert _max_rss_bytes() - before < 64 * 1024 * 1024


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    for fn in (
        lambda b: validate_batch(b),
        lambda b: validate_batch(b, produce=False),
        lambda b: decode_batch(b, decompressed_bytes_max=1 << 16),
        lambda b: r.decode_batches(b, decompressed_bytes_max=1 << 16),
        lambda b: r._decode_records(b, 3, 0, 0),
    ):
        with contextlib.suppress(TYPED):
            fn(data)


@settings(max_examples=300, deadline=None)
@given(
    codec=st.sampled_from(list(Codec)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 30),
    resign=st.booleans(),
)
def test_fuzz_mutated_batches(codec: Codec, edits, cut: int, resign: bool) -> None:
    """Structure-aware: mutate a valid batch (optionally re-signing the CRC so records get parsed)."""
    buf = bytearray(_good(codec, n=4))
    for pos, byte in edits:
        buf[pos % len(buf)] = byte
    if cut:
        del buf[-cut:]
    data = _resign(buf) if resign and len(buf) > r.ATTRIBUTES_OFFSET else bytes(buf)
    try:
        decoded = decode_batch(data, decompressed_bytes_max=1 << 16)
    except TYPED:
        return
    assert len(decoded.records) == decoded.header.record_count
