"""The workloads issue 11 asks of one node and of three: the same code measures both.

For each record size (100 B, 1 KiB, 16 KiB by default), against a running node or
cluster, with confluent-kafka in separate processes (see bench/_common.py):

1. produce, acks=all, one partition, several runs: MB/s and records/s of acknowledged
   records, the brokers' CPU seconds per MB (summed over the nodes) and their RSS
   sampled every 0.25 s during the runs (the "under load" figure: the largest node);
2. consume from offset 0 of what one produce run wrote, several runs: MB/s;
3. end-to-end latency at 50% of the median peak: a paced producer (same settings) stamps
   each value with time.monotonic() (one clock for all processes on Linux), a consumer
   in another process subtracts it on receipt; p50/p99/p999 over the measured window.

Each figure is the median of the runs with min and max (`Spread`). `record_sizes()`
also appends every figure to the bench's JSON results (bench/all.py's Targets table).
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bench._common import (
    KIB,
    Latencies,
    Spread,
    Throughput,
    consume_all,
    cpu_seconds,
    create_topic,
    median,
    percentile,
    produce_config,
    produce_for,
    record,
    rss_mb,
    wait_leaders,
)
from tests.harness import BrokerProcess

T = TypeVar("T")
SIZES = (100, KIB, 16 * KIB)
# Value layout of the latency workload: 1 byte kind, 8 bytes send time, padding.
_STAMP = struct.Struct(">Bd")
_WARM, _MEASURED, _END = 0, 1, 2
WARM_UP_S = 1.0


@dataclass(frozen=True, slots=True)
class SizeResult:
    value_bytes: int
    produce_mb_s: Spread
    produce_records_s: Spread
    consume_mb_s: Spread
    cpu_ms_per_mb: Spread  # broker CPU (all nodes) per MB acknowledged, per run
    rss_load_mb: float  # largest node RSS sampled during the produce runs
    latency_rate_records_s: float  # the paced rate: 50% of the median peak
    latency_achieved_records_s: float
    latency_ms: tuple[float, float, float]  # p50, p99, p999
    errors: tuple[str, ...]  # first error of each workload that had any


# ---------------------------------------------------------------- sampling the brokers
def run_sampled(
    pids: Sequence[int], fn: Callable[..., T], *args: Any, timeout_s: float = 600.0
) -> tuple[T, float, float]:
    """(fn(*args) in a spawned child, brokers' CPU seconds meanwhile, their largest RSS).

    The CPU count includes the child's interpreter start (about a second of an idle
    broker: a few ms of CPU), a small overestimate next to seconds of load.
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        before = sum(cpu_seconds(p) for p in pids)
        pending = pool.apply_async(fn, args)
        largest = 0.0
        deadline = time.monotonic() + timeout_s
        while not pending.ready() and time.monotonic() < deadline:
            largest = max([largest, *(rss_mb(p) for p in pids)])
            pending.wait(0.25)
        cpu_s = sum(cpu_seconds(p) for p in pids) - before
        return pending.get(max(1.0, deadline - time.monotonic())), cpu_s, largest


# ---------------------------------------------------------------- end-to-end latency
def paced_produce(
    bootstrap: str, topic: str, seconds: float, value_bytes: int, rate_records_s: float
) -> Throughput:
    """Produces at a fixed rate, each value stamped with its send time. Child process.

    The first WARM_UP_S seconds are marked as warm-up (the consumer ignores them); an
    end marker follows the measured window.
    """
    from confluent_kafka import KafkaException, Producer

    # The peak runs' settings (linger 5 ms): half the offered load, the same client. With
    # linger 1 ms the requests are smaller and many more, each one fsync on the broker.
    producer = Producer(produce_config(bootstrap, idempotent=False))
    padding = os.urandom(max(0, value_bytes - _STAMP.size))
    sent = measured = 0
    start = time.monotonic()
    measured_from = start + WARM_UP_S
    deadline = measured_from + seconds
    while (now := time.monotonic()) < deadline:
        due = int((now - start) * rate_records_s) - sent
        kind = _WARM if now < measured_from else _MEASURED
        for _ in range(min(due, 10_000)):
            try:
                producer.produce(topic, _STAMP.pack(kind, time.monotonic()) + padding, partition=0)
                sent += 1
                measured += kind
            except (BufferError, KafkaException):
                producer.poll(0.001)
                break
        producer.poll(0)
        if due <= 0:
            time.sleep(0.0005)
    producer.produce(topic, _STAMP.pack(_END, time.monotonic()) + padding, partition=0)
    left = producer.flush(60)
    # The window is the paced one: the final flush is not part of the rate asked for.
    return Throughput(measured, measured * value_bytes, seconds, left)


