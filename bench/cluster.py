"""Three nodes, replication factor 3: the workloads of issue 11, failover, catch-up, idle cost.

Prints, in one run on this machine, next to the targets of issues 6 and 11 (printed, not
asserted); every figure is also recorded for bench/all.py's Targets table:

1. time to ready: from starting three fresh processes to every /readyz 200, and RSS
   per node once idle;
2. produce/consume/latency for 100 B, 1 KiB and 16 KiB records to one RF3 partition,
   acks=all (bench/_workloads.py, the same code as the one-node figures of bench/node.py):
   MB/s and records/s (median of runs, min-max), consume MB/s, end-to-end p50/p99/p999 at
   50% of the median peak, CPU ms per MB summed over the nodes, RSS under load; and
   p50/p99 of single produce round trips (one record, acks=all, flush);
3. restart recovery: a follower is SIGKILLed, the others take `--recovery-mb` (1 GB by
   default), the follower restarts; time to its /readyz and until its log end offset
   reaches the leader's (the rate, and 1 GB extrapolated when less was written);
4. failover: an idempotent producer sends one record at a time to a partition while its
   leader is SIGKILLed; the time from the kill to the next acknowledged record, median
   and max over `--kills` kills (the killed node is restarted and ready before the next);
5. idle cost: CPU % of one core and RSS per node with N idle RF3 partitions, and how long
   creating those partitions took (300, then 1000 if the 300 were created quickly enough).

Nodes run with their defaults (fsync always), data under /tmp/raftka-bench/cluster.

    python -m bench.cluster [--quick] [--seconds 5] [--runs 3] [--kills 10] [--recovery-mb 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

from bench._common import (
    KIB,
    Spread,
    Throughput,
    cluster_view,
    cpu_percent,
    create_topic,
    failover_producer,
    fresh_dir,
    load_line,
    median,
    partition_view,
    percentile,
    print_table,
    produce_for,
    produce_latencies,
    record,
    rss_mb,
    run_in_process,
    start_cluster,
    verdict,
    wait_leaders,
)
from bench._workloads import SIZE_HEADER, SIZES, SizeResult, measure_size, record_sizes, size_rows
from tests.harness import BrokerProcess, Cluster

VALUE_BYTES = KIB
SECTION = "cluster"


def any_running(cluster: Cluster) -> BrokerProcess:
    return cluster.node(cluster.running()[0])


def leader_of(cluster: Cluster, topic: str, partition: int) -> int:
    """The partition's leader as the running nodes see it (-1 while unknown)."""
    view = partition_view(any_running(cluster), topic)
    return (view[partition]["leader"] or -1) if len(view) > partition else -1


def stable_leader(cluster: Cluster, topic: str, partition: int, timeout_s: float = 20.0) -> int:
    """The leader every running node names, unchanged over half a second (-1 if none).

    After a restart, leadership may be transferred back to the restarted node for
    balance; killing a node that was leader a moment ago would time no failover.
    """
    deadline = time.monotonic() + timeout_s
    previous: tuple[int, int] | None = None
    while time.monotonic() < deadline:
        views = [partition_view(cluster.node(i), topic) for i in cluster.running()]
        named = {
            (v[partition].get("leader") or -1, v[partition].get("leader_epoch") or -1)
            for v in views
            if len(v) > partition
        }
        agreed = len(named) == 1 and len(views) == len(cluster.running())
        current: tuple[int, int] | None = named.pop() if agreed else None
        if current is not None and current[0] > 0 and current == previous:
            return int(current[0])
        previous = current
        time.sleep(0.5)
    return -1


def local_offsets(node: BrokerProcess, topic: str, partition: int) -> tuple[int, int]:
    """(log end offset, high watermark) of this node's replica; (-1, -1) if unknown."""
    view = partition_view(node, topic)
    if len(view) <= partition or view[partition].get("log_end_offset") is None:
        return -1, -1
    entry = view[partition]
    return entry["log_end_offset"], entry["high_watermark"]


