"""A bounds-checked big-endian reader for the group records' and consumer protocol's bytes.

Both formats are Kafka's classic (non-flexible) encodings, read from untrusted bytes:
every read checks the remaining length first and raises the format's own error.
"""

from __future__ import annotations

import struct

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class BinaryReader:
    """Subclasses set `error` to the exception their format raises on short input."""

    __slots__ = ("_buf", "_pos")
    error: type[Exception] = ValueError

    def __init__(self, buf: bytes) -> None:
        self._buf = buf
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._buf):
            raise self.error(f"truncated at byte {self._pos}")
        chunk = self._buf[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def i16(self) -> int:
        return int(_I16.unpack(self._take(2))[0])

    def i32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])
