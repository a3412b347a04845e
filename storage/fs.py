"""The file-system seam: every byte the storage engine reads or writes goes through here.

`OsFileSystem` is the real thing (positional I/O on raw file descriptors, fdatasync).
`MemoryFileSystem` models what a crash does to a POSIX file system so tests can inject
faults: data not fsynced is lost on `crash()` (optionally with a torn or zero-filled tail
of the last unsynced write), directory changes (create, rename, remove) are lost unless
the directory was fsynced, and writes or fsyncs can be made to fail with ENOSPC or EIO.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Buffer = bytes | bytearray | memoryview


class File(Protocol):
    """An open file addressed by position (no shared cursor)."""

    def pread(self, position: int, size: int) -> bytes: ...

    def readinto(self, position: int, buffer: bytearray) -> int: ...

    def pwrite(self, position: int, data: Buffer) -> None: ...

    def truncate(self, size: int) -> None: ...

    def fsync(self) -> None: ...

    def size(self) -> int: ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    """Directory-level operations; paths are plain strings."""

    def open(self, path: str, create: bool = False) -> File: ...

    def exists(self, path: str) -> bool: ...

    def list_dir(self, path: str) -> list[str]: ...

    def remove(self, path: str) -> None: ...

    def rename(self, source: str, target: str) -> None: ...

    def make_dirs(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None: ...


class OsFile:
    """A raw file descriptor: pread/pwrite/fdatasync, no Python buffering."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o644)
        self.path = path

    def pread(self, position: int, size: int) -> bytes:
        return os.pread(self._fd, size, position)

    def readinto(self, position: int, buffer: bytearray) -> int:
        return os.preadv(self._fd, [buffer], position)

    def pwrite(self, position: int, data: Buffer) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, position)
            assert written > 0
            position += written
            view = view[written:]

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def fsync(self) -> None:
        # fdatasync: appends change the size, which fdatasync does flush; mtime we don't need.
        os.fdatasync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsFileSystem:
    """The real file system."""

    def open(self, path: str, create: bool = False) -> File:
        return OsFile(path, create)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def list_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def remove(self, path: str) -> None:
        os.remove(path)

    def rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def make_dirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------
# The fault-injecting in-memory file system.


@dataclass(slots=True)
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    # True while every change since the last fsync was an append (so a crash can tear it).
    appended_only: bool = True


@dataclass(slots=True)
class FaultRule:
    """Fail the next `count` calls of `operation` ("write", "fsync", "truncate", ...)."""

    operation: str
    error_number: int
    count: int = 1


def _split(path: str) -> tuple[str, str]:
    head, tail = os.path.split(path.rstrip("/"))
    return head or "/", tail


