"""The consumer-group workload: subscribe-mode consumers in one group committing offsets.

Each consumer joins the group `GROUP` (confluent-kafka subscribe mode, eager rebalances,
no auto-commit), polls, and after every poll that returned records commits, synchronously,
the offset after the last record it read of each partition. Now and then a consumer
closes and a new one takes its place (a restart: the group rebalances twice). The
history records, besides polls:

    assign  invoke/ok {"mode": "subscribe", "group", "partitions"} at each rebalance
    revoke  ok {"group", "partitions"} when partitions are taken away
    commit  invoke {"group", "offsets": {partition: offset}}, then ok / fail / info
    committed ok {"group", "offsets"}: the group's offsets fetched after the run

so the checker can verify that committed offsets never go backwards and that nothing
committed before a consumer's assignment began is read again (`checker.group_anomalies`).
Producers and final reads are the queue workload's.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tests.chaos.history import HistoryWriter, OpType
from tests.chaos.workload import WorkloadConfig, consumer_config

GROUP = "chaos-group"
RESTART_RATIO = 0.01  # of polls: a consumer leaves and a fresh one joins
# Commit errors that prove the commit was rejected (a fenced or rebalancing member).
DEFINITE_COMMIT_ERRORS = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS}
)


def group_consumer_config(bootstrap: str, name: str) -> dict[str, Any]:
    return consumer_config(bootstrap, name) | {
        "group.id": GROUP,
        "client.id": name,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 60000,
        "partition.assignment.strategy": "range",
    }


class GroupConsumerClient:
    """One logical group member; its consumer instance is replaced on a restart."""

    def __init__(self, index: int, cfg: WorkloadConfig, history: HistoryWriter) -> None:
        self.name = f"group-consumer-{index}"
        self.cfg = cfg
        self.history = history
        self.rng = random.Random(cfg.seed * 1000 + 700 + index)
        self.restarts = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            consumer = Consumer(group_consumer_config(self.cfg.bootstrap, self.name))
            consumer.subscribe([self.cfg.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)  # fmt: skip
            try:
                while not stop.is_set():
                    if self.rng.random() < RESTART_RATIO:
                        self.restarts += 1
                        self.history.record(self.name, "info", "consumer-restart", self.history.new_id())  # fmt: skip
                        break
                    self._poll_and_commit(consumer)
            finally:
                consumer.close()  # leaves the group: revokes through the callback

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        value = {"mode": "subscribe", "group": GROUP, "partitions": sorted(tp.partition for tp in partitions)}  # fmt: skip
        op_id = self.history.invoke(self.name, "assign", value)
        self.history.record(self.name, "ok", "assign", op_id, value)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        value = {"group": GROUP, "partitions": sorted(tp.partition for tp in partitions)}
        self.history.record(self.name, "ok", "revoke", self.history.new_id(), value)

    def _poll_and_commit(self, consumer: Consumer) -> None:
        op_id = self.history.invoke(self.name, "poll")
        try:
            messages = consumer.consume(num_messages=200, timeout=0.2)
        except KafkaException as exc:
            self.history.record(self.name, "info", "poll", op_id, error=str(exc))
            return
        records: list[list[int]] = []
        errors: list[str] = []
        for m in messages:
            err = m.error()
            if err is not None:
                errors.append(str(err))
            else:
                records.append([int(m.partition() or 0), int(m.offset() or 0), int(m.value() or b"-1")])  # fmt: skip
        value: dict[str, Any] = {"records": records}
        if errors:
            value["errors"] = errors[:10]
        self.history.record(self.name, "ok", "poll", op_id, value)
        next_offsets: dict[int, int] = {}
        for partition, offset, _ in records:
            next_offsets[partition] = max(next_offsets.get(partition, 0), offset + 1)
        if next_offsets:
            commit(consumer, self.history, self.name, self.cfg.topic, next_offsets)


def commit(consumer: Consumer, history: HistoryWriter, name: str, topic: str, offsets: dict[int, int]) -> None:  # fmt: skip
    """One synchronous, recorded commit of {partition: next offset to read}."""
    value = {"group": GROUP, "offsets": {str(p): o for p, o in sorted(offsets.items())}}
    op_id = history.invoke(name, "commit", value)
    tps = [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())]
    try:
        result = consumer.commit(offsets=tps, asynchronous=False) or []
    except KafkaException as exc:
        err = exc.args[0]
        outcome: OpType = "fail" if err.code() in DEFINITE_COMMIT_ERRORS else "info"
        history.record(name, outcome, "commit", op_id, value, error=str(err))
        return
    failed = [f"{tp.partition}: {tp.error}" for tp in result if tp.error is not None]
    if failed:
        history.record(name, "info", "commit", op_id, value, error="; ".join(failed)[:500])
        return
    history.record(name, "ok", "commit", op_id, value)


def fetch_committed(bootstrap: str, topic: str, partitions: int, history: HistoryWriter) -> None:
    """Records the group's committed offsets (OffsetFetch) once every member has left."""
    name = "committed-fetch"
    consumer = Consumer(group_consumer_config(bootstrap, name))
    op_id = history.invoke(name, "committed", {"group": GROUP})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        errors = [f"{tp.partition}: {tp.error}" for tp in tps if tp.error is not None]
        offsets = {str(tp.partition): tp.offset for tp in tps}  # no commit: OFFSET_INVALID
        outcome: OpType = "info" if errors else "ok"
        history.record(name, outcome, "committed", op_id, {"group": GROUP, "offsets": offsets},
                       error="; ".join(errors) or None)  # fmt: skip
    except KafkaException as exc:
        history.record(name, "info", "committed", op_id, {"group": GROUP}, error=str(exc))
    finally:
        consumer.close()
