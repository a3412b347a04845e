"""Primitive readers and writers: round trips, boundary values, null versus empty."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.protocol import primitives as p
from client.protocol.exceptions import LocalProtocolError, RemoteProtocolError


def _read(reader, data: bytes):  # type: ignore[no-untyped-def]
    value, pos = p.decode_with(reader, data)
    assert pos == len(data)
    return value


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (2**32 - 1, "ffffffff0f")],
)
def test_uvarint_known_bytes(value: int, encoded: str) -> None:
    out = bytearray()
    p.write_uvarint(out, value)
    assert out.hex() == encoded
    assert _read(p.read_uvarint, bytes.fromhex(encoded)) == value


@settings(max_examples=200)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1))
def test_signed_varints_round_trip(v32: int, v64: int) -> None:
    out = bytearray()
    p.write_varint(out, v32)
    assert _read(p.read_varint, bytes(out)) == v32
    out = bytearray()
    p.write_varlong(out, v64)
    assert _read(p.read_varlong, bytes(out)) == v64


def test_zigzag_known_bytes() -> None:
    out = bytearray()
    for v in (0, -1, 1, -2):
        p.write_varint(out, v)
    assert out.hex() == "00010203"


def test_varint_too_long_or_too_big() -> None:
    with pytest.raises(RemoteProtocolError):
        p.decode_with(p.read_uvarint, b"\xff\xff\xff\xff\xff\x01")  # 6 bytes
    with pytest.raises(RemoteProtocolError):
        p.decode_with(p.read_uvarint, b"\xff\xff\xff\xff\x1f")  # > 32 bits
    with pytest.raises(RemoteProtocolError):
        p.decode_with(p.read_uvarlong, b"\xff" * 10 + b"\x01")
    with pytest.raises(RemoteProtocolError):
        p.decode_with(p.read_uvarint, b"\x80")  # truncated
    with pytest.raises(LocalProtocolError):
        p.write_uvarint(bytearray(), 2**32)
    with pytest.raises(LocalProtocolError):
        p.write_varint(bytearray(), 2**31)


@settings(max_examples=100)
@given(st.one_of(st.none(), st.text(max_size=40)))
def test_strings_round_trip_all_four_forms(value: str | None) -> None:
    for writer, reader in [
        (p.write_nullable_string, p.read_nullable_string),
        (p.write_compact_nullable_string, p.read_compact_nullable_string),
    ]:
        out = bytearray()
        try:
            writer(out, value)
        except LocalProtocolError:
            assert value is not None and any(0xD800 <= ord(c) <= 0xDFFF for c in value)
            continue
        assert _read(reader, bytes(out)) == value
    if value is not None and value.isascii():
        for writer, reader in [
            (p.write_string, p.read_string),
            (p.write_compact_string, p.read_compact_string),
        ]:
            out = bytearray()
            writer(out, value)
            assert _read(reader, bytes(out)) == value


def test_null_versus_empty() -> None:
    out = bytearray()
    p.write_nullable_string(out, None)
    p.write_nullable_string(out, "")
    p.write_compact_nullable_string(out, None)
    p.write_compact_nullable_string(out, "")
    p.write_nullable_bytes(out, None)
    p.write_compact_nullable_bytes(out, b"")
    assert out.hex() == "ffff" + "0000" + "00" + "01" + "ffffffff" + "01"
    with pytest.raises(LocalProtocolError):
        p.write_string(bytearray(), None)
    with pytest.raises(LocalProtocolError):
        p.write_array_len(bytearray(), None, nullable=False)


def test_non_nullable_reads_reject_null_and_negative_lengths() -> None:
    for reader, data in [
        (p.read_string, b"\xff\xff"),
        (p.read_nullable_string, b"\xff\xfe"),
        (p.read_compact_string, b"\x00"),
        (p.read_bytes, b"\xff\xff\xff\xff"),
        (p.read_nullable_bytes, b"\xff\xff\xff\xfe"),
        (p.read_records, b"\x80\x00\x00\x00"),
    ]:
        with pytest.raises(RemoteProtocolError):
            p.decode_with(reader, data)


def test_lengths_beyond_remaining_bytes() -> None:
    for reader, data in [
        (p.read_string, b"\x00\x05abc"),
        (p.read_compact_string, b"\x06abc"),
        (p.read_bytes, b"\x00\x00\x00\x09abc"),
        (p.read_records, b"\x00\x00\x10\x00abc"),
        (p.read_compact_records, b"\x7fabc"),
    ]:
        with pytest.raises(RemoteProtocolError):
            p.decode_with(reader, data)


def test_invalid_utf8_is_the_peers_error() -> None:
    with pytest.raises(RemoteProtocolError):
        p.decode_with(p.read_string, b"\x00\x02\xc3\x28")


def test_array_count_checked_against_remaining_bytes() -> None:
    data = b"\x7f\xff\xff\xff" + bytes(16)  # 2^31-1 elements in a 20-byte body
    with pytest.raises(RemoteProtocolError):
        p.decode_with(lambda b, pos: p.read_array_len(b, pos, 4), data)
    assert (
        p.decode_with(lambda b, pos: p.read_array_len(b, pos, 4), b"\x00\x00\x00\x04" + bytes(16))[
            0
        ]
        == 4
    )
    assert p.decode_with(lambda b, pos: p.read_array_len(b, pos, 4), b"\xff\xff\xff\xff")[0] == -1
    with pytest.raises(RemoteProtocolError):
        p.decode_with(lambda b, pos: p.read_array_len(b, pos, 1), b"\xff\xff\xff\xfe")


def test_fixed_arrays_round_trip() -> None:
    out = bytearray()
    p.write_fixed_array(out, (1, -2, 3), "i")
    values, pos = p.read_fixed_array(memoryview(bytes(out)), 0, 3, "i", 4)
    assert values == (1, -2, 3) and pos == 12


def test_tagged_fields_skip_unknown_and_reject_garbage() -> None:
    out = bytearray()
    p.write_tagged(out, [(0, bytearray(b"ab")), (7, bytearray(b"xyz"))])
    assert _read(lambda b, pos: (None, p.skip_tagged_fields(b, pos)), bytes(out)) is None
    with pytest.raises(RemoteProtocolError):
        p.decode_with(p.skip_tagged_fields, b"\x01\x00\x09ab")  # size beyond the end
    with pytest.raises(RemoteProtocolError):
        p.decode_with(p.skip_tagged_fields, b"\x7f\x00")  # 127 tags in 1 byte


def test_encode_with_reports_our_bugs_as_local_errors() -> None:
    with pytest.raises(LocalProtocolError):
        p.encode_with(lambda v, out: out.extend(p.INT16.pack(v)), 70000, bytearray())
