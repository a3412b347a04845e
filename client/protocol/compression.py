"""Kafka's record-batch compression codecs, with Kafka's framings and a bound on output.

A record batch names its codec in attributes bits 0-2. Each codec has a framing
that real clients expect, and which is not always the library default:

- gzip: a standard gzip stream (RFC 1952).
- snappy: we write the xerial block framing that the Java client writes (its
  SnappyOutputStream), and we read both that framing and a raw snappy block
  (librdkafka writes raw blocks; every reader accepts both).
- lz4: the LZ4 frame format with independent blocks and a correct header
  checksum (KIP-57; the broken checksum belonged to magic 0/1 only).
- zstd: a zstd frame.

Decompression is hostile-input code: a batch of a few kilobytes can expand to
gigabytes. Every decoder here writes into bounded memory and raises
CorruptRecordError once the output would pass `decompressed_bytes_max`.
"""

from __future__ import annotations

import struct
import zlib
from enum import IntEnum

import cramjam

from client.protocol.exceptions import CorruptRecordError, UnsupportedCodecError


class Codec(IntEnum):
    """Compression codec ids of attributes bits 0-2."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


CODEC_MASK = 0x07
# Java's SnappyOutputStream: magic, version 1, compatible version 1.
XERIAL_MAGIC = b"\x82SNAPPY\x00"
XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
XERIAL_BLOCK_BYTES = 32 * 1024  # the xerial library's default block size
# Levels Kafka's broker uses by default (KIP-390).
LZ4_LEVEL_DEFAULT = 9
ZSTD_LEVEL_DEFAULT = 3
GZIP_LEVEL_DEFAULT = 6

_BE_INT32 = struct.Struct(">i")
# First guess of the output size of a frame whose size is unknown up front:
# most Kafka batches compress 2-8x.
_GROWTH_START_FACTOR = 8
_GROWTH_START_BYTES_MIN = 64 * 1024
# cramjam's message when the output buffer is full (any other error is garbage input).
_FULL_BUFFER = "failed to write whole buffer"


def compress(
    codec: int, data: bytes | bytearray | memoryview, *, level: int | None = None
) -> bytes:
    """Compress `data` in the framing Kafka readers expect for `codec`."""
    if codec == Codec.NONE:
        return bytes(data)
    if codec == Codec.GZIP:
        return bytes(
            cramjam.gzip.compress(data, level=GZIP_LEVEL_DEFAULT if level is None else level)
        )
    if codec == Codec.SNAPPY:
        return _snappy_xerial_compress(data)
    if codec == Codec.LZ4:
        compressor = cramjam.lz4.Compressor(
            level=LZ4_LEVEL_DEFAULT if level is None else level,
            content_checksum=False,
            block_linked=False,
        )
        compressor.compress(data)
        return bytes(compressor.finish())
    if codec == Codec.ZSTD:
        return bytes(
            cramjam.zstd.compress(data, level=ZSTD_LEVEL_DEFAULT if level is None else level)
        )
    raise UnsupportedCodecError(f"unknown compression codec {codec}")


def decompress(
    codec: int, data: bytes | bytearray | memoryview, *, decompressed_bytes_max: int
) -> bytes:
    """Decompress a batch's records area, never producing more than `decompressed_bytes_max`.

    Raises CorruptRecordError on garbage or on output past the bound, and
    UnsupportedCodecError on a codec id we do not know.
    """
    if decompressed_bytes_max < 0:
        raise ValueError("decompressed_bytes_max must be >= 0")
    if codec == Codec.NONE:
        if len(data) > decompressed_bytes_max:
            raise CorruptRecordError("records area exceeds decompressed_bytes_max")
        return bytes(data)
    if codec == Codec.GZIP:
        return _gzip_decompress(data, decompressed_bytes_max)
    if codec == Codec.SNAPPY:
        return _snappy_decompress(data, decompressed_bytes_max)
    if codec == Codec.LZ4:
        return _grow_into(cramjam.lz4.decompress_into, data, decompressed_bytes_max, "lz4")
    if codec == Codec.ZSTD:
        return _grow_into(cramjam.zstd.decompress_into, data, decompressed_bytes_max, "zstd")
    raise UnsupportedCodecError(f"unknown compression codec {codec}")


def _snappy_xerial_compress(data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data)
    parts = [XERIAL_HEADER]
    for start in range(0, len(view), XERIAL_BLOCK_BYTES):
        block = bytes(cramjam.snappy.compress_raw(view[start : start + XERIAL_BLOCK_BYTES]))
        parts.append(_BE_INT32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _snappy_raw_block(block: bytes | memoryview, room_bytes: int) -> bytes:
    # A raw snappy block starts with its uncompressed length: check it before
    # the library allocates that much.
    try:
        size = cramjam.snappy.decompress_raw_len(block)
    except Exception as exc:  # cramjam raises its own and ValueError types
        raise CorruptRecordError(f"bad snappy block: {exc}") from None
    if size > room_bytes:
        raise CorruptRecordError("snappy payload exceeds decompressed_bytes_max")
    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except Exception as exc:
        raise CorruptRecordError(f"bad snappy block: {exc}") from None


def _snappy_decompress(data: bytes | bytearray | memoryview, bytes_max: int) -> bytes:
    view = memoryview(data)
    if view[: len(XERIAL_MAGIC)] != XERIAL_MAGIC:
        return _snappy_raw_block(view, bytes_max)
    # Xerial framing: 16-byte header (version and compat fields are ignored,
    # some producers write them little-endian), then length-prefixed blocks.
    parts: list[bytes] = []
    total = 0
    pos = len(XERIAL_HEADER)
    end = len(view)
    if end < pos:
        raise CorruptRecordError("truncated xerial snappy header")
    while pos < end:
        if pos + 4 > end:
            raise CorruptRecordError("truncated xerial snappy block length")
        (block_len,) = _BE_INT32.unpack_from(view, pos)
        pos += 4
        if block_len < 0 or pos + block_len > end:
            raise CorruptRecordError("xerial snappy block length out of range")
        block = _snappy_raw_block(view[pos : pos + block_len], bytes_max - total)
        total += len(block)
        parts.append(block)
        pos += block_len
    return b"".join(parts)


def _gzip_decompress(data: bytes | bytearray | memoryview, bytes_max: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    rest = bytes(data)
    if not rest:
        raise CorruptRecordError("empty gzip payload")
    # Several concatenated gzip members are one valid stream; walk them all.
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(rest, bytes_max - total + 1)
        except zlib.error as exc:
            raise CorruptRecordError(f"bad gzip payload: {exc}") from None
        total += len(chunk)
        if total > bytes_max or inflater.unconsumed_tail:
            raise CorruptRecordError("gzip payload exceeds decompressed_bytes_max")
        if not inflater.eof:
            raise CorruptRecordError("truncated gzip payload")
        parts.append(chunk)
        rest = inflater.unused_data
    return b"".join(parts)


def _grow_into(
    decompress_into: object, data: bytes | bytearray | memoryview, bytes_max: int, name: str
) -> bytes:
    """Decompress into a fixed buffer, doubling it up to bytes_max + 1 on overflow.

    cramjam's *_into functions stop with an error when the output buffer is full,
    so memory stays bounded whatever the frame claims. The total work is at most
    about twice the bound.
    """
    assert callable(decompress_into)
    size = min(bytes_max + 1, max(_GROWTH_START_BYTES_MIN, len(data) * _GROWTH_START_FACTOR))
    while True:
        out = bytearray(size)
        try:
            written = decompress_into(data, out)
        except Exception as exc:  # cramjam.DecompressionError, also on a full buffer
            if size > bytes_max or _FULL_BUFFER not in str(exc):
                raise CorruptRecordError(
                    f"bad {name} payload or larger than decompressed_bytes_max: {exc}"
                ) from None
            size = min(bytes_max + 1, size * 2)
            continue
        if written > bytes_max:
            raise CorruptRecordError(f"{name} payload exceeds decompressed_bytes_max")
        if written == size:
            # The buffer filled exactly: there may be more output. Retry larger.
            if size > bytes_max:
                raise CorruptRecordError(f"{name} payload exceeds decompressed_bytes_max")
            size = min(bytes_max + 1, size * 2)
            continue
        del out[written:]
        return bytes(out)
