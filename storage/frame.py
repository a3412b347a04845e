"""The on-disk entry frame: what one log entry looks like inside a segment file.

Layout (little endian), 40 header bytes then the payload:

    0  crc32c      u32  CRC-32C of bytes 4..length (everything after this field)
    4  length      u32  bytes of the whole frame, header included
    8  index       u64  raft index
   16  term        u64  raft term
   24  base_offset i64  Kafka offset of the entry's first record (for no-op/config entries,
                        the log end offset when it was appended: they take no offsets)
   32  record_count u32 Kafka offsets the entry takes (0 unless kind is DATA)
   36  kind        u8   EntryKind
   37  version     u8   FRAME_VERSION
   38  reserved    u16  zero

A frame is valid when its length is plausible, all its bytes are present and the CRC
matches. Decoding tells a torn write (bytes missing or garbage at the end) from a frame
that is present but wrong; the segment scanner decides what that means for the log.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import crc32c

HEADER = struct.Struct("<IIQQqIBBH")
HEADER_BYTES = HEADER.size
FRAME_VERSION = 1
assert HEADER_BYTES == 40


class EntryKind(enum.IntEnum):
    """Kinds of raft log entries; the Raft core uses the same numbers."""

    DATA = 0
    NOOP = 1
    CONFIG = 2


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One raft log entry as appended and as read back.

    For DATA entries of a Kafka partition the payload is a record batch v2 exactly as the
    producer sent it; the log never looks inside it except to stamp the base offset and
    leader epoch on the fetch path.
    """

    index: int
    term: int
    kind: EntryKind
    record_count: int
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A decoded, CRC-verified frame header."""

    length: int
    index: int
    term: int
    base_offset: int
    record_count: int
    kind: EntryKind

    @property
    def payload_bytes(self) -> int:
        return self.length - HEADER_BYTES


class FrameStatus(enum.Enum):
    VALID = "valid"
    TORN = "torn"  # fewer bytes present than the frame needs (or an impossible length)
    BAD = "bad"  # every byte present, but the CRC or a field is wrong


def encode_into(buffer: bytearray, position: int, entry: LogEntry, base_offset: int) -> int:
    """Write entry's frame into buffer at position (buffer must be large enough).

    Returns the position after the frame.
    """
    payload_bytes = len(entry.payload)
    length = HEADER_BYTES + payload_bytes
    end = position + length
    HEADER.pack_into(
        buffer,
        position,
        0,
        length,
        entry.index,
        entry.term,
        base_offset,
        entry.record_count,
        int(entry.kind),
        FRAME_VERSION,
        0,
    )
    buffer[position + HEADER_BYTES : end] = entry.payload
    view = memoryview(buffer)
    struct.pack_into("<I", buffer, position, crc32c.crc32c(view[position + 4 : end]))
    view.release()
    return end


def frame_bytes(entry: LogEntry) -> int:
    return HEADER_BYTES + len(entry.payload)


def decode(
    view: memoryview, position: int, payload_bytes_max: int
) -> tuple[FrameStatus, FrameHeader | None]:
    """Decode and verify the frame at position in view (view ends where the file ends)."""
    available = len(view) - position
    if available < HEADER_BYTES:
        return FrameStatus.TORN, None
    crc, length, index, term, base_offset, count, kind, version, reserved = HEADER.unpack_from(
        view, position
    )
    if length < HEADER_BYTES or length > HEADER_BYTES + payload_bytes_max:
        return FrameStatus.TORN, None
    if length > available:
        return FrameStatus.TORN, None
    if crc32c.crc32c(view[position + 4 : position + length]) != crc:
        return FrameStatus.BAD, None
    if version != FRAME_VERSION or reserved != 0 or kind not in _KINDS:
        return FrameStatus.BAD, None
    if kind != EntryKind.DATA and count != 0:
        return FrameStatus.BAD, None
    header = FrameHeader(length, index, term, base_offset, count, EntryKind(kind))
    return FrameStatus.VALID, header


_KINDS = frozenset(int(k) for k in EntryKind)