# ---------------------------------------------------------------- measurements
def bench_sizes(cluster: Cluster, sizes: list[int], seconds: float, runs: int) -> list[SizeResult]:
    pids = [p.pid for p in cluster.nodes.values()]
    results = []
    for size in sizes:
        results.append(
            measure_size(cluster.bootstrap, pids, cluster.node(1), size, seconds, runs, 3)
        )
        print(f"  {size} B done", flush=True)
    record_sizes(SECTION, results)
    return results


def bench_round_trips(cluster: Cluster, samples: int) -> list[list[str]]:
    create_topic(cluster.bootstrap, "latency", 1, 3)
    wait_leaders(cluster.node(1), "latency", 1, 30)
    lat = run_in_process(produce_latencies, cluster.bootstrap, "latency", 0, samples, VALUE_BYTES)
    ms = [s * 1000 for s in lat.seconds]
    if lat.errors:
        print(f"latency: {lat.errors} errors, first: {lat.first_error}")
    return [
        ["round trip p50 (1 KiB, one at a time)", f"{percentile(ms, 50):.2f} ms", "", "", ""],
        ["round trip p99", f"{percentile(ms, 99):.2f} ms", f"max {max(ms):.1f} ms", "", ""],
    ]


def bench_catch_up(cluster: Cluster, mb: int) -> list[list[str]]:
    """A follower misses `mb` MB (at most 5 minutes of produce) and catches up."""
    topic = "catchup"
    create_topic(cluster.bootstrap, topic, 1, 3)
    wait_leaders(cluster.node(1), topic, 1, 30)
    leader = leader_of(cluster, topic, 0)
    follower = next(i for i in cluster.nodes if i != leader)
    cluster.kill(follower)
    result = run_in_process(
        produce_for, cluster.bootstrap, topic, 300.0, VALUE_BYTES, False, -1, mb * 1_000_000,
        timeout_s=600,
    )  # fmt: skip
    _report_errors("catch-up load", result)
    target_offset, _ = local_offsets(cluster.node(leader), topic, 0)
    missed_mb = result.value_bytes / 1e6
    node = cluster.node(follower)
    start = time.monotonic()
    node.start()
    node.wait_ready(60)
    ready_s = time.monotonic() - start
    while time.monotonic() - start < 300:
        if local_offsets(node, topic, 0)[0] >= target_offset:
            break
        time.sleep(0.05)
    else:
        return [["catch-up", "did not finish in 300 s", "", "", "MISSED"]]
    catch_up_s = time.monotonic() - start
    rate = missed_mb / catch_up_s
    note = f"{missed_mb:.0f} MB"
    record(SECTION, "recovery_ready_s", ready_s, "s", note)
    record(SECTION, "recovery_catch_up_s", catch_up_s, "s", note)
    record(SECTION, "recovery_catch_up_mb_s", rate, "MB/s", note)
    return [
        [f"catch-up of {missed_mb:.0f} MB ({target_offset:,} records)", f"{catch_up_s:.1f} s",
         f"ready in {ready_s:.1f} s", "", ""],
        ["catch-up rate (1 GB extrapolated)", f"{rate:.1f} MB/s", f"1 GB ~ {1000 / rate:.0f} s",
         "", ""],
    ]  # fmt: skip


