"""Consumer groups against one broker node: formation, rebalance and offset-commit rates.

Prints, in one run on this machine, next to the targets of issue 7 (printed, not asserted):

1. form: time from ten confluent-kafka consumers subscribing (heartbeat.interval.ms=100,
   session.timeout.ms=6000, range assignor, a 10-partition topic) until every one of them
   holds its final one-partition assignment; target < 1 s with the initial rebalance
   delay at 0 (the broker's default);
2. rebalance: time from one member's close() (a LeaveGroup) until the nine others hold
   assignments covering all ten partitions again; target < 1 s;
3. offset commits per second: synchronous commits (one partition each) from 1 client,
   and from 8 concurrent clients (each its own connection and group), for a few seconds;
   the 8 groups once spread over 8 `__consumer_offsets` partitions, once all on one
   (commits to one partition share an fsync; each partition's log is fsynced on its own);
4. the `__consumer_offsets` partition of the single-client group after its commits: its
   log start and end (compaction starts once a shard grew by more than
   max(1000, 2 x live keys) records since its load or last compaction).

Why (1) needs the join window (`group_join_window_ms`, default 100 ms): the ten
consumers reach the coordinator tens of milliseconds apart. Completing a rebalance as
soon as the members known so far have joined (what Kafka does with
group.initial.rebalance.delay.ms=0) hands out a generation that the next arrival at once
invalidates; librdkafka sends at most one JoinGroup per second, so each such extra round
cost about a second (formation was bimodal, ~0.15 s or ~2 s, median ~2 s). With the
window the group forms in one round: ~window + join/sync round trips. `--join-window-ms
0` shows the old behaviour.

Each measurement runs in a spawned child process (see bench/_common.py); formation and
rebalance are the median of several rounds, each with a fresh group.

    python -m bench.groups [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench._common import (
    create_topic,
    fresh_dir,
    load_line,
    median,
    print_table,
    run_in_process,
    start_node,
    verdict,
)
from broker.groups.offsets_log import partition_for_group
from tests.harness import BrokerProcess

MEMBERS = 10
PARTITIONS = 10
OFFSETS_PARTITIONS = 10  # the broker's default offsets_topic_partitions
TARGET_S = 1.0


@dataclass(frozen=True, slots=True)
class GroupTimes:
    form_s: float
    rebalance_s: float


@dataclass(frozen=True, slots=True)
class CommitRate:
    commits: int
    seconds: float
    errors: int
    first_error: str = ""

    @property
    def per_s(self) -> float:
        return self.commits / self.seconds


class _Member:
    """A consumer polled by its own thread; remembers its latest assignment."""

    def __init__(self, bootstrap: str, group: str, topic: str, name: str) -> None:
        from confluent_kafka import Consumer

        self.assigned: set[int] = set()
        self.assign_count = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": name,
                "heartbeat.interval.ms": 100,
                "session.timeout.ms": 6000,
                "partition.assignment.strategy": "range",
                "enable.auto.commit": False,
                "log_level": 2,
            }
        )
        self.topic = topic
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_assign(self, _c: Any, tps: list[Any]) -> None:
        with self.lock:
            self.assigned = {tp.partition for tp in tps}
            self.assign_count += 1

    def _on_revoke(self, _c: Any, _tps: list[Any]) -> None:
        with self.lock:
            self.assigned = set()

    def _run(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        while not self.stop.is_set():
            self.consumer.poll(0.01)

    def snapshot(self) -> set[int]:
        with self.lock:
            return set(self.assigned)


def _wait(condition: Any, timeout_s: float = 30.0) -> float:
    """Seconds until `condition()` holds, polling every millisecond."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("condition not met in time")
        time.sleep(0.001)
    return time.monotonic() - start


def group_round(bootstrap: str, topic: str, group: str) -> GroupTimes:
    """One formation and one rebalance after a leave. Runs in a child process."""
    members = [_Member(bootstrap, group, topic, f"m{i}") for i in range(MEMBERS)]
    start = time.monotonic()
    for m in members:
        m.thread.start()
    all_parts = set(range(PARTITIONS))

    def formed(ms: list[_Member]) -> bool:
        snaps = [m.snapshot() for m in ms]
        return (
            all(snaps)
            and set().union(*snaps) == all_parts
            and sum(map(len, snaps)) == len(all_parts)
        )

    _wait(lambda: formed(members))
    form_s = time.monotonic() - start
    leaver, rest = members[0], members[1:]
    counts = [m.assign_count for m in rest]
    start = time.monotonic()
    leaver.stop.set()
    leaver.thread.join()
    leaver.consumer.close()  # LeaveGroup

    def rebalanced() -> bool:
        moved = all(m.assign_count > c for m, c in zip(rest, counts, strict=True))
        snaps = [m.snapshot() for m in rest]
        return moved and set().union(*snaps) == all_parts and sum(map(len, snaps)) == PARTITIONS

    _wait(rebalanced)
    rebalance_s = time.monotonic() - start
    for m in rest:
        m.stop.set()
    for m in rest:
        m.thread.join()
        m.consumer.close()
    return GroupTimes(form_s, rebalance_s)


