"""Many partitions on three nodes: 1,000 and 10,000 RF3 partitions.

A partition is a Raft group; a broker with thousands of them pays per group in memory,
in idle ticks and in metadata size. This bench measures, on 3 nodes (fsync always):

1. time to create N RF3 partitions (as topics of 100: one CreateTopics of several
   hundred RF3 partitions runs into the broker's metadata timeout) until every
   partition has a leader;
2. idle CPU (% of one core) per node over 10 s once every Raft group has quiesced
   (/v1/cluster reports raft_groups and raft_groups_quiesced), and RSS per node;
3. the Metadata response time for all topics (confluent-kafka list_topics, median of
   several calls in a separate process);
4. failover: SIGKILL the node that leads the most partitions (about a third) and time
   until every partition has a live leader, as /v1/cluster on a survivor reports it.

1,000 partitions first; 10,000 only if 1,000 were created in under --scale-up-below
seconds and the extrapolated creation fits the --create-budget, otherwise the
extrapolation is printed with the reason. `measure()` returns the rows for bench/all.py.

    python -m bench.scale [--partitions 1000,10000] [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, replace

from bench._common import (
    cluster_view,
    cpu_percent,
    fresh_dir,
    load_line,
    median,
    print_table,
    rss_mb,
    run_in_process,
    start_cluster,
)
from tests.harness import BrokerProcess, Cluster

TOPIC_PARTITIONS = 100


@dataclass(frozen=True, slots=True)
class ScaleResult:
    partitions: int
    create_s: float
    quiesce_s: float  # after creation, until every group on every node quiesced (or gave up)
    quiesced: tuple[tuple[int, int], ...]  # per node: (quiesced groups, groups)
    idle_cpu_pct: tuple[float, ...]  # per node, % of one core
    rss_mb: tuple[float, ...]  # per node
    metadata_ms: float  # median list_topics() time
    failover_s: float
    killed_node: int
    killed_led: int  # partitions the killed node led


# ---------------------------------------------------------------- client side (child process)
def metadata_times(bootstrap: str, calls: int) -> list[float]:
    """Seconds per AdminClient.list_topics() (all topics, every partition). Child process."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.list_topics(timeout=30)  # warm-up: connection and version negotiation
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        admin.list_topics(timeout=30)
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------- cluster views
def leaders(node: BrokerProcess) -> list[int]:
    """Leader per partition as the node sees it (-1 for none), over every topic."""
    view = cluster_view(node)
    return [(p.get("leader") or -1) for t in view.get("topics", []) for p in t["partitions"]]


def wait_all_led(node: BrokerProcess, partitions: int, timeout_s: float, dead: int = 0) -> float:
    """Seconds until `node` sees `partitions` partitions, each led by a live node."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        led = leaders(node)
        if len(led) >= partitions and all(x > 0 and x != dead for x in led):
            return time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(f"not every partition has a live leader after {timeout_s:.0f}s")


def wait_quiesced(cluster: Cluster, timeout_s: float) -> tuple[float, tuple[tuple[int, int], ...]]:
    """Waits until every Raft group on every node has quiesced (or the timeout)."""
    start = time.monotonic()
    while True:
        counts = []
        for node in cluster.nodes.values():
            view = cluster_view(node)
            counts.append((view.get("raft_groups_quiesced", 0), view.get("raft_groups", 0)))
        # The metadata group keeps ticking on purpose: all but one group is "quiesced".
        if all(q >= g - 1 for q, g in counts) or time.monotonic() - start > timeout_s:
            return time.monotonic() - start, tuple(counts)
        time.sleep(0.5)


# ---------------------------------------------------------------- one scale step
def create_one(bootstrap: str, name: str, timeout_s: float) -> None:
    """One CreateTopics of 100 RF3 partitions, waiting at most `timeout_s` for the answer."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    timeout_s = max(5.0, timeout_s)
    futures = admin.create_topics(
        [NewTopic(name, TOPIC_PARTITIONS, 3)],
        operation_timeout=timeout_s, request_timeout=timeout_s + 5,
    )  # fmt: skip
    for future in futures.values():
        future.result(timeout=timeout_s + 10)


def grow_to(
    cluster: Cluster, have: int, target: int, deadline: float
) -> tuple[int, float, bool, list[str]]:
    """Creates topics of 100 until there are `target` partitions or the deadline passes.

    Returns (partitions requested, seconds until all of them had a leader or the wait
    gave up, whether all had one, errors). One CreateTopics per topic, in order.
    """
    start = time.monotonic()
    errors: list[str] = []
    while have < target and time.monotonic() < deadline:
        name = f"scale-{have // TOPIC_PARTITIONS:03d}"
        try:
            create_one(cluster.bootstrap, name, deadline - time.monotonic())
        except Exception as error:  # reported with the results
            errors.append(f"{name}: {error}")
        have += TOPIC_PARTITIONS
        print(f"  {have:,} partitions requested after {time.monotonic() - start:.1f} s", flush=True)
    try:
        wait_all_led(cluster.node(1), have, max(20.0, deadline - time.monotonic()))
    except TimeoutError as error:
        led = sum(1 for x in leaders(cluster.node(1)) if x > 0)
        errors.append(
            f"{led:,} of {have:,} partitions led after {time.monotonic() - start:.0f} s: {error}"
        )
        return have, time.monotonic() - start, False, errors
    return have, time.monotonic() - start, True, errors


