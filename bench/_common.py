"""Shared pieces of the broker and cluster benchmarks: nodes, client processes, tables.

The brokers are real `python -m broker serve` processes started through the test
harness (so a bench and a test start nodes the same way). Every client that produces
or consumes for a measurement runs in a separate process: on this 2-core machine a
client in the bench's own interpreter would share its GIL with the bookkeeping, and
librdkafka's threads are the same in both cases, so a child process is the honest
setup (the broker, the client and the bench each get their own interpreter).

Results from a child come back as frozen dataclasses through a multiprocessing pool
with the "spawn" context (no fork of a process that holds librdkafka threads).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.harness import BrokerProcess, Cluster

KIB = 1024
BENCH_ROOT = Path("/tmp/raftka-bench")
T = TypeVar("T")


def child_pids() -> list[int]:
    """Processes whose parent is this one (brokers, peers, pool workers), from /proc."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry.name))
    return found


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    for pid in child_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """From now on SIGTERM kills this process's children (its brokers) and exits.

    bench/all.py stops a module that overruns its time with SIGTERM; Python's default
    would end the process at once and leave its brokers (own sessions, so a signal to
    the process group misses them) running. Called where brokers are started, which
    is only ever a bench's main process: pool workers keep the default, which
    Pool.terminate relies on.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


# ---------------------------------------------------------------- nodes and processes
def fresh_dir(name: str) -> Path:
    """An empty directory under /tmp for one bench's data (wiped first)."""
    path = BENCH_ROOT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def start_node(base_dir: Path, settings: dict[str, str] | None = None) -> BrokerProcess:
    exit_on_sigterm()
    node = BrokerProcess(1, base_dir, settings={"log_level": "WARNING", **(settings or {})})
    node.start()
    node.wait_ready(60.0)
    return node


def start_cluster(n: int, base_dir: Path, settings: dict[str, str] | None = None) -> Cluster:
    exit_on_sigterm()
    cluster = Cluster(n, base_dir, settings={"log_level": "WARNING", **(settings or {})})
    cluster.start(wait=True, timeout_s=60.0)
    return cluster


def run_in_process(fn: Callable[..., T], *args: Any, timeout_s: float = 300.0) -> T:
    """Runs fn(*args) in a fresh spawned interpreter and returns its result."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply_async(fn, args).get(timeout_s)


def rss_mb(pid: int) -> float:
    """Resident set size from /proc/<pid>/status (VmRSS, kB) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks_s = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks_s


def cpu_percent(pids: Sequence[int], seconds: float) -> list[float]:
    """CPU use of each process over the next `seconds`, in % of one core."""
    before = [cpu_seconds(p) for p in pids]
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    return [100 * (cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]


# ---------------------------------------------------------------- statistics and tables
def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain fixed-width table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line([str(c) for c in row]))


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


