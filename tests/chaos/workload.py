"""The Jepsen Kafka queue workload over confluent-kafka, recording into a history.

Producers: idempotent (acks=all), each sending unique integers (`client * 10**7 + seq`)
to randomly chosen partitions at a fixed total rate, with a bounded number in flight.
Consumers: assign mode (no group), polling throughout the run, sometimes re-assigning a
random subset of partitions from the beginning or from the current high watermark. Final reads: after the heal,
one consumer reads every partition from offset 0 up to its high watermark.

Error classification (what `fail` may mean): only an error that proves the record never
left the client is a definite failure. librdkafka retries internally, so the error a
delivery report carries can come from a retry of a request that had already been
appended (KAFKA-13574): NOT_LEADER, timeouts and even NOT_ENOUGH_REPLICAS are `info`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from tests.chaos.history import HistoryWriter, OpType

VALUE_STRIDE = 10**7  # values are client * stride + seq: unique across the run
IN_FLIGHT_MAX = 400  # per producer: bounded memory and bounded indefinite outcomes

# Errors proving the record was never transmitted (librdkafka's local checks).
DEFINITE_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    }
)


def classify_error(err: KafkaError) -> OpType:
    """`fail` only when the record definitely was not appended; otherwise `info`."""
    return "fail" if err.code() in DEFINITE_ERRORS else "info"


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    bootstrap: str
    topic: str
    partitions: int
    seed: int
    producers: int = 3
    consumers: int = 2
    sends_per_s: float = 150.0  # total over all producers: modest, the box has 2 cores
    reassign_ratio: float = 0.03  # of consumer polls


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "log_level": 3,  # librdkafka logs errors only: disconnects are the point of the test
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 20000,
        "request.timeout.ms": 5000,
        "retry.backoff.ms": 50,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
        "queue.buffering.max.messages": 10000,
    }


def consumer_config(bootstrap: str, name: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "log_level": 3,  # librdkafka logs errors only: disconnects are the point of the test
        "group.id": f"chaos-{name}",  # required by librdkafka; assign mode never joins
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
        "enable.partition.eof": False,
    }


class ProducerClient:
    """One logical client: an idempotent producer replaced if it hits a fatal error."""

    def __init__(self, index: int, cfg: WorkloadConfig, history: HistoryWriter) -> None:
        self.name = f"producer-{index}"
        self.index = index
        self.cfg = cfg
        self.history = history
        self.rng = random.Random(cfg.seed * 1000 + index)
        self.outstanding: dict[int, dict[str, int]] = {}
        self.fatal = False
        self.fatal_errors: list[str] = []
        self.seq = 0

    def run(self, stop: threading.Event) -> None:
        producer = Producer(producer_config(self.cfg.bootstrap))
        interval_s = self.cfg.producers / self.cfg.sends_per_s
        next_at = time.monotonic()
        while not stop.is_set():
            if self.fatal:
                producer = self._replace(producer)
            if len(self.outstanding) >= IN_FLIGHT_MAX:
                self._poll(producer, 0.05)
                continue
            self._send_one(producer)
            next_at += interval_s
            self._poll(producer, max(0.0, next_at - time.monotonic()))
        self._flush(producer, 15)
        self._give_up_outstanding("no delivery report before the end")

    def _poll(self, producer: Producer, timeout_s: float) -> None:
        """Serves delivery reports; a fatal error (raised by poll) retires the producer."""
        try:
            producer.poll(timeout_s)
        except KafkaException as exc:
            self.fatal = True
            self.fatal_errors.append(str(exc.args[0]))

    def _flush(self, producer: Producer, timeout_s: float) -> None:
        try:
            producer.flush(timeout_s)
        except KafkaException as exc:
            self.fatal_errors.append(str(exc.args[0]))

    def _send_one(self, producer: Producer) -> None:
        partition = self.rng.randrange(self.cfg.partitions)
        value = self.index * VALUE_STRIDE + self.seq
        self.seq += 1
        row = {"partition": partition, "value": value}
        op_id = self.history.invoke(self.name, "send", row)
        self.outstanding[op_id] = row
        try:
            producer.produce(
                self.cfg.topic, value=str(value).encode(), key=str(value).encode(),
                partition=partition, on_delivery=self._on_delivery(op_id, row),
            )  # fmt: skip
        except BufferError:
            del self.outstanding[op_id]
            self.history.record(self.name, "fail", "send", op_id, row, error="local queue full")
        except KafkaException as exc:
            del self.outstanding[op_id]
            self.history.record(self.name, "info", "send", op_id, row, error=str(exc))
            self.fatal = self.fatal or exc.args[0].fatal()

    def _on_delivery(self, op_id: int, row: dict[str, int]) -> Callable[[Any, Message], None]:
        def done(err: KafkaError | None, msg: Message) -> None:
            self.outstanding.pop(op_id, None)
            if err is None:
                self.history.record(self.name, "ok", "send", op_id, row | {"offset": msg.offset()})
                return
            self.history.record(self.name, classify_error(err), "send", op_id, row, error=str(err))
            if err.fatal():
                self.fatal = True
                self.fatal_errors.append(str(err))

        return done

    def _replace(self, producer: Producer) -> Producer:
        self.history.record(self.name, "info", "producer-fatal", self.history.new_id(),
                            {"errors": self.fatal_errors[-3:]})  # fmt: skip
        self._flush(producer, 5)
        self._give_up_outstanding("producer replaced after a fatal error")
        self.fatal = False
        return Producer(producer_config(self.cfg.bootstrap))

    def _give_up_outstanding(self, why: str) -> None:
        for op_id, row in list(self.outstanding.items()):
            self.history.record(self.name, "info", "send", op_id, row, error=why)
        self.outstanding.clear()


class ConsumerClient:
    """One assign-mode consumer polling for the whole run."""

    def __init__(self, index: int, cfg: WorkloadConfig, history: HistoryWriter) -> None:
        self.name = f"consumer-{index}"
        self.cfg = cfg
        self.history = history
        self.rng = random.Random(cfg.seed * 1000 + 500 + index)

    def run(self, stop: threading.Event) -> None:
        consumer = Consumer(consumer_config(self.cfg.bootstrap, self.name))
        try:
            assign(consumer, self.history, self.name, self.cfg.topic,
                   list(range(self.cfg.partitions)), "beginning")  # fmt: skip
            while not stop.is_set():
                if self.rng.random() < self.cfg.reassign_ratio:
                    self._reassign(consumer)
                poll(consumer, self.history, self.name, timeout_s=0.2)
        finally:
            consumer.close()

    def _reassign(self, consumer: Consumer) -> None:
        count = self.rng.randint(1, self.cfg.partitions)
        partitions = sorted(self.rng.sample(range(self.cfg.partitions), count))
        seek = "beginning" if self.rng.random() < 0.3 else "end"
        assign(consumer, self.history, self.name, self.cfg.topic, partitions, seek)


def assign(
    consumer: Consumer, history: HistoryWriter, name: str, topic: str,
    partitions: list[int], seek: str,
) -> None:  # fmt: skip
    value: dict[str, Any] = {"partitions": partitions, "seek": seek}
    op_id = history.invoke(name, "assign", value)
    try:
        offsets = [OFFSET_BEGINNING] * len(partitions)
        if seek == "end":
            # A concrete offset, not the logical OFFSET_END: librdkafka re-resolves a
            # logical start position after a fetch error, which would jump forward.
            offsets = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1]
                       for p in partitions]  # fmt: skip
            value = value | {"offsets": offsets}
        consumer.assign([TopicPartition(topic, p, o) for p, o in zip(partitions, offsets, strict=True)])  # fmt: skip
    except KafkaException as exc:
        history.record(name, "info", "assign", op_id, value, error=str(exc))
        return
    history.record(name, "ok", "assign", op_id, value)


def poll(consumer: Consumer, history: HistoryWriter, name: str, timeout_s: float) -> int:
    """One recorded poll; returns the highest offset read per call (-1 if none)."""
    op_id = history.invoke(name, "poll")
    try:
        messages = consumer.consume(num_messages=500, timeout=timeout_s)
    except KafkaException as exc:
        history.record(name, "info", "poll", op_id, error=str(exc))
        return -1
    records = []
    errors = []
    for m in messages:
        err = m.error()
        if err is not None:
            errors.append(str(err))
            continue
        records.append([m.partition(), m.offset(), int(m.value() or b"-1")])
    value: dict[str, Any] = {"records": records}
    if errors:
        value["errors"] = errors[:10]
    history.record(name, "ok", "poll", op_id, value)
    return max((int(r[1] or 0) for r in records), default=-1)


class Client(Protocol):
    name: str

    def run(self, stop: threading.Event) -> None: ...


class Workload:
    """Producers and consumers on threads; `stop()` flushes producers before consumers.

    The consumers are the queue workload's assign-mode ones unless others are given
    (the group workload passes its subscribe-mode members)."""

    def __init__(
        self, cfg: WorkloadConfig, history: HistoryWriter, consumers: Sequence[Client] | None = None
    ) -> None:
        self.cfg = cfg
        self.history = history
        self._stop_producers = threading.Event()
        self._stop_consumers = threading.Event()
        self._producers = [ProducerClient(i + 1, cfg, history) for i in range(cfg.producers)]
        self._consumers: Sequence[Client] = (
            consumers if consumers is not None
            else [ConsumerClient(i, cfg, history) for i in range(cfg.consumers)]
        )  # fmt: skip
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for p in self._producers:
            self._spawn(p.name, p.run, self._stop_producers)
        for c in self._consumers:
            self._spawn(c.name, c.run, self._stop_consumers)

    def _spawn(self, name: str, target: Callable[[threading.Event], None], stop: threading.Event) -> None:  # fmt: skip
        t = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop_producers.set()
        for t in self._threads[: len(self._producers)]:
            t.join(30)
        self._stop_consumers.set()
        for t in self._threads[len(self._producers) :]:
            t.join(10)


def final_reads(
    bootstrap: str, topic: str, high_watermarks: dict[int, int], history: HistoryWriter,
    deadline_s: float = 30.0,
) -> None:  # fmt: skip
    """Reads each partition from 0 to its high watermark, recording polls as `final`."""
    name = "final"
    consumer = Consumer(consumer_config(bootstrap, name))
    try:
        for partition, hw in sorted(high_watermarks.items()):
            row = {"partition": partition, "high_watermark": hw}
            op_id = history.invoke(name, "final-read", row)
            assign(consumer, history, name, topic, [partition], "beginning")
            read_to = -1
            deadline = time.monotonic() + deadline_s
            while read_to < hw - 1 and time.monotonic() < deadline:
                read_to = max(read_to, poll(consumer, history, name, timeout_s=0.5))
            result: OpType = "ok" if read_to >= hw - 1 else "fail"
            history.record(name, result, "final-read", op_id, row | {"read_to": read_to})
    finally:
        consumer.close()