def measure_step(cluster: Cluster, partitions: int, create_s: float, idle_s: float) -> ScaleResult:
    quiesce_s, quiesced = wait_quiesced(cluster, 20.0)
    pids = [p.pid for p in cluster.nodes.values()]
    cpu = cpu_percent(pids, idle_s)
    rss = [rss_mb(pid) for pid in pids]
    meta = run_in_process(metadata_times, cluster.bootstrap, 5)
    return ScaleResult(
        partitions, create_s, quiesce_s, quiesced, tuple(cpu), tuple(rss),
        median(meta) * 1000, 0.0, 0, 0,
    )  # fmt: skip


def failover(cluster: Cluster, partitions: int) -> tuple[float, int, int]:
    """SIGKILLs the node leading the most partitions; (seconds to all led, node, led)."""
    led = leaders(cluster.node(1))
    by_node = {i: led.count(i) for i in cluster.nodes}
    victim = max(by_node, key=lambda i: by_node[i])
    survivor = cluster.node(next(i for i in cluster.nodes if i != victim))
    start = time.monotonic()
    cluster.kill(victim)
    wait_all_led(survivor, partitions, 60.0, dead=victim)
    return time.monotonic() - start, victim, by_node[victim]


def measure(
    steps: list[int], idle_s: float = 10.0, scale_up_below_s: float = 60.0,
    create_budget_s: float = 90.0,
) -> tuple[list[ScaleResult], list[str]]:  # fmt: skip
    """Results per partition count, and notes (skipped steps with the extrapolation)."""
    results: list[ScaleResult] = []
    notes: list[str] = []
    base = fresh_dir("scale")
    cluster = start_cluster(3, base / "cluster")
    try:
        have, last_create_s = 0, 0.0
        for i, target in enumerate(steps):
            if i > 0:
                per_partition_s = last_create_s / have
                estimate_s = per_partition_s * (target - have)
                if last_create_s > scale_up_below_s or estimate_s > create_budget_s:
                    notes.append(
                        f"{target:,} partitions skipped: {have:,} took {last_create_s:.0f} s "
                        f"({per_partition_s * 1000:.0f} ms per partition), so {target - have:,} "
                        f"more would take ~{estimate_s:.0f} s at the same rate (budget "
                        f"{create_budget_s:.0f} s; limit for scaling up {scale_up_below_s:.0f} s)"
                    )
                    break
            deadline = time.monotonic() + create_budget_s
            have, last_create_s, all_led, errors = grow_to(cluster, have, target, deadline)
            notes += [f"create error: {e}" for e in errors[:3]]
            results.append(measure_step(cluster, have, last_create_s, idle_s))
            if not all_led:
                notes.append(
                    f"{target:,} partitions: creation did not finish in the budget of "
                    f"{create_budget_s:.0f} s (plus the wait for leaders); failover not measured"
                )
                results[-1] = replace(results[-1], failover_s=-1.0)
                break
            if have < target:
                rate = last_create_s / have
                notes.append(
                    f"{target:,} partitions not reached: {have:,} took {last_create_s:.0f} s "
                    f"(budget {create_budget_s:.0f} s); at {rate * 1000:.0f} ms per partition "
                    f"{target:,} would take ~{rate * target:.0f} s"
                )
                break
        if results and results[-1].failover_s == 0.0:
            seconds, victim, led = failover(cluster, have)
            last = results[-1]
            results[-1] = ScaleResult(
                last.partitions, last.create_s, last.quiesce_s, last.quiesced,
                last.idle_cpu_pct, last.rss_mb, last.metadata_ms, seconds, victim, led,
            )  # fmt: skip
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    return results, notes


# ---------------------------------------------------------------- report
def report(results: list[ScaleResult], notes: list[str]) -> None:
    rows = []
    for r in results:
        rows.append([
            f"{r.partitions:,}",
            f"{r.create_s:.1f} s" + ("" if r.failover_s >= 0 else " (not all led)"),
            " / ".join(f"{c:.1f}%" for c in r.idle_cpu_pct),
            " / ".join(f"{m:.0f}" for m in r.rss_mb) + " MB",
            f"{r.metadata_ms:.0f} ms",
            f"{r.failover_s:.2f} s (node {r.killed_node}, {r.killed_led} led)"
            if r.killed_node else "not measured",
        ])  # fmt: skip
    print_table(
        "Partitions RF3 on 3 nodes (nodes 1 / 2 / 3; idle CPU in % of one core)",
        ["partitions", "create", "idle CPU", "RSS", "Metadata", "failover (SIGKILL)"],
        rows,
    )
    for r in results:
        quiesced = ", ".join(f"{q}/{g}" for q, g in r.quiesced)
        print(
            f"{r.partitions:,}: quiesced Raft groups per node {quiesced} "
            f"{r.quiesce_s:.1f} s after creation"
        )
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", default="1000,10000", help="steps, comma separated")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="CPU sample length")
    parser.add_argument(
        "--scale-up-below",
        type=float,
        default=60.0,
        help="go to the next step only if the last took less (s)",
    )
    parser.add_argument("--create-budget", type=float, default=90.0,
                        help="skip a step whose extrapolated creation takes longer (s)")  # fmt: skip
    args = parser.parse_args()
    steps = [int(x) for x in args.partitions.split(",")]
    print(f"3 nodes, RF3, fsync always, topics of {TOPIC_PARTITIONS} partitions; {load_line()}")
    results, notes = measure(steps, args.idle_seconds, args.scale_up_below, args.create_budget)
    print(f"\nafter the run: {load_line()}")
    report(results, notes)


if __name__ == "__main__":
    main()