@dataclass(frozen=True, slots=True)
class Spread:
    """Several runs of one figure: reported as the median with min and max."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    @property
    def low(self) -> float:
        return min(self.values, default=0.0)

    @property
    def high(self) -> float:
        return max(self.values, default=0.0)

    def show(self, fmt: str = "{:.1f}") -> str:
        """The median with (min-max), or just the value for a single run."""
        if len(self.values) < 2:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}-{fmt.format(self.high)})"


# ---------------------------------------------------------------- machine-readable results
# bench/all.py sets this to a file per module run; each figure a module records becomes
# one JSON line there, from which all.py builds the limits fractions and Targets table.
RESULTS_JSON_ENV = "BENCH_RESULTS_JSON"


def record(section: str, name: str, value: float | Spread, unit: str, note: str = "") -> None:
    """Appends one figure (a value or median/min/max of runs) to $BENCH_RESULTS_JSON."""
    path = os.environ.get(RESULTS_JSON_ENV)
    if not path:
        return
    if isinstance(value, Spread):
        entry = {
            "value": value.median,
            "min": value.low,
            "max": value.high,
            "runs": len(value.values),
        }
    else:
        entry = {"value": float(value)}
    entry.update({"key": f"{section}.{name}", "unit": unit, "note": note})
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


# ---------------------------------------------------------------- client workloads
@dataclass(frozen=True, slots=True)
class Throughput:
    records: int
    value_bytes: int
    seconds: float
    errors: int
    first_error: str = ""

    @property
    def mb_s(self) -> float:
        return self.value_bytes / self.seconds / 1e6

    @property
    def records_s(self) -> float:
        return self.records / self.seconds


@dataclass(frozen=True, slots=True)
class Latencies:
    seconds: tuple[float, ...]
    errors: int
    first_error: str = ""


def produce_config(bootstrap: str, *, idempotent: bool) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 256 * KIB,
        "compression.type": "none",
        "enable.idempotence": idempotent,
        "queue.buffering.max.kbytes": 64 * KIB,
        "queue.buffering.max.messages": 1_000_000,
        "message.timeout.ms": 60_000,
    }


def produce_for(
    bootstrap: str, topic: str, seconds: float, value_bytes: int, idempotent: bool,
    partition: int = -1, max_bytes: int = 0,
) -> Throughput:  # fmt: skip
    """Produces incompressible values for `seconds` (or until `max_bytes` were queued).

    Then flushes and counts the delivered ones.

    Runs in a child process. The clock stops when the last delivery report arrives, so
    the rate is of acknowledged (acks=all) records, not of records queued in the client.
    """
    from confluent_kafka import KafkaException, Producer

    value = os.urandom(value_bytes)
    producer = Producer(produce_config(bootstrap, idempotent=idempotent))
    delivered = [0, 0]
    first_error: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            delivered[0] += 1
        else:
            delivered[1] += 1
            if not first_error:
                first_error.append(str(err))

    # Warm-up: metadata, connection, producer id; not timed.
    producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
    producer.flush(30)
    delivered = [0, 0]
    start = time.monotonic()
    deadline = start + seconds
    queued, cap = 0, max_bytes or float("inf")
    while time.monotonic() < deadline and queued < cap:
        for _ in range(1000):
            try:
                producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
                queued += value_bytes
            except (BufferError, KafkaException):
                producer.poll(0.005)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.monotonic() - start
    return Throughput(
        delivered[0], delivered[0] * value_bytes, elapsed, delivered[1],
        first_error[0] if first_error else "",
    )  # fmt: skip


def consume_all(bootstrap: str, topic: str, partition: int, records: int) -> Throughput:
    """Reads `records` records from offset 0 of one partition (assign mode). Child process."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "bench",
        "enable.auto.commit": False,
        "fetch.max.bytes": 50 * 1024 * KIB,
        "max.partition.fetch.bytes": 8 * 1024 * KIB,
        "queued.max.messages.kbytes": 256 * KIB,
    })  # fmt: skip
    # Connection and metadata set-up before the clock starts: the watermark request
    # goes to the partition's leader, the broker the fetches will go to.
    consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    got = 0
    value_bytes = 0
    errors = 0
    first_error = ""
    # The clock includes the first fetch: started at the first record instead, a small
    # topic that arrives in one prefetched batch would read at "infinite" MB/s.
    start = time.monotonic()
    deadline = start + 120
    while got < records and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 0.1):
            if msg.error():
                errors += 1
                first_error = first_error or str(msg.error())
                continue
            got += 1
            value_bytes += len(msg.value() or b"")
    elapsed = time.monotonic() - start
    consumer.close()
    return Throughput(got, value_bytes, elapsed, errors, first_error)


def produce_latencies(
    bootstrap: str, topic: str, partition: int, count: int, value_bytes: int
) -> Latencies:
    """Round trips of one acks=all record at a time (produce, then flush). Child process."""
    from confluent_kafka import Producer

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 0,
        "enable.idempotence": False,
    })  # fmt: skip
    value = os.urandom(value_bytes)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for _ in range(20):  # warm-up: connection and metadata
        producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
        producer.flush(10)
    failures.clear()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
        producer.flush(10)
        samples.append(time.perf_counter() - start)
    return Latencies(tuple(samples), len(failures), failures[0] if failures else "")


