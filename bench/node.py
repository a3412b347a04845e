"""One Raftka node, the workloads of issue 11: sizes, latency at half load, recovery, cost.

bench/broker.py holds the single-node checks of issue 5 (1 KiB throughput, idempotence,
light-load latency, start time); this module measures what issue 11 compares across
systems, with the same code as the 3-node figures in bench/cluster.py
(bench/_workloads.py):

1. time to ready: process start to the first /readyz 200, fresh directory and restart
   on a directory with a topic, median (min-max) of several starts;
2. idle RSS after start, produce/consume/latency for 100 B, 1 KiB and 16 KiB records
   (median of runs), CPU per MB, RSS under load, idle RSS after the load;
3. restart recovery: the node takes `--recovery-mb` (1 GB by default) in one
   partition, is SIGKILLed and restarted; time from the start to /readyz and to the
   first acknowledged acks=all write (a new producer, polling from the start).

There is no failover on one node (no other replica takes over); bench/cluster.py has it.
Node defaults (fsync always), data under /tmp/raftka-bench/node.

    python -m bench.node [--quick] [--seconds 5] [--runs 3] [--recovery-mb 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench._common import (
    KIB,
    Spread,
    create_topic,
    exit_on_sigterm,
    fresh_dir,
    load_line,
    print_table,
    produce_for,
    record,
    rss_mb,
    run_in_process,
    start_node,
    start_times,
    verdict,
    wait_leaders,
)
from bench._workloads import SIZE_HEADER, SIZES, measure_size, record_sizes, size_rows
from tests.harness import BrokerProcess

SECTION = "node"


def first_ack_after(node: BrokerProcess, topic: str, started: float, timeout_s: float) -> float:
    """Seconds from `started` to the first acknowledged acks=all write to `topic`."""
    from confluent_kafka import Producer

    producer = Producer({
        "bootstrap.servers": node.kafka_address,
        "acks": "all",
        "linger.ms": 0,
        "message.timeout.ms": int(timeout_s * 1000),
        "retry.backoff.ms": 10,
        "retry.backoff.max.ms": 50,
        "reconnect.backoff.ms": 10,
        "reconnect.backoff.max.ms": 50,
    })  # fmt: skip
    acked: list[float] = []
    failed: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        (failed.append(str(err)) if err else acked.append(time.monotonic()))

    producer.produce(topic, b"x" * KIB, partition=0, on_delivery=on_delivery)
    producer.flush(timeout_s)
    if not acked:
        raise RuntimeError(f"no ack after restart: {failed or 'timeout'}")
    return acked[0] - started


def bench_ready(base: Path, starts: int) -> tuple[Spread, Spread]:
    fresh, restarts = start_times(base, starts)
    return Spread(tuple(fresh)), Spread(tuple(restarts))


def bench_recovery(node: BrokerProcess, mb: int) -> list[list[str]]:
    """Fills one partition with `mb` MB, SIGKILLs the node, times its recovery."""
    create_topic(node.kafka_address, "recovery", 1, 1)
    wait_leaders(node, "recovery", 1, 30)
    filled = run_in_process(
        produce_for, node.kafka_address, "recovery", 600.0, KIB, False, -1, mb * 1_000_000,
        timeout_s=900,
    )  # fmt: skip
    data_mb = filled.value_bytes / 1e6
    node.kill()
    started = time.monotonic()
    node.start()
    node.wait_ready(120)
    ready_s = time.monotonic() - started
    ack_s = first_ack_after(node, "recovery", started, 120)
    record(SECTION, "recovery_ready_s", ready_s, "s", f"{data_mb:.0f} MB")
    record(SECTION, "recovery_first_ack_s", ack_s, "s", f"{data_mb:.0f} MB")
    return [
        [f"restart after SIGKILL with {data_mb:,.0f} MB: to /readyz", f"{ready_s:.2f} s"],
        [f"restart after SIGKILL with {data_mb:,.0f} MB: to first ack", f"{ack_s:.2f} s"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs to try it out")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--starts", type=int, default=5, help="starts for the ready time")
    parser.add_argument("--recovery-mb", type=int, default=1000)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="value bytes")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs, args.starts, args.recovery_mb = 2.0, 1, 2, 100
    sizes = [int(s) for s in args.sizes.split(",")]
    exit_on_sigterm()
    began = time.monotonic()
    base = fresh_dir("node")
    print(f"one node, data under {base}, fsync always, acks=all; {load_line()}")
    print(f"{args.runs} run(s) of {args.seconds:.0f} s per figure; median (min-max)")

    fresh, restarts = bench_ready(base, args.starts)
    node = start_node(base / "load")
    try:
        time.sleep(2.0)  # start-up settles before idle memory is read
        rss_idle = rss_mb(node.pid)
        results = []
        for size in sizes:
            results.append(
                measure_size(node.kafka_address, [node.pid], node, size, args.seconds,
                             args.runs, 1)
            )  # fmt: skip
            print(f"  {size} B done after {time.monotonic() - began:.0f} s", flush=True)
        time.sleep(2.0)
        rss_after = rss_mb(node.pid)
        recovery = bench_recovery(node, args.recovery_mb)
    finally:
        node.terminate()

    record_sizes(SECTION, results)
    record(SECTION, "ready_fresh_s", fresh, "s")
    record(SECTION, "ready_restart_s", restarts, "s")
    record(SECTION, "rss_idle_mb", rss_idle, "MB")
    record(SECTION, "rss_idle_after_load_mb", rss_after, "MB")
    print(f"\nafter the run ({time.monotonic() - began:.0f} s): {load_line()}")
    print_table(
        "One node, acks=all, one partition (e2e latency at 50% of the median peak)",
        SIZE_HEADER,
        size_rows(results),
    )
    print_table(
        "One node: start, memory, recovery",
        ["measurement", "value", "target", ""],
        [
            ["start to /readyz, empty dir", fresh.show("{:.2f}") + " s", "< 1 s",
             verdict(fresh.median < 1)],
            ["start to /readyz, restart", restarts.show("{:.2f}") + " s", "< 1 s",
             verdict(restarts.median < 1)],
            ["idle RSS after start", f"{rss_idle:.0f} MB", "< 80 MB", verdict(rss_idle < 80)],
            ["idle RSS after the load", f"{rss_after:.0f} MB", "< 80 MB",
             verdict(rss_after < 80)],
            *[[*row, "", ""] for row in recovery],
            ["failover", "n/a: one node has no other replica (see bench.cluster)", "", ""],
        ],
    )  # fmt: skip
    for r in results:
        for error in r.errors:
            print(f"{r.value_bytes} B {error}")


if __name__ == "__main__":
    main()