def bench_failover(cluster: Cluster, kills: int) -> list[list[str]]:
    topic = "failover"
    create_topic(cluster.bootstrap, topic, 1, 3)
    wait_leaders(cluster.node(1), topic, 1, 30)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    out: Any = ctx.Queue()
    producer = ctx.Process(
        target=failover_producer, args=(cluster.bootstrap, topic, 0, stop, out), daemon=True
    )
    producer.start()
    time.sleep(3.0)  # the producer connects and acknowledges records before the first kill
    kill_times: list[float] = []
    victims: list[int] = []
    try:
        for _ in range(kills):
            leader = stable_leader(cluster, topic, 0)
            if leader < 1:
                print("failover: no stable leader before a kill; stopping early")
                break
            kill_times.append(time.monotonic())
            victims.append(leader)
            cluster.kill(leader)
            time.sleep(2.5)  # long enough for the longest failover of interest
            cluster.node(leader).start()
            cluster.node(leader).wait_ready(60)
            time.sleep(1.0)  # the restarted node catches up before the next kill
    finally:
        stop.set()
        acks, failures, first_failure = out.get(timeout=60)
        producer.join(30)
    gaps = []
    for kill_s in kill_times:
        after = [a for a in acks if a > kill_s]
        gaps.append(after[0] - kill_s if after else float("inf"))
    if failures:
        print(f"failover producer: {failures} records failed, first: {first_failure}")
    print(
        f"failover: killed nodes {victims}; kill-to-next-ack "
        f"{', '.join(f'{g:.2f}' for g in gaps)} s; {len(acks):,} records acknowledged"
    )
    med, worst = median(gaps), max(gaps)
    record(SECTION, "failover_s", Spread(tuple(gaps)), "s", f"{len(gaps)} SIGKILLs")
    return [
        [f"failover median ({len(gaps)} SIGKILLs)", f"{med:.2f} s", "", "< 1 s", verdict(med < 1)],
        ["failover max", f"{worst:.2f} s", "", "< 2 s", verdict(worst < 2)],
    ]  # fmt: skip


def idle_row(cluster: Cluster, partitions: int, create_s: float, sample_s: float) -> list[str]:
    pids = [p.pid for p in cluster.nodes.values()]
    quiesced = wait_quiesced(cluster, 15.0)
    cpu = cpu_percent(pids, sample_s)
    rss = [rss_mb(pid) for pid in pids]
    return [
        f"{partitions} idle RF3 partitions",
        " / ".join(f"{c:.0f}%" for c in cpu),
        " / ".join(f"{r:.0f}" for r in rss) + " MB",
        f"created in {create_s:.1f} s; quiesced {quiesced}",
        "< 10% per node" if partitions >= 1000 else "",
        verdict(max(cpu) < 10) if partitions >= 1000 else "",
    ]


