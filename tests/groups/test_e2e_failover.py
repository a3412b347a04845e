"""Group coordination across crashes, with real broker processes (issue 7's proof, part 2).

- Compaction: thousands of commits to a few partitions make the coordinator rewrite its
  live set and truncate `__consumer_offsets` (its log start offset moves, as /v1/cluster
  shows); after a SIGKILL and restart the coordinator still returns the latest offsets.
- Coordinator failover: three confluent-kafka consumers share a group on a 3-node
  cluster while a producer keeps writing; the node coordinating the group is SIGKILLed.
  The group forms again on the new coordinator; committed offsets, watched through
  OffsetFetch all along, never go backwards; a consumer that takes a partition over
  starts exactly at an offset somebody committed (at-least-once: records after the
  last commit are read again); and together the consumers read every offset.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker.groups.offsets_log import partition_for_group
from tests.harness import BrokerProcess, Cluster

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 10  # the broker's default offsets_topic_partitions
WAIT_S = 30.0
QUIET = {"log_level": 2}  # librdkafka: connection refusals to a killed node are expected


def create_topic(bootstrap: str, name: str, partitions: int, replication_factor: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(name, partitions, replication_factor)]).values():
        fut.result(15)


def partition_row(node: BrokerProcess, topic: str, partition: int) -> dict[str, Any] | None:
    status, body = node.http_get("/v1/cluster")
    if status != 200:
        return None
    for t in json.loads(body)["topics"]:
        if t["name"] == topic:
            for p in t["partitions"]:
                if p["partition"] == partition:
                    return dict(p)
    return None


def offsets_shard_row(node: BrokerProcess, group: str) -> dict[str, Any] | None:
    return partition_row(node, OFFSETS_TOPIC, partition_for_group(group, OFFSETS_PARTITIONS))


def committed(consumer: Consumer, topic: str, partitions: int) -> dict[int, int]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    """librdkafka threads keep a process alive: every consumer is closed, also on failure."""
    opened: list[Consumer] = []
    yield opened
    for c in opened:
        with contextlib.suppress(RuntimeError):  # already closed
            c.close()


def test_compaction_moves_log_start_and_survives_restart(
    tmp_path: Path, consumers: list[Consumer]
) -> None:
    node = BrokerProcess(1, tmp_path)
    node.start()
    try:
        node.wait_ready()
        topic, group, partitions = "compacted", "compacting-group", 8
        create_topic(node.kafka_address, topic, partitions, 1)
        # 600 commits x 8 partitions: 4800 records for 8 live keys; the coordinator
        # compacts every ~1000 records. Asynchronous commits keep the test short; the
        # last one is synchronous (answered after every earlier one: one connection),
        # and every commit's result is checked.
        failures: list[Any] = []
        results = 0

        def on_commit(err: Any, _tps: Any) -> None:
            nonlocal results
            results += 1
            if err is not None:
                failures.append(err)

        committer = Consumer(
            {**QUIET, "bootstrap.servers": node.kafka_address, "group.id": group,
             "on_commit": on_commit}
        )  # fmt: skip
        consumers.append(committer)
        commits = 600
        for i in range(commits):
            offsets = [TopicPartition(topic, p, i * 10 + p) for p in range(partitions)]
            committer.commit(offsets=offsets, asynchronous=True)
            if i % 50 == 0:
                committer.poll(0)  # serve commit callbacks
        last = [TopicPartition(topic, p, commits * 10 + p) for p in range(partitions)]
        committer.commit(offsets=last, asynchronous=False)
        deadline = time.monotonic() + WAIT_S
        while results < commits and time.monotonic() < deadline:
            committer.poll(0.05)
        assert results >= commits and not failures, (results, failures[:3])
        expected = {p: commits * 10 + p for p in range(partitions)}
        assert committed(committer, topic, partitions) == expected

        row = offsets_shard_row(node, group)
        assert row is not None
        # Compacted: the log no longer starts at 0 and holds far fewer than 6000 records.
        assert row["log_start_offset"] > 0, row
        assert row["log_end_offset"] - row["log_start_offset"] < 2000, row

        node.kill()
        node.restart()
        fresh = Consumer({**QUIET, "bootstrap.servers": node.kafka_address, "group.id": group})
        consumers.append(fresh)
        assert committed(fresh, topic, partitions) == expected
        row_after = offsets_shard_row(node, group)
        assert row_after is not None and row_after["log_start_offset"] >= row["log_start_offset"]
    finally:
        if node.is_running():
            node.terminate()


# --- coordinator failover ------------------------------------------------------------------


@dataclass
class Ledger:
    """What the consumers did, shared by their threads (under `lock`)."""

    partitions: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    read: dict[int, set[int]] = field(default_factory=dict)
    acked: dict[int, int] = field(default_factory=dict)  # highest acknowledged commit
    attempted: dict[int, int] = field(default_factory=dict)  # highest commit ever sent
    #: (partition, first offset read after an assignment, acked then, attempted then)
    first_reads: list[tuple[int, int, int, int]] = field(default_factory=list)
    assignments: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    commits_paused: bool = False
    commits_in_flight: int = 0


class GroupMember(threading.Thread):
    """A confluent-kafka group consumer that commits what it read, synchronously."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, ledger: Ledger) -> None:
        super().__init__(name=name, daemon=True)
        self.ledger = ledger
        self.topic = topic
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                **QUIET,
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "heartbeat.interval.ms": 100,
                "session.timeout.ms": 6000,
                "partition.assignment.strategy": "range",
            }
        )
        self.next_offsets: dict[int, int] = {}  # what to commit: last read + 1
        self.first_pending: set[int] = set()

    def _on_assign(self, _c: Consumer, tps: list[TopicPartition]) -> None:
        with self.ledger.lock:
            self.ledger.assignments[self.name] = self.ledger.assignments.get(self.name, 0) + 1
        self.first_pending = {tp.partition for tp in tps}

    def _on_revoke(self, _c: Consumer, tps: list[TopicPartition]) -> None:
        self._commit()  # as applications do; never commit for partitions we gave up
        for tp in tps:
            self.next_offsets.pop(tp.partition, None)
        self.first_pending.clear()

    def _commit(self) -> None:
        if not self.next_offsets:
            return
        offsets = dict(self.next_offsets)
        with self.ledger.lock:
            if self.ledger.commits_paused:
                return
            self.ledger.commits_in_flight += 1
            for p, o in offsets.items():
                self.ledger.attempted[p] = max(self.ledger.attempted.get(p, 0), o)
        try:
            result = self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException:
            return  # coordinator moving, rebalance in progress: retried with the next commit
        finally:
            with self.ledger.lock:
                self.ledger.commits_in_flight -= 1
        with self.ledger.lock:
            for tp in result or []:
                if tp.error is None:
                    self.ledger.acked[tp.partition] = max(
                        self.ledger.acked.get(tp.partition, 0), tp.offset
                    )

    def run(self) -> None:
        try:
            self.consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            last_commit = time.monotonic()
            while not self.stop.is_set():
                msg = self.consumer.poll(0.05)
                if msg is not None and not msg.error():
                    self._record(msg.partition(), msg.offset())
                if time.monotonic() - last_commit > 0.1:
                    self._commit()
                    last_commit = time.monotonic()
            self._commit()
            self.consumer.close()
        except Exception as exc:  # surfaced by the test
            with self.ledger.lock:
                self.ledger.errors.append(f"{self.name}: {exc!r}")

    def _record(self, partition: int, offset: int) -> None:
        with self.ledger.lock:
            self.ledger.read.setdefault(partition, set()).add(offset)
            if partition in self.first_pending:
                self.first_pending.discard(partition)
                self.ledger.first_reads.append(
                    (
                        partition,
                        offset,
                        self.ledger.acked.get(partition, 0),
                        self.ledger.attempted.get(partition, 0),
                    )
                )
        self.next_offsets[partition] = offset + 1


