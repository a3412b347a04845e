"""What the cluster tests share: producers that keep a ledger, a read-back, and the checks.

A fault test produces while it breaks things, then asks three questions, each answered by
a function here:

- `check_history`: read back through the partition leaders, is every record whose
  delivery was acknowledged present at the offset it was acknowledged with; is no record
  there twice (the idempotent producer's state survived failover); are offsets
  contiguous from 0 up to the high watermark; does each key's order hold?
- `wait_hwms_agree`: do all replicas (each node's /v1/cluster) reach the same high
  watermark for every partition?
- `compare_replica_logs`: with the nodes stopped, does every replica's log hold the same
  entries (term and record batch bytes) below that high watermark?

Records are named so that the checks need no other state: the value is "<tag>:<n>", the
key "<tag><n % KEYS>", and the partition is chosen explicitly from the key, so one key
lives in one partition and its values must appear in increasing n. Each producer has its
own tag, so two producers never share a key.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from client.protocol.errors import ErrorCode
from client.protocol.messages.produce import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from client.protocol.records import RecordBatchBuilder
from raft.types import EntryKind
from storage.config import LogConfig
from storage.log import PartitionLog
from tests.e2e.conftest import RawClient
from tests.harness import Cluster

KEYS = 24
#: Records a background producer has outstanding at most (bounds its memory and retries).
INFLIGHT_RECORDS_MAX = 200


@dataclass(frozen=True, slots=True)
class Row:
    offset: int
    key: str
    value: str


@dataclass(slots=True)
class Ledger:
    """What the producers were told: value -> (partition, offset) or value -> error."""

    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    sent: int = 0

    @property
    def settled(self) -> int:
        return len(self.acked) + len(self.failed)

    def acked_in(self, partition: int) -> int:
        # A copy first: a producer's delivery thread may add to `acked` meanwhile.
        return sum(1 for p, _ in list(self.acked.values()) if p == partition)


def record(tag: str, n: int, partitions: int) -> tuple[bytes, bytes, int]:
    """(key, value, partition) of record n of producer `tag`."""
    k = n % KEYS
    return f"{tag}{k}".encode(), f"{tag}:{n}".encode(), k % partitions


#: What an acks=all produce to a partition without a quorum may answer: refused, or fate
#: unknown; never a success.
NOT_A_SUCCESS = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NOT_ENOUGH_REPLICAS,
    }
)


# -- a test's cluster, start to finish ------------------------------------------------------
def start_with_topic(
    tmp_path: Path, topic: str, partitions: int, settings: dict[str, str]
) -> Cluster:
    """Three nodes with `settings`, and `topic` replicated on all of them (use it in a
    `with` block; if starting fails, the nodes are stopped here)."""
    cluster = Cluster(3, tmp_path, settings=settings)
    try:
        cluster.start(timeout_s=60)
        create_topic(cluster.bootstrap, topic, partitions, 3)
    except BaseException:
        cluster.stop_all()
        raise
    return cluster


def finish(cluster: Cluster, topic: str, partitions: int, ledgers: list[Ledger]) -> None:
    """Every check of the module docstring, then the replicas' bytes once stopped."""
    hwms = wait_hwms_agree(cluster, topic, cluster.nodes)
    check_history(read_all(cluster.bootstrap, topic, partitions), ledgers, hwms)
    # Exit codes are not checked here: a graceful stop sometimes hangs past the harness's
    # 15 s, and these tests are about data, not shutdown.
    cluster.stop_all()
    compare_replica_logs(cluster, topic, hwms)


# -- cluster views --------------------------------------------------------------------------
def cluster_view(cluster: Cluster, node_id: int) -> dict[str, Any]:
    with urllib.request.urlopen(cluster.http_url(node_id) + "/v1/cluster", timeout=5) as r:
        view: dict[str, Any] = json.loads(r.read())
    return view


def partition_rows(cluster: Cluster, node_id: int, topic: str) -> list[dict[str, Any]]:
    view = cluster_view(cluster, node_id)
    for t in view["topics"]:
        if t["name"] == topic:
            return sorted(t["partitions"], key=lambda p: p["partition"])
    raise AssertionError(f"node {node_id} does not know topic {topic}")


def leaders(cluster: Cluster, node_id: int, topic: str) -> dict[int, int]:
    return {p["partition"]: p["leader"] for p in partition_rows(cluster, node_id, topic)}


def wait_new_leader(
    cluster: Cluster, topic: str, partition: int, old: int, nodes: Iterable[int], timeout_s: float
) -> int:
    """Polls `nodes` until they all name one leader other than `old`; returns it."""
    nodes = list(nodes)
    deadline = time.monotonic() + timeout_s
    seen: list[int] = []
    while time.monotonic() < deadline:
        seen = [leaders(cluster, n, topic)[partition] for n in nodes]
        if seen[0] not in (None, old) and len(set(seen)) == 1:
            return int(seen[0])
        time.sleep(0.05)  # poll interval
    raise AssertionError(f"no new leader of {topic}-{partition} within {timeout_s}s: {seen}")


