"""One broker node against confluent-kafka: throughput, latency, start time, idle memory.

Prints, in one run on this machine, next to the targets of issue 5 (printed, not asserted):

1. time from process start to /readyz 200 (a fresh data directory, then restarts on
   the same directory with a topic in it), median of several starts;
2. idle RSS of the broker (VmRSS), once right after start and once after the load;
3. produce throughput, acks=all, 1 KiB incompressible values, linger.ms=5,
   batch.size=256 KiB, one partition, non-idempotent and idempotent; the producer runs
   in a separate process and the rate counts acknowledged records only. The runs are
   interleaved over `--rounds` rounds (the machine is shared: load comes and goes) and
   the medians are printed. A third, reference run is non-idempotent with one request
   in flight: librdkafka counts *messages* against the idempotent producer's window of
   five in-flight requests per partition, so with batches of more than five records an
   idempotent producer never has more than one ProduceRequest in flight per partition,
   and its rate is one batch per broker round trip (write, fsync, commit, answer). The
   reference row separates that client limit from the broker's cost of idempotence;
4. consume throughput: everything the non-idempotent runs wrote, from offset 0, assign mode;
5. p50/p99 of single produce round trips at light load (one record, acks=all, flush).

The node runs with its defaults (fsync always), data under /tmp/raftka-bench/broker.
`--profile FILE` also records the broker under py-spy during one extra produce run and
writes a speedscope/flamegraph file (py-spy must be installed in the venv).

    python -m bench.broker [--seconds 5] [--rounds 3] [--profile /tmp/broker-produce.txt]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench._common as common
from bench._common import (
    KIB,
    Throughput,
    consume_all,
    create_topic,
    fresh_dir,
    load_line,
    median,
    percentile,
    print_table,
    produce_for,
    produce_latencies,
    rss_mb,
    run_in_process,
    start_node,
    start_times,
    verdict,
    wait_leaders,
)
from tests.harness import BrokerProcess

VALUE_BYTES = KIB


def produce_one_in_flight(
    bootstrap: str, topic: str, seconds: float, value_bytes: int
) -> Throughput:
    """`produce_for`, non-idempotent, with max.in.flight.requests.per.connection=1.

    Runs in its own spawned process, so swapping the shared producer config there
    touches nothing else.
    """
    base_config = common.produce_config

    def one_in_flight(bootstrap: str, *, idempotent: bool) -> dict[str, Any]:
        return {
            **base_config(bootstrap, idempotent=idempotent),
            "max.in.flight.requests.per.connection": 1,
        }

    setattr(common, "produce_config", one_in_flight)  # noqa: B010 (a module global)
    return produce_for(bootstrap, topic, seconds, value_bytes, False)


def median_run(runs: list[Throughput]) -> Throughput:
    """The run with the median rate."""
    return sorted(runs, key=lambda r: r.mb_s)[len(runs) // 2]


def bench_start(base: Path, starts: int) -> tuple[list[float], list[float]]:
    """(fresh-directory start times, restart times on a directory with a topic)."""
    return start_times(base, starts, timeout_s=30.0)


def profile_produce(node: BrokerProcess, topic: str, seconds: float, out: str) -> None:
    """Records the broker with py-spy while a producer runs; prints where the file went."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        print(f"\nprofile skipped: {py_spy} not installed (pip install py-spy)")
        return
    fmt = "raw" if out.endswith(".txt") else "speedscope"
    spy = subprocess.Popen(
        [str(py_spy), "record", "--pid", str(node.pid), "--rate", "200", "--format", fmt,
         "--output", out, "--duration", str(int(seconds) + 2), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches before the load starts
    run_in_process(produce_for, node.kafka_address, topic, seconds, VALUE_BYTES, False)
    spy.wait(60)
    print(f"\nprofile of the broker during {seconds:.0f} s of produce: {out} ({fmt})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved produce rounds")
    parser.add_argument("--starts", type=int, default=5, help="starts for the ready time")
    parser.add_argument("--latency-count", type=int, default=1000)
    parser.add_argument("--profile", default="", help="py-spy output file (optional)")
    args = parser.parse_args()
    started = time.monotonic()
    base = fresh_dir("broker")
    print(f"one node, data under {base}, fsync always, {VALUE_BYTES} B values; {load_line()}")

    fresh, restarts = bench_start(base, args.starts)
    shutil.rmtree(base / "fresh-0", ignore_errors=True)

    node = start_node(base / "load")
    try:
        for topic in ("plain", "idempotent", "one-in-flight", "latency"):
            create_topic(node.kafka_address, topic, 1, 1)
            wait_leaders(node, topic, 1, 30)
        time.sleep(2.0)  # let the start-up settle before reading idle memory
        rss_start = rss_mb(node.pid)

        runs: dict[str, list[Throughput]] = {"plain": [], "idempotent": [], "one": []}
        address = node.kafka_address
        for _ in range(args.rounds):
            runs["plain"].append(
                run_in_process(produce_for, address, "plain", args.seconds, VALUE_BYTES, False)
            )
            runs["idempotent"].append(
                run_in_process(produce_for, address, "idempotent", args.seconds, VALUE_BYTES, True)
            )
            runs["one"].append(
                run_in_process(
                    produce_one_in_flight, address, "one-in-flight", args.seconds, VALUE_BYTES
                )
            )
        plain, idem, one = (median_run(runs[k]) for k in ("plain", "idempotent", "one"))
        totals = {k: sum(r.records for r in rs) for k, rs in runs.items()}
        consumed = run_in_process(consume_all, address, "plain", 0, totals["plain"])
        lat = run_in_process(
            produce_latencies, node.kafka_address, "latency", 0, args.latency_count, VALUE_BYTES
        )
        time.sleep(2.0)
        rss_after = rss_mb(node.pid)
        if args.profile:
            create_topic(node.kafka_address, "profile", 1, 1)
            wait_leaders(node, "profile", 1, 30)
            profile_produce(node, "profile", args.seconds, args.profile)
    finally:
        node.terminate()

    ms = [s * 1000 for s in lat.seconds]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    ratio = idem.mb_s / plain.mb_s if plain.mb_s else 0.0
    ratio_one = idem.mb_s / one.mb_s if one.mb_s else 0.0
    rows = [
        ["produce acks=all", f"{plain.mb_s:.1f} MB/s", f"{plain.records_s:,.0f}",
         ">= 100 MB/s", verdict(plain.mb_s >= 100)],
        ["produce acks=all idempotent", f"{idem.mb_s:.1f} MB/s", f"{idem.records_s:,.0f}",
         f">= 90% of plain ({ratio:.0%})", verdict(ratio >= 0.9)],
        ["produce acks=all, 1 in flight", f"{one.mb_s:.1f} MB/s", f"{one.records_s:,.0f}",
         f"(idempotent: {ratio_one:.0%} of it)", ""],
        ["consume from offset 0", f"{consumed.mb_s:.1f} MB/s", f"{consumed.records_s:,.0f}",
         ">= 250 MB/s", verdict(consumed.mb_s >= 250)],
        ["produce latency p50", f"{p50:.2f} ms", "", "", ""],
        ["produce latency p99", f"{p99:.2f} ms", "", "< 10 ms", verdict(p99 < 10)],
        ["start to /readyz, empty dir", f"{median(fresh):.2f} s", "", "< 1 s",
         verdict(median(fresh) < 1)],
        ["start to /readyz, restart", f"{median(restarts):.2f} s", "", "< 1 s",
         verdict(median(restarts) < 1)],
        ["idle RSS after start", f"{rss_start:.0f} MB", "", "< 80 MB", verdict(rss_start < 80)],
        ["idle RSS after the load", f"{rss_after:.0f} MB", "", "< 80 MB",
         verdict(rss_after < 80)],
    ]  # fmt: skip
    print(f"\nafter the run ({time.monotonic() - started:.0f} s): {load_line()}")
    print_table(
        "Single node (medians of starts and of produce rounds; rates count acknowledged records)",
        ["measurement", "value", "records/s", "target", ""],
        rows,
    )
    for name, key in (("plain", "plain"), ("idempotent", "idempotent"), ("1 in flight", "one")):
        print(f"{name}: {', '.join(f'{r.mb_s:.1f}' for r in runs[key])} MB/s")
    print(
        f"\nrecords: produced {totals['plain']:,} + {totals['idempotent']:,} idempotent + "
        f"{totals['one']:,} with 1 in flight in {args.rounds} interleaved rounds of "
        f"~{args.seconds:.0f} s, consumed {consumed.records:,}; latency samples "
        f"{len(ms)}, max {max(ms):.2f} ms; starts: fresh "
        f"{', '.join(f'{s:.2f}' for s in fresh)} s, restart "
        f"{', '.join(f'{s:.2f}' for s in restarts)} s"
    )
    results = [(name, r) for name, rs in runs.items() for r in rs] + [("consume", consumed)]
    for name, result in results:
        if result.errors:
            print(f"{name}: {result.errors} errors, first: {result.first_error}")
    if lat.errors:
        print(f"latency: {lat.errors} errors, first: {lat.first_error}")


if __name__ == "__main__":
    main()
