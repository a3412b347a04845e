"""Readers and writers of Kafka's primitive wire types, used by the generated messages.

Theory of operation. Generated decoders thread a position through a `memoryview` of the
frame: every reader takes `(buf, pos)` and returns `(value, new_pos)`. Fixed-width fields
are read by the generated code itself with precompiled `struct.Struct` objects (several
consecutive fields in one call), so these helpers cover what has a length or a varint.
Writers append to a `bytearray`.

Hostile input. Every length and count is checked against the bytes that remain *before*
anything is sliced or allocated (KAFKA-14063: a 20-byte body claiming 2^31-1 elements must
not allocate 2^31 slots). Varints stop after 5 (int32) or 10 (int64) bytes. A too-short
buffer makes `struct` raise `struct.error`; `decode_with` turns that, and every other
decoding failure, into `RemoteProtocolError` at the boundary, so a decoder raises only
the wire layer's own typed error. Writers raise `LocalProtocolError` for values the
protocol cannot carry (a None where a version is not nullable, a 40,000-byte string).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from client.protocol.exceptions import LocalProtocolError, RemoteProtocolError

T = TypeVar("T")

INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
UINT16 = struct.Struct(">H")
INT32 = struct.Struct(">i")
UINT32 = struct.Struct(">I")
INT64 = struct.Struct(">q")
FLOAT64 = struct.Struct(">d")

ZERO_UUID = uuid.UUID(int=0)
INT16_MAX = 0x7FFF
INT32_MAX = 0x7FFFFFFF
UINT32_MAX = 0xFFFFFFFF

# struct format letters for Kafka's fixed-width types; the generator groups runs of them.
FIXED_FORMATS = {
    "int8": "b",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "float64": "d",
    "bool": "?",
}
FIXED_SIZES = {"b": 1, "h": 2, "H": 2, "i": 4, "I": 4, "q": 8, "d": 8, "?": 1}


class DecodeError(RemoteProtocolError):
    """The peer's bytes do not decode as the message and version they claim to be."""


def fail(reason: str) -> DecodeError:
    """Build the decode error; callers `raise fail(...)` so control flow stays visible."""
    return DecodeError(reason)


# -- varints ---------------------------------------------------------------------------


def read_uvarint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 varint of at most 5 bytes whose value fits in 32 bits."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    for i in range(pos + 1, pos + 5):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value > UINT32_MAX:
                raise fail("unsigned varint exceeds 32 bits")
            return value, i + 1
        shift += 7
    raise fail("unsigned varint longer than 5 bytes")