def wait_hwms_agree(
    cluster: Cluster, topic: str, nodes: Iterable[int], timeout_s: float = 30.0
) -> list[int]:
    """Polls until every node in `nodes` reports the same high watermarks; returns them."""
    nodes = list(nodes)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            hwms = [[p["high_watermark"] for p in partition_rows(cluster, n, topic)] for n in nodes]
        except (OSError, AssertionError) as error:  # a node still starting
            hwms = [[str(error)]]
        settled = hwms[0] and all(isinstance(h, int) for h in hwms[0])
        if settled and all(h == hwms[0] for h in hwms):
            return [int(h) for h in hwms[0]]
        assert time.monotonic() < deadline, f"replicas disagree on high watermarks: {hwms}"
        time.sleep(0.1)  # poll interval


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, replication_factor)]).values():
        future.result(30)


# -- producers ------------------------------------------------------------------------------
def confluent_producer(bootstrap: str, **overrides: Any) -> Producer:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    }
    config.update(overrides)
    return Producer(config)


def _on_delivery(ledger: Ledger) -> Any:
    def callback(err: KafkaError | None, msg: Message) -> None:
        value = (msg.value() or b"").decode()
        if err is None:
            ledger.acked[value] = (msg.partition() or 0, msg.offset() or 0)
        else:
            ledger.failed[value] = err.name()

    return callback


def produce(
    producer: Producer,
    topic: str,
    tag: str,
    numbers: Iterable[int],
    partitions: int,
    ledger: Ledger,
    flush_s: float = 90.0,
) -> None:
    """Produces records `numbers` of `tag` and waits for every delivery report."""
    callback = _on_delivery(ledger)
    for n in numbers:
        key, value, partition = record(tag, n, partitions)
        while True:
            try:
                producer.produce(topic, value, key, partition, on_delivery=callback)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries drain it
        ledger.sent += 1
        producer.poll(0)
    remaining = producer.flush(flush_s)
    assert remaining == 0, f"{remaining} records without a delivery report after {flush_s}s"


class BackgroundProducer:
    """A confluent-kafka producer producing `tag` records on a thread until stopped.

    It keeps at most INFLIGHT_RECORDS_MAX records outstanding, so a stalled partition
    slows it down instead of piling up retries. `stop()` waits for every delivery report.
    """

    def __init__(
        self, bootstrap: str, topic: str, tag: str, partitions: int, **overrides: Any
    ) -> None:
        self.topic = topic
        self.tag = tag
        self.partitions = partitions
        self.ledger = Ledger()
        self.producer = confluent_producer(bootstrap, **overrides)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"producer-{tag}", daemon=True)

    def start(self) -> BackgroundProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        callback = _on_delivery(self.ledger)
        ledger = self.ledger
        n = 0
        try:
            while not self._stop.is_set():
                if ledger.sent - ledger.settled >= INFLIGHT_RECORDS_MAX:
                    self.producer.poll(0.02)
                    continue
                key, value, partition = record(self.tag, n, self.partitions)
                self.producer.produce(self.topic, value, key, partition, on_delivery=callback)
                ledger.sent += 1
                n += 1
                # Pacing, not readiness: about a thousand records a second.
                self.producer.poll(0.01 if n % 10 == 0 else 0)
        except BaseException as error:  # surfaced by stop()
            self._error = error

    def wait_acked(self, partition: int, more_than: int, timeout_s: float) -> None:
        """Waits until more than `more_than` records of `partition` are acknowledged."""
        deadline = time.monotonic() + timeout_s
        while self.ledger.acked_in(partition) <= more_than:
            assert self._error is None, self._error
            assert time.monotonic() < deadline, (
                f"partition {partition}: no acknowledgement beyond {more_than} in {timeout_s}s "
                f"(failed so far: {len(self.ledger.failed)})"
            )
            time.sleep(0.05)  # poll interval

    def stop(self, flush_s: float = 90.0) -> Ledger:
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise self._error
        remaining = self.producer.flush(flush_s)
        assert remaining == 0, f"{remaining} records without a delivery report"
        return self.ledger


