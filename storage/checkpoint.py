"""Small files written atomically: temp file, fsync, rename, fsync the directory.

Used for the Raft hard state and for the log's start checkpoint. Contents are framed
with a magic, a length and a CRC-32C, so a damaged file reads as missing-or-corrupt
rather than as wrong values. After a crash a reader sees either the old or the new file.
"""

from __future__ import annotations

import os
import struct

import crc32c

from storage.errors import CorruptLogError
from storage.fs import FileSystem

_MAGIC = b"RKCP"
_HEADER = struct.Struct("<4sII")  # magic, length of body, crc32c of body
TEMP_SUFFIX = ".tmp"


def write_checkpoint(fs: FileSystem, path: str, body: bytes) -> None:
    """Replace the file at path with body, atomically and durably."""
    temp_path = path + TEMP_SUFFIX
    file = fs.open(temp_path, create=True)
    try:
        file.truncate(0)
        file.pwrite(0, _HEADER.pack(_MAGIC, len(body), crc32c.crc32c(body)) + body)
        file.fsync()
    finally:
        file.close()
    fs.rename(temp_path, path)
    fs.fsync_dir(os.path.dirname(path) or ".")


def read_checkpoint(fs: FileSystem, path: str) -> bytes | None:
    """The body of the checkpoint at path, or None if there is none.

    Raises CorruptLogError if the file exists but fails verification: a checkpoint is only
    ever replaced by rename, so a damaged one is real corruption, not a torn write.
    """
    if not fs.exists(path):
        return None
    file = fs.open(path)
    try:
        data = file.pread(0, file.size())
    finally:
        file.close()
    if len(data) < _HEADER.size:
        raise CorruptLogError(path, 0, "checkpoint shorter than its header")
    magic, length, crc = _HEADER.unpack_from(data, 0)
    body = data[_HEADER.size :]
    if magic != _MAGIC or length != len(body) or crc32c.crc32c(body) != crc:
        raise CorruptLogError(path, 0, "checkpoint fails verification")
    return body
