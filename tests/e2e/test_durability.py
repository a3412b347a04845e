"""Acknowledged records survive a crash (SIGKILL) and a clean stop (SIGTERM).

confluent-kafka produces with acks=all; every record it reports delivered must be read
back after the restart, at the offset it was acknowledged with, and new records must
continue at the next offset (no gap, no overwrite).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from storage.hard_state_log import HardStateLog
from tests.e2e.conftest import RawClient, create_topic, wait_partition_served
from tests.harness import BrokerProcess

RECORDS = 3000
PARTITIONS = 2


def _produce(bootstrap: str, topic: str, start: int, count: int) -> dict[bytes, tuple[int, int]]:
    """Produces keyed records start..start+count; returns value -> (partition, offset) as acked."""
    acked: dict[bytes, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.timeout.ms": 30000}
    )
    for i in range(start, start + count):
        producer.produce(
            topic, key=b"k%d" % (i % 7), value=b"v%06d" % i, partition=i % PARTITIONS,
            on_delivery=on_delivery,
        )  # fmt: skip
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors[:5]
    assert len(acked) == count
    return acked


def _read_all(
    bootstrap: str, topic: str, ends: dict[int, int]
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of each partition from offset 0 up to `ends[partition]`, in log order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "e2e-durability",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in ends}
    remaining = sum(ends.values())
    try:
        while remaining > 0:
            batch = consumer.consume(min(remaining, 1000), timeout=10)
            assert batch, f"no records for 10 s, still missing {remaining}"
            for msg in batch:
                assert msg.error() is None, msg.error()
                got[msg.partition()].append((msg.offset(), msg.value()))
                remaining -= 1
    finally:
        consumer.close()
    return got


def _check_log(
    got: dict[int, list[tuple[int, bytes]]], acked: dict[bytes, tuple[int, int]]
) -> None:
    for partition, records in got.items():
        offsets = [offset for offset, _ in records]
        assert offsets == list(range(len(offsets))), f"partition {partition}: gaps or reordering"
    where = {value: (p, offset) for p, records in got.items() for offset, value in records}
    missing = [v for v in acked if v not in where]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
    moved = [v for v, at in acked.items() if where[v] != at]
    assert not moved, f"records at other offsets than acknowledged, e.g. {moved[:3]}"


def _ends(acked: dict[bytes, tuple[int, int]]) -> dict[int, int]:
    ends = {p: 0 for p in range(PARTITIONS)}
    for partition, offset in acked.values():
        ends[partition] = max(ends[partition], offset + 1)
    return ends


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
def test_acknowledged_records_survive_restart(
    own_broker: BrokerProcess, fresh_topic: Callable[[str], str], stop: str
) -> None:
    topic = fresh_topic("durable")
    bootstrap = own_broker.kafka_address
    with RawClient(bootstrap) as raw:
        create_topic(raw, topic, PARTITIONS)
    acked = _produce(bootstrap, topic, 0, RECORDS)
    ends = _ends(acked)
    assert sum(ends.values()) == RECORDS

    if stop == "sigkill":
        own_broker.kill()
    else:
        assert own_broker.terminate() == 0, own_broker.log_tail()
    own_broker.restart()
    with RawClient(bootstrap) as raw:
        for p in range(PARTITIONS):
            wait_partition_served(raw, topic, p)

    _check_log(_read_all(bootstrap, topic, ends), acked)

    # New records continue exactly at the old log end of each partition.
    more = _produce(bootstrap, topic, RECORDS, 200)
    first_new = {p: min(o for q, o in more.values() if q == p) for p in range(PARTITIONS)}
    assert first_new == ends
    acked.update(more)
    _check_log(_read_all(bootstrap, topic, _ends(acked)), acked)


def _saved_commit(data_dir: Path, topic: str, partition: int) -> int:
    """The commit index the node saved for a partition's group, read from a copy of its
    hard-state log (opening the live one could cut a tail the broker is writing)."""
    meta = json.loads((data_dir / f"{topic}-{partition}" / "partition.json").read_text())
    with tempfile.TemporaryDirectory() as copy:
        shutil.copytree(data_dir / "__raft_state", copy, dirs_exist_ok=True)
        saved = HardStateLog(copy)
        try:
            state = saved.get(int(meta["group_id"]))
        finally:
            saved.close()
    return state.commit if state is not None else 0


def test_commit_index_is_saved_while_running_so_a_restart_replays_nothing(
    own_broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    """Without it the commit index is saved only with term changes, and a restarted node
    re-applies (reads back) its whole log from the stale index."""
    topic = fresh_topic("commit-saved")
    with RawClient(own_broker.kafka_address) as raw:
        create_topic(raw, topic, PARTITIONS)
    acked = _produce(own_broker.kafka_address, topic, 0, 500)
    batches_min = 2  # the leader's no-op at index 1, then at least one produce batch
    deadline = time.monotonic() + 30
    while _saved_commit(own_broker.data_dir, topic, 0) < batches_min:
        assert time.monotonic() < deadline, "the commit index was never saved"
        time.sleep(0.1)  # poll interval: saves happen about once a second
    own_broker.kill()
    own_broker.restart()
    with RawClient(own_broker.kafka_address) as raw:
        for p in range(PARTITIONS):
            wait_partition_served(raw, topic, p)
    _check_log(_read_all(own_broker.kafka_address, topic, _ends(acked)), acked)
