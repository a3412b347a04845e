"""The machine's physical limits, measured in the same run as the broker benches.

A broker's throughput means little without the ceiling it runs under: on a 2-core
machine with a slow disk, 100 MB/s may be impossible for anyone. This measures, with
nothing else of ours running:

1. sequential write + fdatasync: 1 MiB writes to a file under /tmp, one fdatasync per
   write (what an acks=all broker that fsyncs each batch of 1 MiB could reach at best),
   and one fdatasync at the end of the whole file (the streaming ceiling of the disk);
2. loopback TCP: one stream, 1 MiB sendall() calls, plain blocking sockets, a reader
   thread in the same process (the GIL is released in send/recv);
3. CRC-32C (the crc32c package) over a 1 MiB buffer: what checksumming record batches
   costs per byte.

`measure()` returns the numbers (best of a few short runs: a ceiling, not a typical
value) so bench/all.py can report Raftka's throughput as a fraction of them.

    python -m bench.limits [--quick] [--seconds 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import load_line, print_table, record

MIB = 1024 * 1024
BLOCK_BYTES = MIB
TMP_DIR = Path("/tmp/raftka-bench/limits")


@dataclass(frozen=True, slots=True)
class Limits:
    """Ceilings of this machine, in decimal MB/s and GB/s (1 MB = 1e6 bytes)."""

    disk_sync_each_mb_s: float  # 1 MiB write + fdatasync, repeated
    disk_sync_end_mb_s: float  # 1 MiB writes, one fdatasync at the end
    loopback_tcp_mb_s: float  # one stream, 1 MiB writes
    crc32c_gb_s: float


def disk_write(seconds: float, sync_each: bool, max_bytes: int = 2 * 1024 * MIB) -> float:
    """MB/s of sequential 1 MiB writes to a fresh file, fdatasync'd each time or at the end.

    The file is capped at `max_bytes` so a fast disk does not fill /tmp; the clock
    includes the final fdatasync either way (data is on disk when the clock stops).
    """
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    path = TMP_DIR / "seq.bin"
    block = os.urandom(BLOCK_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline and written < max_bytes:
            written += os.write(fd, block)
            if sync_each:
                os.fdatasync(fd)
        os.fdatasync(fd)
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return written / elapsed / 1e6


def loopback_tcp(seconds: float) -> float:
    """MB/s through one loopback TCP connection, 1 MiB sendall() calls."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = [0]

    def reader() -> None:
        conn, _ = listener.accept()
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        with conn:
            while n := conn.recv_into(view):
                received[0] += n

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    block = os.urandom(BLOCK_BYTES)
    with socket.create_connection(("127.0.0.1", port)) as sender:
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            sender.sendall(block)
        sender.shutdown(socket.SHUT_WR)
        thread.join(30)
        elapsed = time.monotonic() - start
    listener.close()
    return received[0] / elapsed / 1e6


def crc32c_rate(seconds: float) -> float:
    """GB/s of crc32c.crc32c() over a 1 MiB buffer."""
    import crc32c

    block = os.urandom(BLOCK_BYTES)
    done = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        for _ in range(16):
            crc32c.crc32c(block)
        done += 16 * BLOCK_BYTES
    return done / (time.monotonic() - start) / 1e9


def measure(seconds: float = 2.0, runs: int = 3) -> Limits:
    """Best of `runs` runs of each measurement, `seconds` each (a ceiling)."""
    return Limits(
        disk_sync_each_mb_s=max(disk_write(seconds, True) for _ in range(runs)),
        disk_sync_end_mb_s=max(disk_write(seconds, False) for _ in range(runs)),
        loopback_tcp_mb_s=max(loopback_tcp(seconds) for _ in range(runs)),
        crc32c_gb_s=max(crc32c_rate(seconds / 2) for _ in range(runs)),
    )


def rows(limits: Limits) -> list[list[str]]:
    return [
        ["sequential write, fdatasync per 1 MiB", f"{limits.disk_sync_each_mb_s:,.0f} MB/s"],
        ["sequential write, fdatasync at the end", f"{limits.disk_sync_end_mb_s:,.0f} MB/s"],
        ["loopback TCP, one stream, 1 MiB writes", f"{limits.loopback_tcp_mb_s:,.0f} MB/s"],
        ["CRC-32C (crc32c package), 1 MiB buffers", f"{limits.crc32c_gb_s:.2f} GB/s"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per run")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--quick", action="store_true", help="short runs to try it out")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs = 0.5, 1
    print(f"machine limits under {TMP_DIR} (best of {args.runs} runs); {load_line()}")
    limits = measure(args.seconds, args.runs)
    print_table("Physical limits of this machine", ["measurement", "best"], rows(limits))
    record("limits", "disk_sync_each_mb_s", limits.disk_sync_each_mb_s, "MB/s")
    record("limits", "disk_sync_end_mb_s", limits.disk_sync_end_mb_s, "MB/s")
    record("limits", "loopback_tcp_mb_s", limits.loopback_tcp_mb_s, "MB/s")
    record("limits", "crc32c_gb_s", limits.crc32c_gb_s, "GB/s")


if __name__ == "__main__":
    main()
