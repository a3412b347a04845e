"""Failpoints crash a node mid-write; power loss drops what was never fsynced.

Both with real broker processes: whatever instant the node dies at, every record that
was acknowledged with acks=all is there after restart, and offsets continue.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from broker.config import ConfigError, load_config
from broker.failpoints import CRASH_EXIT_CODE, parse_failpoints
from tests.harness import BrokerProcess
from tests.powerloss import cut_to_durable

TOPIC = "crashy"


def test_failpoint_setting_is_validated() -> None:
    assert parse_failpoints("append_before_fsync=0.5, vote_after_persist") == {
        "append_before_fsync": 0.5,
        "vote_after_persist": 1.0,
    }
    with pytest.raises(ConfigError, match="failpoints"):
        load_config(cli={"failpoints": "no_such_point=1"})
    with pytest.raises(ConfigError, match="failpoints"):
        load_config(cli={"failpoints": "append_before_fsync=2"})


def _produce(bootstrap: str, start: int, count: int) -> dict[int, int]:
    acked: dict[int, int] = {}
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
                         "message.timeout.ms": 5000, "retries": 0})  # fmt: skip

    def done(err: object, msg: object) -> None:
        if err is None:
            acked[int(msg.value())] = msg.offset()  # type: ignore[attr-defined]

    for i in range(start, start + count):
        producer.produce(TOPIC, value=str(i).encode(), on_delivery=done)
        producer.poll(0)
    producer.flush(15)
    return acked


def _read(bootstrap: str) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "r", "enable.auto.commit": False}
    )
    _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    seen: dict[int, int] = {}
    while len(seen) < high:
        batch = consumer.consume(1000, timeout=5)
        assert batch, f"read {len(seen)} of {high}"
        for m in batch:
            assert m.error() is None
            seen[int(m.value())] = m.offset()
    consumer.close()
    return seen


def _post(node: BrokerProcess, path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        node.http_url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@pytest.mark.parametrize("point", ["append_before_fsync", "fsync_before_ack"])
def test_crash_at_failpoint_keeps_every_acknowledged_record(tmp_path: Path, point: str) -> None:
    node = BrokerProcess(1, tmp_path, settings={"fault_injection": "true", "num_partitions": "1"})
    try:
        node.start()
        node.wait_ready()
        acked = _produce(node.kafka_address, 0, 500)
        assert len(acked) == 500
        _post(node, "/v1/faults/failpoint", {"name": point, "probability": 1.0})
        acked.update(_produce(node.kafka_address, 500, 50))
        assert node.wait_exit() == CRASH_EXIT_CODE
        node.restart()
        seen = _read(node.kafka_address)
        assert {v: seen.get(v) for v in acked} == acked, "an acknowledged record moved or vanished"
        more = _produce(node.kafka_address, 1000, 10)
        assert min(more.values()) == max(seen.values()) + 1
    finally:
        node.terminate()


def test_power_loss_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    node = BrokerProcess(
        1, tmp_path, settings={"durability_journal": "true", "num_partitions": "1"}
    )
    try:
        node.start()
        node.wait_ready()
        acked = _produce(node.kafka_address, 0, 2000)
        assert len(acked) == 2000
        node.kill()
        cut_to_durable(node.data_dir)
        node.restart()
        seen = _read(node.kafka_address)
        assert {v: seen.get(v) for v in acked} == acked
    finally:
        node.terminate()


def test_power_loss_really_drops_unsynced_bytes(tmp_path: Path) -> None:
    """The emulation must bite: with fsync=never nothing is journaled as durable."""
    node = BrokerProcess(
        1,
        tmp_path,
        settings={"durability_journal": "true", "fsync": "never", "num_partitions": "1"},
    )
    try:
        node.start()
        node.wait_ready()
        assert len(_produce(node.kafka_address, 0, 200)) == 200
        node.kill()
        assert cut_to_durable(node.data_dir) > 0
    finally:
        node.terminate()