def wait_quiesced(cluster: Cluster, timeout_s: float) -> str:
    """Waits (bounded) until every node's Raft groups but the metadata group have quiesced.

    Idle groups stop ticking once quiesced; measuring before that would charge the
    creation's aftermath to idleness. Returns "q/n" per node as seen at the end.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        views = [cluster_view(p) for p in cluster.nodes.values()]
        counts = [(v.get("raft_groups_quiesced", 0), v.get("raft_groups", 0)) for v in views]
        # The metadata group keeps ticking on purpose.
        if all(q >= n - 1 for q, n in counts) or time.monotonic() > deadline:
            return " / ".join(f"{q}/{n}" for q, n in counts)
        time.sleep(0.5)


def bench_idle(
    cluster: Cluster, sample_s: float, create_budget_s: float, steps: tuple[int, ...] = (300, 1000)
) -> list[list[str]]:
    """Idle cost with the few partitions above, then 300, then 1000 idle partitions.

    Partitions are created as topics of 100: one CreateTopics of 700 partitions RF3
    timed out in the broker (REQUEST_TIMED_OUT after its 10 s metadata timeout) on
    this machine. CPU is sampled once the groups have quiesced (at most 15 s). The step to 1000 is skipped when the 300 took too long.
    """
    rows = [idle_row(cluster, _partition_count(cluster), 0.0, sample_s)]
    rows[0][3] = "(the topics above)"
    created = 0
    for target in steps:
        start = time.monotonic()
        while created < target:
            topic = f"idle-{created // 100:02d}"
            try:
                create_topic(cluster.bootstrap, topic, 100, 3)
            except Exception as error:  # the broker's answer is the result, printed
                print(f"creating {topic} (100 partitions RF3) failed: {error}")
            try:
                wait_leaders(cluster.node(1), topic, 100, 30)
            except TimeoutError as error:
                readiness = [p.http_get("/readyz")[1].decode()[:80] for p in cluster.nodes.values()]
                print(f"stuck at {created} partitions; /readyz per node: {readiness}")
                rows.append([f"{target} partitions: {error}", "", "", "", "", "MISSED"])
                return rows
            created += 100
        create_s = time.monotonic() - start
        rows.append(idle_row(cluster, _partition_count(cluster), create_s, sample_s))
        estimate_s = create_s * 700 / 300
        if target == 300 and 1000 in steps and estimate_s > create_budget_s:
            rows.append([f"1000 skipped: 700 more would take ~{estimate_s:.0f} s",
                         "", "", "", "", "MISSED"])  # fmt: skip
            break
    return rows


def _partition_count(cluster: Cluster) -> int:
    view = cluster_view(cluster.node(1))
    return sum(len(t["partitions"]) for t in view.get("topics", []))


def _report_errors(name: str, result: Throughput) -> None:
    if result.errors:
        print(f"{name}: {result.errors} errors, first: {result.first_error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs to try it out")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="value bytes")
    parser.add_argument("--recovery-mb", type=int, default=1000, help="a follower misses this")
    parser.add_argument("--latency-count", type=int, default=500)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="CPU sample length")
    parser.add_argument("--create-budget", type=float, default=90.0,
                        help="skip 1000 partitions if creating 700 more would take longer")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs, args.recovery_mb, args.latency_count = 2.0, 1, 100, 100
        args.kills, args.idle_seconds = 3, 2.0
    sizes = [int(s) for s in args.sizes.split(",")]
    base = fresh_dir("cluster")
    print(f"3 nodes, RF3, data under {base}, fsync always; {load_line()}")
    print(f"{args.runs} run(s) of {args.seconds:.0f} s per figure; median (min-max)")
    started = time.monotonic()
    cluster = start_cluster(3, base)
    ready_s = time.monotonic() - started
    rows: list[list[str]] = []
    try:
        time.sleep(2.0)  # start-up settles before idle memory is read
        rss_idle = [rss_mb(p.pid) for p in cluster.nodes.values()]
        sized = bench_sizes(cluster, sizes, args.seconds, args.runs)
        rows += bench_round_trips(cluster, args.latency_count)
        rows += bench_catch_up(cluster, args.recovery_mb)
        rows += bench_failover(cluster, args.kills)
        steps = (100,) if args.quick else (300, 1000)
        idle = bench_idle(cluster, args.idle_seconds, args.create_budget, steps)
    finally:
        cluster.stop_all()
    record(SECTION, "ready_s", ready_s, "s", "3 fresh nodes")
    record(SECTION, "rss_idle_mb", max(rss_idle), "MB", "largest node")
    rows[:0] = [
        ["start to /readyz, 3 fresh nodes", f"{ready_s:.2f} s", "", "< 1 s", verdict(ready_s < 1)],
        ["idle RSS after start", " / ".join(f"{r:.0f}" for r in rss_idle) + " MB", "",
         "< 80 MB", verdict(max(rss_idle) < 80)],
    ]  # fmt: skip
    print(f"\nafter the run ({time.monotonic() - started:.0f} s): {load_line()}")
    print_table(
        "Three nodes RF3, acks=all, one partition (e2e latency at 50% of the median peak; "
        "CPU summed over nodes, RSS of the largest)",
        SIZE_HEADER,
        size_rows(sized),
    )
    for r in sized:
        for error in r.errors:
            print(f"{r.value_bytes} B {error}")
    print_table(
        "Three nodes, replication factor 3", ["measurement", "value", "", "target", ""], rows
    )
    print_table(
        "Idle cost per node (nodes 1 / 2 / 3; CPU in % of one core)",
        ["partitions", "CPU", "RSS", "creation", "target", ""],
        idle,
    )


if __name__ == "__main__":
    main()