class MemoryFile:
    """A handle on an in-memory inode."""

    __slots__ = ("_closed", "_fs", "_inode", "path")

    def __init__(self, fs: MemoryFileSystem, inode: _Inode, path: str) -> None:
        self._fs = fs
        self._inode = inode
        self.path = path
        self._closed = False

    def _check(self, operation: str) -> None:
        assert not self._closed, f"{operation} on closed file {self.path}"
        self._fs._maybe_fail(operation)

    def pread(self, position: int, size: int) -> bytes:
        self._check("read")
        return bytes(self._inode.data[position : position + size])

    def readinto(self, position: int, buffer: bytearray) -> int:
        self._check("read")
        chunk = self._inode.data[position : position + len(buffer)]
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def pwrite(self, position: int, data: Buffer) -> None:
        assert not self._closed
        inode = self._inode
        if position != len(inode.data):
            inode.appended_only = False
        data = bytes(data)
        room_bytes = self._fs.free_bytes()
        grow_bytes = max(0, position + len(data) - len(inode.data))
        rule = self._fs._take_fault("write")
        if grow_bytes > room_bytes or rule is not None:
            # A failing write may still have written a part, as a real disk does.
            part = data[: min(len(data) // 2, room_bytes)]
            self._write(position, part)
            number = rule.error_number if rule is not None else errno.ENOSPC
            raise OSError(number, os.strerror(number), self.path)
        self._write(position, data)

    def _write(self, position: int, data: bytes) -> None:
        inode = self._inode
        if position > len(inode.data):
            inode.data.extend(bytes(position - len(inode.data)))
        inode.data[position : position + len(data)] = data
        self._fs.write_count += 1

    def truncate(self, size: int) -> None:
        self._check("truncate")
        inode = self._inode
        if size < len(inode.data):
            inode.appended_only = False
            del inode.data[size:]
        else:
            inode.data.extend(bytes(size - len(inode.data)))

    def fsync(self) -> None:
        self._check("fsync")
        if self._fs.fsync_hook is not None:
            self._fs.fsync_hook(self.path)
        self._inode.durable = bytes(self._inode.data)
        self._inode.appended_only = True
        self._fs.fsync_count += 1

    def size(self) -> int:
        assert not self._closed
        return len(self._inode.data)

    def close(self) -> None:
        self._closed = True
        self._fs.open_handles -= 1


class MemoryFileSystem:
    """An in-memory POSIX-like file system with crash and fault injection.

    Two namespaces are kept: `_names` (what a running process sees) and `_durable_names`
    (what survives a crash: updated per directory by fsync_dir). Each inode keeps its
    current bytes and the bytes at its last fsync.
    """

    def __init__(self, capacity_bytes: int | None = None) -> None:
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/"}
        self._faults: list[FaultRule] = []
        self.capacity_bytes = capacity_bytes
        self.fsync_count = 0
        self.write_count = 0
        self.open_handles = 0
        # Called (from whatever thread fsyncs) before each file fsync: tests hold it there.
        self.fsync_hook: Callable[[str], None] | None = None

    # Fault injection -------------------------------------------------------------------

    def inject(self, operation: str, error_number: int, count: int = 1) -> None:
        """Make the next `count` calls of `operation` fail with OSError(error_number)."""
        self._faults.append(FaultRule(operation, error_number, count))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, operation: str) -> FaultRule | None:
        for rule in self._faults:
            if rule.operation == operation and rule.count > 0:
                rule.count -= 1
                if rule.count == 0:
                    self._faults.remove(rule)
                return rule
        return None

    def _maybe_fail(self, operation: str) -> None:
        rule = self._take_fault(operation)
        if rule is not None:
            raise OSError(rule.error_number, os.strerror(rule.error_number))

    def used_bytes(self) -> int:
        return sum(len(inode.data) for inode in {id(i): i for i in self._names.values()}.values())

    def free_bytes(self) -> int:
        if self.capacity_bytes is None:
            return 1 << 62
        return max(0, self.capacity_bytes - self.used_bytes())

    def crash(self, tear: bool = False, rng: random.Random | None = None) -> None:
        """Lose everything not fsynced; with `tear`, keep a random part of unsynced appends.

        A torn tail is either a prefix of the lost bytes or zeros (a file whose size
        reached the disk before its data), which is what recovery must cut.
        """
        rng = rng or random.Random(0)
        self._names = dict(self._durable_names)
        for node in {id(i): i for i in self._names.values()}.values():
            lost = bytes(node.data[len(node.durable) :])
            kept = b""
            if tear and node.appended_only and lost:
                kept = lost[: rng.randrange(0, len(lost) + 1)]
                if kept and rng.random() < 0.3:
                    kept = bytes(len(kept))
            node.data = bytearray(node.durable + kept)
            node.durable = bytes(node.data)
            node.appended_only = True
        self.open_handles = 0

    # FileSystem --------------------------------------------------------------------------

    def open(self, path: str, create: bool = False) -> File:
        self._maybe_fail("open")
        inode = self._names.get(path)
        if inode is None:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            assert _split(path)[0] in self._dirs, f"no directory for {path}"
            inode = _Inode()
            self._names[path] = inode
        self.open_handles += 1
        return MemoryFile(self, inode, path)

    def exists(self, path: str) -> bool:
        return path in self._names or path.rstrip("/") in self._dirs

    def list_dir(self, path: str) -> list[str]:
        path = path.rstrip("/") or "/"
        return sorted(_split(name)[1] for name in self._names if _split(name)[0] == path)

    def remove(self, path: str) -> None:
        self._maybe_fail("remove")
        if path not in self._names:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        del self._names[path]

    def rename(self, source: str, target: str) -> None:
        self._maybe_fail("rename")
        self._names[target] = self._names.pop(source)

    def make_dirs(self, path: str) -> None:
        path = path.rstrip("/")
        while path and path != "/":
            self._dirs.add(path)
            path = _split(path)[0]

    def fsync_dir(self, path: str) -> None:
        self._maybe_fail("fsync")
        path = path.rstrip("/") or "/"
        for name in [n for n in self._durable_names if _split(n)[0] == path]:
            del self._durable_names[name]
        for name, inode in self._names.items():
            if _split(name)[0] == path:
                self._durable_names[name] = inode
        self.fsync_count += 1

    # Test helpers ------------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        return bytes(self._names[path].data)

    def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        """Overwrite a file directly (to plant corruption); durable by default."""
        inode = self._names.get(path)
        if inode is None:
            inode = self._names[path] = _Inode()
            if durable:
                self._durable_names[path] = inode
        inode.data = bytearray(data)
        if durable:
            inode.durable = bytes(data)