class CommittedWatcher(threading.Thread):
    """Reads the group's committed offsets (OffsetFetch) all along, as an outsider."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        super().__init__(name="watcher", daemon=True)
        self.consumer = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": group})
        self.topic, self.partitions = topic, partitions
        self.series: dict[int, list[int]] = {p: [] for p in range(partitions)}
        self.stop = threading.Event()

    def read(self) -> dict[int, int] | None:
        try:
            return committed(self.consumer, self.topic, self.partitions)
        except KafkaException:
            return None  # no coordinator right now

    def run(self) -> None:
        while not self.stop.wait(0.1):  # sampling period
            seen = self.read()
            for p, o in (seen or {}).items():
                if o >= 0:
                    self.series[p].append(o)
        self.consumer.close()


def keep_producing(bootstrap: str, topic: str, stop: threading.Event) -> None:
    producer = Producer({**QUIET, "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    n = 0
    while not stop.is_set():
        producer.produce(topic, value=str(n).encode())
        producer.poll(0)
        n += 1
        time.sleep(0.002)  # pacing: a steady trickle, not a flood
    producer.flush(10)


def wait_for(condition: Any, what: str, ledger: Ledger, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert not ledger.errors, ledger.errors
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # poll interval


def test_coordinator_sigkill_group_recovers_and_offsets_never_go_back(tmp_path: Path) -> None:
    topic, group, partitions = "failover", f"fo-{uuid.uuid4().hex[:6]}", 6
    cluster = Cluster(3, tmp_path)
    threads: list[threading.Thread] = []
    stop_producing = threading.Event()
    ledger = Ledger(partitions)
    with cluster:
        cluster.start()
        create_topic(cluster.bootstrap, topic, partitions, 3)
        producer = threading.Thread(
            target=keep_producing, args=(cluster.bootstrap, topic, stop_producing), daemon=True
        )
        producer.start()
        members = [
            GroupMember(f"member-{i}", cluster.bootstrap, group, topic, ledger) for i in range(3)
        ]
        watcher = CommittedWatcher(cluster.bootstrap, group, topic, partitions)
        threads = [producer, *members, watcher]
        try:
            for t in [*members, watcher]:
                t.start()

            def acked_everywhere_beyond(floor: dict[int, int]) -> bool:
                with ledger.lock:
                    return all(ledger.acked.get(p, 0) > floor.get(p, 0) for p in range(partitions))

            wait_for(lambda: len(ledger.assignments) == 3, "three members assigned", ledger)
            wait_for(lambda: acked_everywhere_beyond({}), "first commits", ledger)

            # Quiesce commits, so the offsets the new coordinator must return are known.
            with ledger.lock:
                ledger.commits_paused = True
            wait_for(lambda: ledger.commits_in_flight == 0, "commits to settle", ledger)
            with ledger.lock:
                before_kill = dict(ledger.acked)
                assert ledger.attempted == before_kill  # nothing unacknowledged in doubt

            row = offsets_shard_row(cluster.node(1), group)
            assert row is not None and row["leader"] is not None, row
            victim = int(row["leader"])
            cluster.kill(victim)
            survivor = next(n for n in cluster.nodes if n != victim)

            # The shard moves: a new leader loads it and serves every acknowledged commit.
            def new_coordinator() -> bool:
                r = offsets_shard_row(cluster.node(survivor), group)
                return r is not None and r["leader"] not in (None, victim)

            wait_for(new_coordinator, "a new coordinator", ledger)
            fetched: dict[int, int] | None = None

            def fetch_committed() -> bool:
                nonlocal fetched
                fetched = watcher.read()
                return fetched is not None

            wait_for(fetch_committed, "OffsetFetch from the new coordinator", ledger)
            assert fetched == before_kill, (fetched, before_kill)

            # A member leaves (still without commits): the group rebalances on the new
            # coordinator and every partition restarts from its committed offset.
            with ledger.lock:
                assigned_before = dict(ledger.assignments)
                reads_before = len(ledger.first_reads)
            members[2].stop.set()
            members[2].join(WAIT_S)

            def all_restarted() -> bool:
                with ledger.lock:
                    return all(
                        ledger.assignments[m.name] > assigned_before[m.name] for m in members[:2]
                    ) and {p for p, *_ in ledger.first_reads[reads_before:]} == set(
                        range(partitions)
                    )

            wait_for(all_restarted, "reassignment after the leave", ledger)
            with ledger.lock:
                restarted = {p: o for p, o, *_ in ledger.first_reads[reads_before:]}
                ledger.commits_paused = False
            assert restarted == before_kill, (restarted, before_kill)
            wait_for(lambda: acked_everywhere_beyond(before_kill), "commits after failover", ledger)
        finally:
            stop_producing.set()
            producer.join(WAIT_S)

        # Drain: the two remaining members read to the end and commit it.
        watermarks = {
            p: watcher.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }

        def drained() -> bool:
            with ledger.lock:
                return all(ledger.acked.get(p, 0) >= watermarks[p] for p in range(partitions))

        try:
            wait_for(drained, "the members to read and commit everything", ledger)
        finally:
            for m in members:
                m.stop.set()
            watcher.stop.set()
            for t in threads:
                t.join(WAIT_S)
        checker = Consumer({**QUIET, "bootstrap.servers": cluster.bootstrap, "group.id": group})
        try:
            final = committed(checker, topic, partitions)
        finally:
            checker.close()

    assert not ledger.errors, ledger.errors
    # No committed offset ever went backwards, as seen through OffsetFetch all along...
    for p, series in watcher.series.items():
        assert series == sorted(series), (p, series)
        assert series, f"partition {p}: no committed offset observed"
    # ...and none fell below an acknowledged commit at the end.
    assert all(final[p] >= ledger.acked[p] for p in range(partitions)), (final, ledger.acked)
    # Every take-over started at a committed offset: not before what was acknowledged
    # (that would be a lost commit) and not past anything ever committed (a gap).
    assert len(ledger.first_reads) >= partitions + 2, ledger.first_reads
    for p, offset, acked, attempted in ledger.first_reads:
        assert acked <= offset <= attempted, (p, offset, acked, attempted)
    # Together the members read every offset (at-least-once: some twice).
    for p in range(partitions):
        assert ledger.read[p] == set(range(watermarks[p])), p
