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
   until every partition has a live leader, as /v1/cluster on a survivor reports it;
   the node is restarted (and every partition led again) before the next step.

1,000 partitions first; 10,000 only if 1,000 were created in under --scale-up-below
seconds and the extrapolated creation fits the --create-budget, otherwise the
extrapolation is printed with the reason. `measure()` returns the rows for bench/all.py.

    python -m bench.scale [--quick] [--partitions 1000,10000] [--idle-seconds 10]
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
    record,
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


def metadata_state(cluster: Cluster) -> str:
    """Per node: applied metadata index, Raft groups (quiesced), topics; for stall reports."""
    parts = []
    for node_id, node in cluster.nodes.items():
        view = cluster_view(node)
        if not view:
            parts.append(f"node {node_id}: no answer")
            continue
        parts.append(
            f"node {node_id}: controller {view.get('controller_id')}, metadata applied "
            f"{view.get('metadata_applied_index')}, groups {view.get('raft_groups')} "
            f"({view.get('raft_groups_quiesced')} quiesced), topics {len(view.get('topics', []))}"
        )
    return "; ".join(parts)


def grow_to(
    cluster: Cluster, have: int, target: int, deadline: float, request_s: float = 60.0
) -> tuple[int, float, bool, list[str]]:
    """Creates topics of 100 until there are `target` partitions or the deadline passes.

    Returns (partitions created, seconds until all of them had a leader or the wait
    gave up, whether all had one, errors). One CreateTopics per topic, in order, each
    waiting at most `request_s`; one that fails is asked for again, and the third
    failure (each reported with every node's metadata state) ends the step.
    """
    start = time.monotonic()
    errors: list[str] = []
    while have < target and time.monotonic() < deadline:
        # Named by count: after a failure the same topic is asked for again.
        name = f"scale-{have // TOPIC_PARTITIONS:03d}"
        try:
            create_one(cluster.bootstrap, name, min(request_s, deadline - time.monotonic()))
        except Exception as error:  # reported with the results
            if "TOPIC_ALREADY_EXISTS" not in str(error):  # a timed-out request applied late
                errors.append(
                    f"{name} after {time.monotonic() - start:.0f} s: {error!r}; "
                    f"{metadata_state(cluster)}"
                )
                print(f"  {errors[-1]}", flush=True)
                if len(errors) >= 3:
                    break
                continue
        have += TOPIC_PARTITIONS
        print(f"  {have:,} partitions created after {time.monotonic() - start:.1f} s", flush=True)
    # A request that timed out may still have been applied: count what exists.
    have = max(have, len(leaders(cluster.node(1))))
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


def failover(cluster: Cluster, partitions: int, timeout_s: float = 300.0) -> tuple[float, int, int]:
    """SIGKILLs the node leading the most partitions; (seconds to all led, node, led).

    -1.0 seconds when the survivors did not elect leaders for all of them in `timeout_s`.
    Prints how many partitions were still without a live leader along the way.
    """
    led = leaders(cluster.node(1))
    by_node = {i: led.count(i) for i in cluster.nodes}
    victim = max(by_node, key=lambda i: by_node[i])
    survivor = cluster.node(next(i for i in cluster.nodes if i != victim))
    start = time.monotonic()
    cluster.kill(victim)
    trace: list[str] = []
    next_report_s = 1.0
    while (elapsed := time.monotonic() - start) < timeout_s:
        now_led = leaders(survivor)
        leaderless = sum(1 for x in now_led if x <= 0 or x == victim)
        if len(now_led) >= partitions and leaderless == 0:
            print(f"  leaderless after the kill: {', '.join(trace) or 'none after 1 s'}")
            return elapsed, victim, by_node[victim]
        if elapsed >= next_report_s:
            trace.append(f"{elapsed:.0f} s: {leaderless}")
            next_report_s *= 2
        time.sleep(0.05)
    print(f"  leaderless after the kill: {', '.join(trace)}")
    return -1.0, victim, by_node[victim]


def restart(cluster: Cluster, node_id: int, partitions: int) -> float:
    """Restarts a killed node; seconds until it is ready and sees every partition led."""
    start = time.monotonic()
    cluster.node(node_id).start()
    cluster.node(node_id).wait_ready(300)
    wait_all_led(cluster.node(node_id), partitions, 300)
    return time.monotonic() - start