def produce_kafka_python(
    bootstrap: str, topic: str, tag: str, numbers: Iterable[int], partitions: int, ledger: Ledger
) -> None:
    """kafka-python 3 with its default settings (acks=all, idempotent, retries forever)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","))
    futures: list[tuple[str, Any]] = []
    for n in numbers:
        key, value, partition = record(tag, n, partitions)
        futures.append((value.decode(), producer.send(topic, value, key, partition=partition)))
        ledger.sent += 1
    producer.flush()
    for name, future in futures:
        try:
            metadata = future.get(timeout=0)
        except Exception as error:
            ledger.failed[name] = type(error).__name__
        else:
            ledger.acked[name] = (metadata.partition, metadata.offset)
    producer.close()


def raw_produce(
    address: str, topic: str, partition: int, key: bytes, value: bytes, timeout_ms: int
) -> int:
    """One acks=all Produce of one record straight to `address`; returns its error code.

    Fails if the broker does not answer within the request timeout plus a second.
    """
    builder = RecordBatchBuilder(batch_bytes_max=1 << 20)
    builder.append(key, value, (), int(time.time() * 1000))
    request = ProduceRequest(
        acks=-1,
        timeout_ms=timeout_ms,
        topic_data=(
            TopicProduceData(
                name=topic,
                partition_data=(PartitionProduceData(index=partition, records=builder.build()),),
            ),
        ),
    )
    with RawClient(address, deadline_s=timeout_ms / 1000 + 1.0) as raw:
        response = raw.request(request, 9)
    return int(response.responses[0].partition_responses[0].error_code)


# -- checks ---------------------------------------------------------------------------------
def read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Row]]:
    """Every record of every partition up to its high watermark, via the leaders."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "checker",
            "enable.auto.commit": False,
            # An out-of-range answer must show up, not silently skip to the end.
            "auto.offset.reset": "error",
        }
    )
    out: dict[int, list[Row]] = {}
    try:
        for partition in range(partitions):
            high = _high_watermark(consumer, topic, partition)
            consumer.assign([TopicPartition(topic, partition, 0)])
            rows: list[Row] = []
            errors: list[str] = []
            deadline = time.monotonic() + 60
            while (not rows or rows[-1].offset < high - 1) and high > 0:
                assert time.monotonic() < deadline, (
                    f"{topic}-{partition}: read stalled at {len(rows)} of {high} records; "
                    f"errors: {errors[-5:]}"
                )
                for m in consumer.consume(1000, timeout=1):
                    if m.error() is not None:
                        errors.append(str(m.error()))
                    else:
                        key = (m.key() or b"").decode()
                        rows.append(Row(m.offset() or 0, key, (m.value() or b"").decode()))
            out[partition] = rows
    finally:
        consumer.close()
    return out


def _high_watermark(consumer: Consumer, topic: str, partition: int) -> int:
    """The leader's high watermark, retried while leadership moves (balancing may move it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            return int(high)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # metadata refresh interval, not readiness


def check_history(
    seen: dict[int, list[Row]], ledgers: Iterable[Ledger], hwms: list[int] | None = None
) -> dict[str, tuple[int, int]]:
    """Asserts the read-back against what producers were told; returns value -> position."""
    where: dict[str, tuple[int, int]] = {}
    per_key: dict[str, list[int]] = defaultdict(list)
    for partition, rows in sorted(seen.items()):
        offsets = [r.offset for r in rows]
        assert offsets == list(range(len(rows))), f"partition {partition}: offsets not contiguous"
        if hwms is not None:
            assert len(rows) == hwms[partition], (
                f"partition {partition}: read {len(rows)} records, high watermark {hwms[partition]}"
            )
        for row in rows:
            assert row.value not in where, (
                f"{row.value} duplicated: at {where[row.value]} and {(partition, row.offset)}"
            )
            where[row.value] = (partition, row.offset)
            per_key[row.key].append(int(row.value.split(":")[1]))
    for ledger in ledgers:
        lost = sorted(v for v in ledger.acked if v not in where)
        assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
        moved = sorted(v for v, at in ledger.acked.items() if where[v] != at)
        assert not moved, (
            f"{len(moved)} acknowledged records not at their acknowledged offset, e.g. "
            f"{[(v, ledger.acked[v], where[v]) for v in moved[:5]]}"
        )
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers), f"key {key}: order broken"
    return where


def compare_replica_logs(cluster: Cluster, topic: str, hwms: list[int]) -> None:
    """With the nodes stopped: every replica holds the same entries below the HWM.

    Compares (offset, term, record batch bytes) of the DATA entries whose records lie
    below each partition's high watermark, read straight from each node's segment files.
    """
    for partition, hwm in enumerate(hwms):
        views = {
            node_id: _data_entries(node.data_dir / f"{topic}-{partition}", hwm)
            for node_id, node in cluster.nodes.items()
        }
        reference_id, reference = next(iter(views.items()))
        for node_id, entries in views.items():
            assert entries == reference, (
                f"{topic}-{partition}: node {node_id}'s log differs from node {reference_id}'s "
                f"below the high watermark {hwm} ({len(entries)} vs {len(reference)} batches)"
            )


def _data_entries(directory: Path, hwm: int) -> list[tuple[int, int, bytes]]:
    assert directory.is_dir(), f"no replica at {directory}"
    log = PartitionLog.open(str(directory), LogConfig())
    try:
        assert log.log_start_offset == 0, f"{directory}: log starts at {log.log_start_offset}"
        assert log.log_end_offset >= hwm, f"{directory}: log ends at {log.log_end_offset} < {hwm}"
        out: list[tuple[int, int, bytes]] = []
        index, covered = log.first_index, 0
        while covered < hwm and index <= log.last_index:
            for entry in log.read_entries(index, log.last_index + 1, 1 << 20):
                index = entry.index + 1
                if entry.kind != EntryKind.DATA:
                    continue
                offset = log.offset_for_index(entry.index)
                if offset >= hwm:
                    break
                out.append((offset, entry.term, bytes(entry.payload)))
                covered = offset + entry.record_count
        assert covered == hwm, f"{directory}: entries cover offsets up to {covered}, not {hwm}"
        return out
    finally:
        log.close()