def stamped_consume(bootstrap: str, topic: str, ready: Any, timeout_s: float) -> Latencies:
    """Reads from offset 0 until the end marker; seconds from stamp to receipt. Child."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "bench-latency",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
        "fetch.min.bytes": 1,
        "fetch.max.bytes": 50 * 1024 * KIB,
        "max.partition.fetch.bytes": 8 * 1024 * KIB,
    })  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    consumer.consume(1, 1.0)  # connect and fetch once before the producer starts
    ready.set()
    samples: list[float] = []
    errors = 0
    first_error = ""
    deadline = time.monotonic() + timeout_s
    done = False
    while not done and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 0.5):
            now = time.monotonic()
            if msg.error():
                errors += 1
                first_error = first_error or str(msg.error())
                continue
            kind, sent = _STAMP.unpack_from(msg.value() or b"")
            if kind == _MEASURED:
                samples.append(now - sent)
            elif kind == _END:
                done = True
    consumer.close()
    if not done:
        errors += 1
        first_error = first_error or f"no end marker within {timeout_s:.0f} s"
    return Latencies(tuple(samples), errors, first_error)


def e2e_latency(
    bootstrap: str, topic: str, seconds: float, value_bytes: int, rate_records_s: float
) -> tuple[Latencies, Throughput]:
    """Runs the stamped consumer and the paced producer side by side (two processes)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        ready = manager.Event()  # a proxy: pool arguments are pickled
        consumer = pool.apply_async(
            stamped_consume, (bootstrap, topic, ready, seconds + WARM_UP_S + 60)
        )
        if not ready.wait(60):
            raise TimeoutError("the latency consumer did not start")
        produced = pool.apply_async(
            paced_produce, (bootstrap, topic, seconds, value_bytes, rate_records_s)
        ).get(seconds + 120)
        return consumer.get(seconds + 120), produced


# ---------------------------------------------------------------- the matrix
def measure_size(
    bootstrap: str,
    pids: Sequence[int],
    leader_view: BrokerProcess,
    value_bytes: int,
    seconds: float,
    runs: int,
    replication: int,
) -> SizeResult:
    """Produce, consume and latency runs for one record size on fresh topics."""
    topic, lat_topic = f"size-{value_bytes}", f"latency-{value_bytes}"
    for name in (topic, lat_topic):
        create_topic(bootstrap, name, 1, replication)
        wait_leaders(leader_view, name, 1, 30)
    produced: list[Throughput] = []
    cpu_ms_mb: list[float] = []
    rss_load = 0.0
    for _ in range(runs):
        result, cpu_s, rss = run_sampled(
            pids, produce_for, bootstrap, topic, seconds, value_bytes, False
        )
        produced.append(result)
        cpu_ms_mb.append(1000 * cpu_s / (result.value_bytes / 1e6) if result.value_bytes else 0)
        rss_load = max(rss_load, rss)
    first = produced[0].records
    consumed = [run_sampled(pids, consume_all, bootstrap, topic, 0, first)[0] for _ in range(runs)]
    peak = median([r.records_s for r in produced])
    lat, paced = e2e_latency(bootstrap, lat_topic, seconds, value_bytes, peak / 2)
    ms = [s * 1000 for s in lat.seconds] or [0.0]
    errors = [
        f"{what}: {r.errors} errors, first: {r.first_error}"
        for what, rs in (("produce", produced), ("consume", consumed))
        for r in rs
        if r.errors
    ]
    if paced.errors:
        errors.append(f"latency producer: {paced.errors} records not delivered")
    if lat.errors:
        errors.append(f"latency: {lat.errors} errors, first: {lat.first_error}")
    return SizeResult(
        value_bytes,
        Spread(tuple(r.mb_s for r in produced)),
        Spread(tuple(r.records_s for r in produced)),
        Spread(tuple(r.mb_s for r in consumed)),
        Spread(tuple(cpu_ms_mb)),
        rss_load,
        peak / 2,
        len(lat.seconds) / seconds,
        (percentile(ms, 50), percentile(ms, 99), percentile(ms, 99.9)),
        tuple(errors),
    )


def record_sizes(section: str, results: Sequence[SizeResult]) -> None:
    """Appends each size's figures to the JSON results under `section`."""
    for r in results:
        size = r.value_bytes
        record(section, f"produce_mb_s.{size}", r.produce_mb_s, "MB/s")
        record(section, f"produce_records_s.{size}", r.produce_records_s, "records/s")
        record(section, f"consume_mb_s.{size}", r.consume_mb_s, "MB/s")
        record(section, f"cpu_ms_per_mb.{size}", r.cpu_ms_per_mb, "ms/MB")
        record(section, f"rss_load_mb.{size}", r.rss_load_mb, "MB")
        for name, value in zip(("p50", "p99", "p999"), r.latency_ms, strict=True):
            record(section, f"e2e_{name}_ms.{size}", value, "ms")


def size_rows(results: Sequence[SizeResult]) -> list[list[str]]:
    rows = []
    for r in results:
        p50, p99, p999 = r.latency_ms
        rows.append([
            _size(r.value_bytes),
            r.produce_mb_s.show(),
            r.produce_records_s.show("{:,.0f}"),
            r.consume_mb_s.show(),
            r.cpu_ms_per_mb.show("{:.0f}"),
            f"{r.rss_load_mb:.0f}",
            f"{r.latency_achieved_records_s:,.0f}/{r.latency_rate_records_s:,.0f}",
            f"{p50:.1f} / {p99:.1f} / {p999:.1f}",
        ])  # fmt: skip
    return rows


SIZE_HEADER = [
    "record", "produce MB/s", "records/s", "consume MB/s", "CPU ms/MB", "RSS load MB",
    "e2e rate got/asked", "e2e p50 / p99 / p999 ms",
]  # fmt: skip


def _size(value_bytes: int) -> str:
    return f"{value_bytes // KIB} KiB" if value_bytes >= KIB else f"{value_bytes} B"