def read_uvarlong(buf: memoryview, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 varint of at most 10 bytes whose value fits in 64 bits."""
    value = 0
    shift = 0
    for i in range(pos, pos + 10):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value >> 64:
                raise fail("unsigned varlong exceeds 64 bits")
            return value, i + 1
        shift += 7
    raise fail("unsigned varlong longer than 10 bytes")


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Zigzag-encoded signed int32 varint."""
    raw, pos = read_uvarint(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def read_varlong(buf: memoryview, pos: int) -> tuple[int, int]:
    """Zigzag-encoded signed int64 varint."""
    raw, pos = read_uvarlong(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def write_uvarint(out: bytearray, value: int) -> None:
    if value < 0x80:
        if value < 0:
            raise LocalProtocolError(f"unsigned varint cannot carry {value}")
        out.append(value)
        return
    if value > UINT32_MAX:
        raise LocalProtocolError(f"unsigned varint cannot carry {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def write_uvarlong(out: bytearray, value: int) -> None:
    if value < 0 or value >> 64:
        raise LocalProtocolError(f"unsigned varlong cannot carry {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def write_varint(out: bytearray, value: int) -> None:
    if not -0x80000000 <= value <= INT32_MAX:
        raise LocalProtocolError(f"varint cannot carry {value}")
    write_uvarint(out, ((value << 1) ^ (value >> 31)) & UINT32_MAX)


def write_varlong(out: bytearray, value: int) -> None:
    if not -(1 << 63) <= value < (1 << 63):
        raise LocalProtocolError(f"varlong cannot carry {value}")
    write_uvarlong(out, ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)


# -- lengths ---------------------------------------------------------------------------


def _checked_end(buf: memoryview, pos: int, length: int) -> int:
    end = pos + length
    if end > len(buf):
        raise fail(f"length {length} exceeds the {len(buf) - pos} bytes that remain")
    return end


def read_array_len(buf: memoryview, pos: int, elem_bytes_min: int) -> tuple[int, int]:
    """int32 element count, -1 for null; bounded by the bytes that remain."""
    (n,) = INT32.unpack_from(buf, pos)
    pos += 4
    if n < 0:
        if n == -1:
            return -1, pos
        raise fail(f"negative array length {n}")
    if n * elem_bytes_min > len(buf) - pos or (elem_bytes_min == 0 and n > len(buf)):
        raise fail(f"array of {n} elements cannot fit in {len(buf) - pos} bytes")
    return n, pos


def read_compact_array_len(buf: memoryview, pos: int, elem_bytes_min: int) -> tuple[int, int]:
    """Unsigned varint element count + 1 (0 means null); bounded by the bytes that remain."""
    n, pos = read_uvarint(buf, pos)
    n -= 1
    if n > 0 and (n * elem_bytes_min > len(buf) - pos or (elem_bytes_min == 0 and n > len(buf))):
        raise fail(f"array of {n} elements cannot fit in {len(buf) - pos} bytes")
    return n, pos


def read_fixed_array(
    buf: memoryview, pos: int, n: int, fmt: str, size: int
) -> tuple[tuple[Any, ...], int]:
    """n fixed-width values in one `struct` call (n was already bounded by the caller)."""
    if n <= 0:
        return (), pos
    end = _checked_end(buf, pos, n * size)
    return struct.unpack_from(f">{n}{fmt}", buf, pos), end


def read_uuid_array(buf: memoryview, pos: int, n: int) -> tuple[tuple[uuid.UUID, ...], int]:
    end = _checked_end(buf, pos, 16 * max(n, 0))
    return tuple(uuid.UUID(bytes=bytes(buf[p : p + 16])) for p in range(pos, end, 16)), end


def read_uuid(buf: memoryview, pos: int) -> tuple[uuid.UUID, int]:
    end = _checked_end(buf, pos, 16)
    return uuid.UUID(bytes=bytes(buf[pos:end])), end


# -- strings ---------------------------------------------------------------------------


def read_string(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = INT16.unpack_from(buf, pos)
    pos += 2
    if n < 0:
        raise fail(f"negative length {n} for a non-nullable string")
    end = _checked_end(buf, pos, n)
    return str(buf[pos:end], "utf-8"), end


def read_nullable_string(buf: memoryview, pos: int) -> tuple[str | None, int]:
    (n,) = INT16.unpack_from(buf, pos)
    pos += 2
    if n < 0:
        if n == -1:
            return None, pos
        raise fail(f"negative length {n} for a nullable string")
    end = _checked_end(buf, pos, n)
    return str(buf[pos:end], "utf-8"), end


def read_compact_string(buf: memoryview, pos: int) -> tuple[str, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        raise fail("null for a non-nullable compact string")
    end = _checked_end(buf, pos, n - 1)
    return str(buf[pos:end], "utf-8"), end


def read_compact_nullable_string(buf: memoryview, pos: int) -> tuple[str | None, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _checked_end(buf, pos, n - 1)
    return str(buf[pos:end], "utf-8"), end


def write_string(out: bytearray, value: str | None) -> None:
    if value is None:
        raise LocalProtocolError("None for a non-nullable string")
    data = value.encode()
    if len(data) > INT16_MAX:
        raise LocalProtocolError(f"string of {len(data)} bytes exceeds int16 length")
    out += INT16.pack(len(data))
    out += data


def write_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out += b"\xff\xff"
    else:
        write_string(out, value)


def write_compact_string(out: bytearray, value: str | None) -> None:
    if value is None:
        raise LocalProtocolError("None for a non-nullable compact string")
    data = value.encode()
    if len(data) > INT16_MAX:  # Kafka caps every string at int16 length, compact or not
        raise LocalProtocolError(f"string of {len(data)} bytes exceeds int16 length")
    write_uvarint(out, len(data) + 1)
    out += data


def write_compact_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
    else:
        write_compact_string(out, value)


# -- bytes and records -----------------------------------------------------------------


def read_bytes(buf: memoryview, pos: int) -> tuple[bytes, int]:
    (n,) = INT32.unpack_from(buf, pos)
    pos += 4
    if n < 0:
        raise fail(f"negative length {n} for non-nullable bytes")
    end = _checked_end(buf, pos, n)
    return bytes(buf[pos:end]), end


def read_nullable_bytes(buf: memoryview, pos: int) -> tuple[bytes | None, int]:
    (n,) = INT32.unpack_from(buf, pos)
    pos += 4
    if n < 0:
        if n == -1:
            return None, pos
        raise fail(f"negative length {n} for nullable bytes")
    end = _checked_end(buf, pos, n)
    return bytes(buf[pos:end]), end


def read_compact_bytes(buf: memoryview, pos: int) -> tuple[bytes, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        raise fail("null for non-nullable compact bytes")
    end = _checked_end(buf, pos, n - 1)
    return bytes(buf[pos:end]), end


def read_compact_nullable_bytes(buf: memoryview, pos: int) -> tuple[bytes | None, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _checked_end(buf, pos, n - 1)
    return bytes(buf[pos:end]), end


def read_records(buf: memoryview, pos: int) -> tuple[memoryview | None, int]:
    """Record batches stay a zero-copy slice of the frame; records.py parses them."""
    (n,) = INT32.unpack_from(buf, pos)
    pos += 4
    if n < 0:
        if n == -1:
            return None, pos
        raise fail(f"negative length {n} for records")
    end = _checked_end(buf, pos, n)
    return buf[pos:end], end


def read_compact_records(buf: memoryview, pos: int) -> tuple[memoryview | None, int]:
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    end = _checked_end(buf, pos, n - 1)
    return buf[pos:end], end


def write_bytes(out: bytearray, value: bytes | memoryview | None) -> None:
    if value is None:
        raise LocalProtocolError("None for non-nullable bytes")
    out += INT32.pack(len(value))
    out += value


def write_nullable_bytes(out: bytearray, value: bytes | memoryview | None) -> None:
    if value is None:
        out += b"\xff\xff\xff\xff"
    else:
        out += INT32.pack(len(value))
        out += value


def write_compact_bytes(out: bytearray, value: bytes | memoryview | None) -> None:
    if value is None:
        raise LocalProtocolError("None for non-nullable compact bytes")
    write_uvarint(out, len(value) + 1)
    out += value


def write_compact_nullable_bytes(out: bytearray, value: bytes | memoryview | None) -> None:
    if value is None:
        out.append(0)
    else:
        write_uvarint(out, len(value) + 1)
        out += value


# -- arrays ----------------------------------------------------------------------------


def write_array_len(out: bytearray, value: Sequence[object] | None, nullable: bool) -> None:
    if value is None:
        if not nullable:
            raise LocalProtocolError("None for a non-nullable array")
        out += b"\xff\xff\xff\xff"
    else:
        out += INT32.pack(len(value))


def write_compact_array_len(out: bytearray, value: Sequence[object] | None, nullable: bool) -> None:
    if value is None:
        if not nullable:
            raise LocalProtocolError("None for a non-nullable array")
        out.append(0)
    else:
        write_uvarint(out, len(value) + 1)


def write_fixed_array(out: bytearray, value: Sequence[object], fmt: str) -> None:
    if value:
        out += struct.pack(f">{len(value)}{fmt}", *value)


def write_uuid(out: bytearray, value: uuid.UUID) -> None:
    out += value.bytes


# -- tagged fields ---------------------------------------------------------------------


def skip_tagged_fields(buf: memoryview, pos: int) -> int:
    """Skip a tagged-field section whose tags this version does not know (KIP-482)."""
    count, pos = read_uvarint(buf, pos)
    if count > len(buf) - pos:
        raise fail(f"{count} tagged fields cannot fit in {len(buf) - pos} bytes")
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos = _checked_end(buf, pos, size)
    return pos


def read_tag_header(buf: memoryview, pos: int) -> tuple[int, int, int]:
    """One tagged field's (tag, end, value_pos); the caller decodes buf[value_pos:end]."""
    tag, pos = read_uvarint(buf, pos)
    size, pos = read_uvarint(buf, pos)
    return tag, _checked_end(buf, pos, size), pos


def read_tag_count(buf: memoryview, pos: int) -> tuple[int, int]:
    count, pos = read_uvarint(buf, pos)
    if count > len(buf) - pos:
        raise fail(f"{count} tagged fields cannot fit in {len(buf) - pos} bytes")
    return count, pos


def write_tagged(out: bytearray, tags: list[tuple[int, bytearray]]) -> None:
    """Write a tagged-field section; `tags` is (tag, encoded value) in ascending tag order."""
    write_uvarint(out, len(tags))
    for tag, data in tags:
        write_uvarint(out, tag)
        write_uvarint(out, len(data))
        out += data


# -- boundaries ------------------------------------------------------------------------

# Everything a decoder can raise on malformed input, other than our own typed errors.
_DECODE_FAILURES = (struct.error, IndexError, ValueError, OverflowError, TypeError)
_ENCODE_FAILURES = (struct.error, TypeError, AttributeError, ValueError, OverflowError)


def pick(table: dict[int, T], version: int, what: object) -> T:
    """The generated function of `version`; asking for a version not generated is our bug."""
    fn = table.get(version)
    if fn is None:
        name = what.__name__ if isinstance(what, type) else type(what).__name__
        raise LocalProtocolError(f"{name} has no version {version} (generated {sorted(table)})")
    return fn


def decode_with(
    decoder: Callable[[memoryview, int], tuple[T, int]],
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
) -> tuple[T, int]:
    """Run a generated decoder, translating every failure into RemoteProtocolError."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    try:
        return decoder(view, pos)
    except RemoteProtocolError:
        raise
    except _DECODE_FAILURES as exc:
        raise DecodeError(f"malformed input: {exc}") from exc


def encode_with(encoder: Callable[[T, bytearray], None], value: T, out: bytearray) -> None:
    """Run a generated encoder, translating failures into LocalProtocolError (our bug)."""
    try:
        encoder(value, out)
    except LocalProtocolError:
        raise
    except _ENCODE_FAILURES as exc:
        raise LocalProtocolError(f"cannot encode {type(value).__name__}: {exc}") from exc