def create_topic(bootstrap: str, name: str, partitions: int, replication: int) -> float:
    """Creates a topic through the admin API and returns the seconds it took to commit."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    start = time.monotonic()
    futures = admin.create_topics(
        [NewTopic(name, partitions, replication)], operation_timeout=120, request_timeout=130
    )
    for future in futures.values():
        future.result(timeout=140)
    return time.monotonic() - start


def cluster_view(node: BrokerProcess) -> dict[str, Any]:
    """The node's /v1/cluster JSON ({} when it does not answer)."""
    status, body = node.http_get("/v1/cluster", timeout_s=5.0)
    return json.loads(body) if status == 200 else {}


def partition_view(node: BrokerProcess, topic: str) -> list[dict[str, Any]]:
    for entry in cluster_view(node).get("topics", []):
        if entry["name"] == topic:
            return list(entry["partitions"])
    return []


def wait_leaders(node: BrokerProcess, topic: str, partitions: int, timeout_s: float) -> float:
    """Waits until `node` sees a leader for every partition of `topic`; returns seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        view = partition_view(node, topic)
        if len(view) == partitions and all((p.get("leader") or -1) > 0 for p in view):
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"{topic}: not every partition has a leader after {timeout_s}s")


def time_to_ready(node: BrokerProcess, timeout_s: float = 60.0) -> float:
    """Starts the (stopped) node; seconds from Popen to the first /readyz 200."""
    start = time.monotonic()
    node.start()
    while time.monotonic() - start < timeout_s:
        if node.http_get("/readyz", timeout_s=0.5)[0] == 200:
            return time.monotonic() - start
        if not node.is_running():
            raise RuntimeError(f"node exited with {node.returncode}\n{node.log_tail()}")
        time.sleep(0.01)  # the resolution of this measurement
    raise TimeoutError(f"not ready in {timeout_s}s\n{node.log_tail()}")


def start_times(
    base: Path, starts: int, timeout_s: float = 60.0
) -> tuple[list[float], list[float]]:
    """One node: (start times on fresh directories, restart times on a directory with a
    3-partition topic), seconds to /readyz."""
    fresh: list[float] = []
    for i in range(starts):
        node = BrokerProcess(1, base / f"fresh-{i}", settings={"log_level": "WARNING"})
        fresh.append(time_to_ready(node, timeout_s))
        if i == 0:
            create_topic(node.kafka_address, "start", 3, 1)
            wait_leaders(node, "start", 3, 30)
        node.terminate()
    node = BrokerProcess(1, base / "fresh-0", settings={"log_level": "WARNING"})
    restarts = []
    for _ in range(starts):
        restarts.append(time_to_ready(node, timeout_s))
        node.terminate()
    return fresh, restarts


def load_line() -> str:
    """The 1/5/15-minute load averages and core count: results depend on other load."""
    with open("/proc/loadavg") as f:
        one, five, fifteen = f.read().split()[:3]
    return f"load average {one} {five} {fifteen} on {os.cpu_count()} cores"


def failover_producer(bootstrap: str, topic: str, partition: int, stop: Any, out: Any) -> None:
    """Sends one acks=all record at a time to one partition until `stop` is set. Child process.

    Puts (ack times, failures, first failure) on `out`. Ack times are time.monotonic(),
    which on Linux is one clock for every process, so the parent compares them with
    the moments it killed a leader. Retries and reconnects are tuned short, as a
    latency-sensitive application would set them; the defaults back off for up to 1 s.
    """
    from confluent_kafka import Producer

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 0,
        "enable.idempotence": True,
        "message.timeout.ms": 10_000,
        "request.timeout.ms": 5_000,
        "retry.backoff.ms": 20,
        "retry.backoff.max.ms": 100,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        "topic.metadata.refresh.interval.ms": 5_000,
    })  # fmt: skip
    acks: list[float] = []
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            acks.append(time.monotonic())
        else:
            failures.append(str(err))

    value = os.urandom(KIB)
    while not stop.is_set():
        producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
        producer.flush(15)
    out.put((acks, len(failures), failures[0] if failures else ""))
