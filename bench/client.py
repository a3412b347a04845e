"""Client throughput against one Raftka node: ours vs aiokafka, kafka-python, confluent-kafka.

    .venv/bin/python -m bench.client [--records 100000] [--repeat 5] [--bootstrap HOST:PORT]

Without --bootstrap it starts a single-node broker in a temporary directory (the test
harness does the work). For each client: producer records/s and MB/s for 100-byte and
1 KiB values (acks=all, each client's default idempotence, linger 5 ms, 1 topic with 1
partition), then consumer records/s reading those records back from the beginning.
Repeats are interleaved (every client once, then again) and medians are printed, so
load from other processes lands on every client alike. Besides wall-clock rates, the
CPU time this process spent per record (all its threads; the broker's is not counted)
shows each client's own cost, which the load of a shared machine disturbs less.
Numbers vary with the machine and its load; compare columns within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from client.admin import AdminClient, NewTopic
from client.consumer import Consumer
from client.producer import Producer
from client.structs import TopicPartition


async def ours_produce(bootstrap: str, topic: str, n: int, value: bytes) -> None:
    async with Producer(bootstrap, linger_ms=5, batch_bytes_max=256 * 1024) as p:
        send = p.send
        for _ in range(n):
            await send(topic, value, partition=0)
        await p.flush()


async def ours_consume(bootstrap: str, topic: str, n: int) -> None:
    async with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition(topic, 0)])
        got = 0
        while got < n:
            batches = await c.getmany(timeout_ms=10000, max_records=10000)
            assert batches, f"stalled at {got}"
            for records in batches.values():
                got += len(records)


async def aiokafka_produce(bootstrap: str, topic: str, n: int, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await p.start()
    try:
        for _ in range(n):
            await p.send(topic, value, partition=0)
        await p.flush()
    finally:
        await p.stop()


async def aiokafka_consume(bootstrap: str, topic: str, n: int) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await c.start()
    try:
        c.assign([ATP(topic, 0)])
        got = 0
        while got < n:
            batches = await c.getmany(timeout_ms=10000, max_records=10000)
            assert batches, f"stalled at {got}"
            got += sum(len(v) for v in batches.values())
    finally:
        await c.stop()


def kafka_python_produce(bootstrap: str, topic: str, n: int, value: bytes) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    for _ in range(n):
        p.send(topic, value, partition=0)
    p.flush()
    p.close()


def kafka_python_consume(bootstrap: str, topic: str, n: int) -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    c.assign([KTP(topic, 0)])
    c.seek_to_beginning()
    got = 0
    while got < n:
        got += sum(len(v) for v in c.poll(timeout_ms=1000, max_records=10000).values())
    c.close()


def confluent_produce(bootstrap: str, topic: str, n: int, value: bytes) -> None:
    from confluent_kafka import Producer as CkProducer

    p = CkProducer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    produce, poll = p.produce, p.poll
    for i in range(n):
        while True:
            try:
                produce(topic, value, partition=0)
                break
            except BufferError:
                poll(0.01)
        if i % 1000 == 0:
            poll(0)
    assert p.flush(60) == 0


def confluent_consume(bootstrap: str, topic: str, n: int) -> None:
    from confluent_kafka import Consumer as CkConsumer
    from confluent_kafka import TopicPartition as CTP

    c = CkConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False}
    )
    c.assign([CTP(topic, 0, 0)])
    got = 0
    while got < n:
        got += len(c.consume(10000, timeout=1))
    c.close()


CLIENTS: list[tuple[str, Callable[..., object], Callable[..., object]]] = [
    ("raftka (ours)", ours_produce, ours_consume),
    ("aiokafka", aiokafka_produce, aiokafka_consume),
    ("kafka-python", kafka_python_produce, kafka_python_consume),
    ("confluent-kafka", confluent_produce, confluent_consume),
]


def timed(fn: Callable[..., object], *args: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn(*args)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    return time.perf_counter() - start, time.process_time() - cpu_start


async def create_topic(bootstrap: str, name: str) -> None:
    async with AdminClient(bootstrap) as admin:
        await admin.create_topics([NewTopic(name, 1)])


def run(bootstrap: str, records: int, repeat: int) -> None:
    print(f"{records} records per run, median of {repeat} interleaved runs, 1 partition,")
    print("acks=all, linger 5 ms; cpu = this process's CPU microseconds per record\n")
    header = (
        f"{'client':<16} {'size':>6} {'produce rec/s':>14} {'MB/s':>7} {'cpu us':>7}"
        f" {'consume rec/s':>14} {'cpu us':>7}"
    )
    print(header)
    print("-" * len(header))
    for size in (100, 1024):
        value = b"x" * size
        runs: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n, _, _ in CLIENTS}
        for _ in range(repeat):
            for name, produce, consume in CLIENTS:
                topic = f"bench-{uuid.uuid4().hex[:8]}"
                asyncio.run(create_topic(bootstrap, topic))
                runs[name].append(
                    (*timed(produce, bootstrap, topic, records, value),
                     *timed(consume, bootstrap, topic, records))
                )  # fmt: skip
        for name, _, _ in CLIENTS:
            p_s, p_cpu, c_s, c_cpu = (statistics.median(col) for col in zip(*runs[name]))
            print(
                f"{name:<16} {size:>6} {records / p_s:>14,.0f} "
                f"{records * size / p_s / 1e6:>7.1f} {p_cpu / records * 1e6:>7.1f}"
                f" {records / c_s:>14,.0f} {c_cpu / records * 1e6:>7.1f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100000)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.bootstrap:
        run(args.bootstrap, args.records, args.repeat)
        return
    from tests.harness import BrokerProcess

    node = BrokerProcess(1, Path(tempfile.mkdtemp(prefix="raftka-bench-")))
    node.start()
    try:
        node.wait_ready()
        run(node.kafka_address, args.records, args.repeat)
    finally:
        node.terminate()


if __name__ == "__main__":
    main()