def commit_rate(bootstrap: str, topic: str, groups: list[str], seconds: float) -> CommitRate:
    """Synchronous one-partition commits, one client (thread + connection) per group."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    lock = threading.Lock()
    totals = {"commits": 0, "errors": 0}
    first_error: list[str] = []
    go = threading.Barrier(len(groups) + 1)

    def client(group: str) -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 2})
        c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)  # warm up
        done = errors = 0
        go.wait()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                c.commit(offsets=[TopicPartition(topic, 0, done + 1)], asynchronous=False)
                done += 1
            except KafkaException as exc:
                errors += 1
                if not first_error:
                    first_error.append(str(exc))
        c.close()
        with lock:
            totals["commits"] += done
            totals["errors"] += errors

    threads = [threading.Thread(target=client, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    go.wait()
    start = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return CommitRate(totals["commits"], elapsed, totals["errors"], "".join(first_error))


def _groups(count: int, spread: bool) -> list[str]:
    """`count` group ids on distinct `__consumer_offsets` partitions, or all on one."""
    chosen: list[str] = []
    used: set[int] = set()
    for i in range(100_000):
        group = f"bench-c{count}-{'spread' if spread else 'shared'}-{i}"
        shard = partition_for_group(group, OFFSETS_PARTITIONS)
        if (shard not in used) if spread else (shard == 0):
            chosen.append(group)
            used.add(shard)
            if len(chosen) == count:
                return chosen
    raise AssertionError("not enough group ids found")


def offsets_shard(node: BrokerProcess, group: str) -> dict[str, Any]:
    import json

    status, body = node.http_get("/v1/cluster")
    index = partition_for_group(group, OFFSETS_PARTITIONS)
    if status == 200:
        for t in json.loads(body)["topics"]:
            if t["name"] == "__consumer_offsets":
                return dict(t["partitions"][index])
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--join-window-ms", type=int, default=None, help="group_join_window_ms (default: broker's)"
    )
    args = parser.parse_args()

    settings = {}
    if args.join_window_ms is not None:
        settings["group_join_window_ms"] = str(args.join_window_ms)
    node = start_node(fresh_dir("groups"), settings)
    try:
        bootstrap = node.kafka_address
        topic = "bench-groups"
        create_topic(bootstrap, topic, PARTITIONS, 1)
        rounds = [
            run_in_process(group_round, bootstrap, topic, f"bench-group-{i}")
            for i in range(args.rounds)
        ]
        one = run_in_process(commit_rate, bootstrap, topic, ["bench-c1"], args.seconds)
        eight = run_in_process(commit_rate, bootstrap, topic, _groups(8, True), args.seconds)
        shared = run_in_process(commit_rate, bootstrap, topic, _groups(8, False), args.seconds)
        shard = offsets_shard(node, "bench-c1")
    finally:
        node.terminate()

    form = median([r.form_s for r in rounds])
    rebalance = median([r.rebalance_s for r in rounds])
    spread = lambda xs: f"{min(xs) * 1000:.0f}-{max(xs) * 1000:.0f} ms"  # noqa: E731
    print(f"Raftka consumer groups, one node, confluent-kafka; {load_line()}")
    print_table(
        f"Group of {MEMBERS} ({PARTITIONS} partitions, heartbeat 100 ms), median of {len(rounds)}",
        ["measurement", "median", "range", "target", "verdict"],
        [
            [
                "form (first assignment for all)",
                f"{form * 1000:.0f} ms",
                spread([r.form_s for r in rounds]),
                "< 1 s",
                verdict(form < TARGET_S),
            ],
            [
                "rebalance after one LeaveGroup",
                f"{rebalance * 1000:.0f} ms",
                spread([r.rebalance_s for r in rounds]),
                "< 1 s",
                verdict(rebalance < TARGET_S),
            ],
        ],
    )
    print_table(
        f"Offset commits (sync, one partition each, {args.seconds:.0f} s)",
        ["clients", "commits/s", "commits", "errors"],
        [
            ["1", f"{one.per_s:.0f}", str(one.commits), str(one.errors)],
            [
                "8, 8 offsets partitions",
                f"{eight.per_s:.0f}",
                str(eight.commits),
                str(eight.errors),
            ],
            [
                "8, 1 offsets partition",
                f"{shared.per_s:.0f}",
                str(shared.commits),
                str(shared.errors),
            ],
        ],
    )
    first_error = one.first_error or eight.first_error or shared.first_error
    if first_error:
        print(f"first commit error: {first_error}")
    if shard:
        kept = shard["log_end_offset"] - shard["log_start_offset"]
        print(
            f"\n__consumer_offsets-{shard['partition']} after {one.commits + 1} commits of "
            f"bench-c1: log start {shard['log_start_offset']}, end {shard['log_end_offset']} "
            f"({kept} records in the log)"
        )


if __name__ == "__main__":
    main()