def skip_note(target: int, have: int, create_s: float, budget_s: float, limit_s: float) -> str:
    per_partition_s = create_s / have
    return (
        f"{target:,} partitions skipped: {have:,} took {create_s:.0f} s "
        f"({per_partition_s * 1000:.0f} ms per partition), so {target - have:,} more would "
        f"take ~{per_partition_s * (target - have):.0f} s at the same rate (budget "
        f"{budget_s:.0f} s; limit for scaling up {limit_s:.0f} s)"
    )


def measure(
    steps: list[int], idle_s: float = 10.0, scale_up_below_s: float = 60.0,
    create_budget_s: float = 90.0,
) -> tuple[list[ScaleResult], list[str]]:  # fmt: skip
    """Results per partition count, and notes (skipped steps with the extrapolation).

    After each step the node leading the most partitions is SIGKILLed (the failover),
    then restarted before the next step; creation times are cumulative from zero.
    """
    results: list[ScaleResult] = []
    notes: list[str] = []
    base = fresh_dir("scale")
    cluster = start_cluster(3, base / "cluster")
    try:
        have, total_create_s = 0, 0.0
        for i, target in enumerate(steps):
            if i > 0:
                estimate_s = total_create_s / have * (target - have)
                if total_create_s > scale_up_below_s or estimate_s > create_budget_s:
                    notes.append(
                        skip_note(target, have, total_create_s, create_budget_s, scale_up_below_s)
                    )
                    break
            deadline = time.monotonic() + create_budget_s
            have, step_s, all_led, errors = grow_to(cluster, have, target, deadline)
            total_create_s += step_s
            notes += [f"create error: {e}" for e in errors[:3]]
            results.append(measure_step(cluster, have, total_create_s, idle_s))
            if not all_led:
                notes.append(
                    f"{target:,} partitions: creation did not finish in the budget of "
                    f"{create_budget_s:.0f} s (plus the wait for leaders); failover not measured"
                )
                results[-1] = replace(results[-1], failover_s=-1.0)
                break
            seconds, victim, led = failover(cluster, have)
            results[-1] = replace(
                results[-1], failover_s=seconds, killed_node=victim, killed_led=led
            )
            print(f"  {have:,}: failover {seconds:.2f} s (node {victim} led {led})", flush=True)
            if seconds < 0 or have < target:
                if have < target:
                    rate = total_create_s / have
                    notes.append(
                        f"{target:,} partitions not reached: {have:,} took {total_create_s:.0f} s "
                        f"(budget {create_budget_s:.0f} s); at {rate * 1000:.0f} ms per "
                        f"partition {target:,} would take ~{rate * target:.0f} s"
                    )
                break
            if i + 1 < len(steps):
                try:
                    restart_s = restart(cluster, victim, have)
                except (AssertionError, TimeoutError) as error:  # NodeNotReady included
                    first_line = str(error).splitlines()[0]
                    notes.append(
                        f"{have:,}: restarting node {victim} after the failover failed, so the "
                        f"next step was not run: {first_line}; {metadata_state(cluster)}"
                    )
                    break
                notes.append(
                    f"{have:,}: node {victim} restarted, all led again in {restart_s:.1f} s"
                )
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    return results, notes


def record_all(results: list[ScaleResult]) -> None:
    """The figures for bench/all.py, per partition count (CPU and RSS of the largest node)."""
    for r in results:
        n = r.partitions
        record("scale", f"create_s.{n}", r.create_s, "s")
        record("scale", f"idle_cpu_pct.{n}", max(r.idle_cpu_pct), "% of a core", "largest node")
        record("scale", f"rss_mb.{n}", max(r.rss_mb), "MB", "largest node")
        record("scale", f"metadata_ms.{n}", r.metadata_ms, "ms")
        if r.killed_node:
            record("scale", f"failover_s.{n}", r.failover_s, "s", f"{r.killed_led} led")


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
            (f"{r.failover_s:.2f} s" if r.failover_s >= 0 else "not all led in 300 s")
            + f" (node {r.killed_node}, {r.killed_led} led)"
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
    parser.add_argument("--quick", action="store_true", help="300 partitions, to try it out")
    args = parser.parse_args()
    if args.quick:
        args.partitions, args.idle_seconds = "300", 3.0
    steps = [int(x) for x in args.partitions.split(",")]
    print(f"3 nodes, RF3, fsync always, topics of {TOPIC_PARTITIONS} partitions; {load_line()}")
    results, notes = measure(steps, args.idle_seconds, args.scale_up_below, args.create_budget)
    print(f"\nafter the run: {load_line()}")
    report(results, notes)
    record_all(results)


if __name__ == "__main__":
    main()
