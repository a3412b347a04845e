"""Real third-party Kafka clients against one real broker process.

Each producer client writes a few thousand keyed records (headers, some null keys and
null values, one ~900 KB record) and a *different* client reads them back, so a record
must survive one client's encoder, the broker and another client's decoder: same values,
same order per key, contiguous offsets, headers and nulls intact. confluent-kafka also
writes with every compression codec (read back by our own decoder, which checks the
codec really was used). The admin tests drive topic administration through
confluent-kafka's AdminClient and the error cases through raw requests.

Consumer groups are not wired yet, so every consumer reads in assign mode, and kafkajs
(which only consumes through a group) is used as a producer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from client.protocol.compression import Codec
from client.protocol.messages.create_topics import CreatableTopic, CreateTopicsRequest
from client.protocol.messages.fetch import FetchPartition, FetchRequest, FetchTopic
from client.protocol.messages.metadata import MetadataRequest, MetadataRequestTopic
from client.protocol.records import decode_batches
from tests.e2e.conftest import RawClient, create_topic, wait_for_leaders
from tests.harness import ROOT, BrokerProcess

RECORDS = 2000
BIG_VALUE_BYTES = 900_000
PARTITIONS = 3
READ_TIMEOUT_S = 30.0
JS_DIR = ROOT / "tests" / "js"


@dataclass(frozen=True, slots=True)
class Rec:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Got:
    partition: int
    offset: int
    rec: Rec


def make_records(tag: str, count: int = RECORDS, *, uniform_headers: bool = False) -> list[Rec]:
    """Keyed records with headers, some null keys and values, and one ~900 KB value.

    `uniform_headers`: every record carries the same headers (kcat cannot vary them).
    """
    out = []
    for i in range(count):
        key = None if i % 97 == 5 else b"key-%d" % (i % 23)
        value = None if i % 89 == 7 else b"%s-%05d-%s" % (tag.encode(), i, b"x" * (i % 40))
        if uniform_headers:
            headers: tuple[tuple[str, bytes], ...] = (("src", tag.encode()), ("n", b"2"))
        elif i % 5:
            headers = (("idx", b"%d" % i), ("src", tag.encode()), ("e", b""))
        else:
            headers = ()
        out.append(Rec(key, value, headers))
    big = (("src", tag.encode()), ("n", b"2")) if uniform_headers else (("big", b"1"),)
    out.insert(count // 2, Rec(b"key-big", b"B" * BIG_VALUE_BYTES, big))
    return out


def check_read_back(sent: Sequence[Rec], got: Sequence[Got]) -> None:
    assert len(got) == len(sent), f"sent {len(sent)}, read {len(got)}"
    by_partition: dict[int, list[Got]] = {}
    for g in got:
        by_partition.setdefault(g.partition, []).append(g)
    for partition, records in by_partition.items():
        records.sort(key=lambda g: g.offset)
        offsets = [g.offset for g in records]
        assert offsets == list(range(len(offsets))), (
            f"partition {partition}: offsets not contiguous"
        )
    assert Counter(g.rec for g in got) == Counter(sent), "records changed on the way"
    keys = {r.key for r in sent if r.key is not None}
    for key in keys:
        mine = [g for g in got if g.rec.key == key]
        assert len({g.partition for g in mine}) == 1, f"key {key!r} spread over partitions"
        in_log_order = [g.rec for g in sorted(mine, key=lambda g: g.offset)]
        assert in_log_order == [r for r in sent if r.key == key], f"key {key!r} out of order"


# -- producers --------------------------------------------------------------------------------
def produce_kcat(bootstrap: str, topic: str, records: Sequence[Rec]) -> None:
    headers = records[0].headers
    assert all(r.headers == headers for r in records)
    lines = []
    for r in records:
        # -K tab: no tab means a null key; -Z: an empty key or value is sent as null.
        assert r.key != b"" and r.value != b""
        value = r.value or b""
        lines.append(value if r.key is None else r.key + b"\t" + value)
    argv = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-Z", "-X", "acks=all"]
    for name, value in headers:
        argv += ["-H", f"{name}={value.decode()}"]
    subprocess.run(argv, input=b"\n".join(lines) + b"\n", check=True, timeout=60)


def produce_confluent(
    bootstrap: str, topic: str, records: Sequence[Rec], compression: str = "none"
) -> None:
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "compression.type": compression,
            "linger.ms": 5,
        }
    )
    for r in records:
        producer.produce(
            topic, key=r.key, value=r.value, headers=list(r.headers), on_delivery=on_delivery
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:3]


def produce_kafka_python(bootstrap: str, topic: str, records: Sequence[Rec]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)  # defaults: idempotent, acks=all
    try:
        futures = [
            producer.send(topic, key=r.key, value=r.value, headers=list(r.headers)) for r in records
        ]
        producer.flush(60)
        for f in futures:
            f.get(timeout=10)
    finally:
        producer.close(timeout=10)


def produce_aiokafka(bootstrap: str, topic: str, records: Sequence[Rec]) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=r.key, value=r.value, headers=list(r.headers))
                for r in records
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


KAFKAJS_PRODUCER = r"""
const { Kafka, logLevel } = require('kafkajs');
const spec = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const buf = (s) => (s === null ? null : Buffer.from(s, 'latin1'));
(async () => {
  const kafka = new Kafka({ clientId: 'e2e-kafkajs', brokers: [spec.bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  for (let i = 0; i < spec.records.length; i += 250) {
    const messages = spec.records.slice(i, i + 250).map((r) => {
      const headers = {};
      for (const [k, v] of r.headers) headers[k] = buf(v);
      return { key: buf(r.key), value: buf(r.value), headers };
    });
    await producer.send({ topic: spec.topic, acks: -1, messages });
  }
  await producer.disconnect();
  console.log('produced');
})().catch((e) => { console.error(e); process.exit(1); });
"""


def produce_kafkajs(bootstrap: str, topic: str, records: Sequence[Rec], tmp: Path) -> None:
    def text(b: bytes | None) -> str | None:
        return None if b is None else b.decode("latin1")

    spec = {
        "bootstrap": bootstrap,
        "topic": topic,
        "records": [
            {
                "key": text(r.key),
                "value": text(r.value),
                "headers": [[k, text(v)] for k, v in r.headers],
            }
            for r in records
        ],
    }
    spec_path, script = tmp / "kafkajs-spec.json", tmp / "kafkajs-produce.js"
    spec_path.write_text(json.dumps(spec))
    script.write_text(KAFKAJS_PRODUCER)
    env = {**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")}
    done = subprocess.run(
        ["node", str(script), str(spec_path)], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.strip() == b"produced"


# -- consumers (assign mode: no groups yet) ---------------------------------------------------
def consume_confluent(bootstrap: str, topic: str, count: int) -> list[Got]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "e2e-unused",  # required by the client; assign() never joins it
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got: list[Got] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(min(1000, count - len(got)), timeout=1):
                assert msg.error() is None, msg.error()
                headers = tuple((k, v) for k, v in (msg.headers() or []))
                got.append(Got(msg.partition(), msg.offset(), Rec(msg.key(), msg.value(), headers)))
    finally:
        consumer.close()
    return got


def consume_kafka_python(bootstrap: str, topic: str, count: int) -> list[Got]:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KpTopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        consumer.assign([KpTopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        got: list[Got] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(got) < count and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                for m in messages:
                    rec = Rec(m.key, m.value, tuple((k, v) for k, v in m.headers))
                    got.append(Got(m.partition, m.offset, rec))
    finally:
        consumer.close()
    return got


def consume_aiokafka(bootstrap: str, topic: str, count: int) -> list[Got]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioTopicPartition

    async def run() -> list[Got]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign([AioTopicPartition(topic, p) for p in range(PARTITIONS)])
            await consumer.seek_to_beginning()
            got: list[Got] = []
            deadline = time.monotonic() + READ_TIMEOUT_S
            while len(got) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for m in messages:
                        rec = Rec(m.key, m.value, tuple((k, bytes(v)) for k, v in m.headers))
                        got.append(Got(m.partition, m.offset, rec))
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


def consume_kcat(bootstrap: str, topic: str, count: int) -> list[Got]:
    got: list[Got] = []
    for p in range(PARTITIONS):
        done = subprocess.run(
            ["kcat", "-C", "-b", bootstrap, "-t", topic, "-p", str(p), "-o", "beginning",
             "-e", "-J", "-q"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        for line in done.stdout.splitlines():
            m = json.loads(line)
            flat = m.get("headers") or []
            headers = tuple((flat[i], flat[i + 1].encode()) for i in range(0, len(flat), 2))

            def raw(s: str | None) -> bytes | None:
                return None if s is None else s.encode()

            got.append(
                Got(m["partition"], m["offset"], Rec(raw(m["key"]), raw(m["payload"]), headers))
            )
    return got


# -- the round trips --------------------------------------------------------------------------
def _topic(broker: BrokerProcess, fresh_topic: Callable[[str], str], tag: str) -> str:
    topic = fresh_topic(tag)
    with RawClient(broker.kafka_address) as raw:
        create_topic(raw, topic, PARTITIONS)
    return topic


def test_kcat_to_confluent(broker: BrokerProcess, fresh_topic: Callable[[str], str]) -> None:
    topic = _topic(broker, fresh_topic, "kcat")
    sent = make_records("kcat", uniform_headers=True)
    produce_kcat(broker.kafka_address, topic, sent)
    check_read_back(sent, consume_confluent(broker.kafka_address, topic, len(sent)))


def test_confluent_to_kafka_python(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    topic = _topic(broker, fresh_topic, "confluent")
    sent = make_records("confluent")
    produce_confluent(broker.kafka_address, topic, sent)
    check_read_back(sent, consume_kafka_python(broker.kafka_address, topic, len(sent)))


def test_kafka_python_idempotent_to_aiokafka(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    topic = _topic(broker, fresh_topic, "kafkapython")
    sent = make_records("kafkapython")
    produce_kafka_python(broker.kafka_address, topic, sent)
    check_read_back(sent, consume_aiokafka(broker.kafka_address, topic, len(sent)))
    with RawClient(broker.kafka_address) as raw:
        _, _, producer_ids = _fetch_all(raw, topic)
    assert len(producer_ids) == 1 and min(producer_ids) >= 0, "not an idempotent producer"


def test_aiokafka_to_kcat(broker: BrokerProcess, fresh_topic: Callable[[str], str]) -> None:
    topic = _topic(broker, fresh_topic, "aiokafka")
    sent = make_records("aiokafka")
    produce_aiokafka(broker.kafka_address, topic, sent)
    check_read_back(sent, consume_kcat(broker.kafka_address, topic, len(sent)))


def test_kafkajs_to_confluent(
    broker: BrokerProcess, fresh_topic: Callable[[str], str], tmp_path: Path
) -> None:
    topic = _topic(broker, fresh_topic, "kafkajs")
    sent = make_records("kafkajs")
    produce_kafkajs(broker.kafka_address, topic, sent, tmp_path)
    check_read_back(sent, consume_confluent(broker.kafka_address, topic, len(sent)))


CODECS = {"none": Codec.NONE, "gzip": Codec.GZIP, "snappy": Codec.SNAPPY, "lz4": Codec.LZ4,
          "zstd": Codec.ZSTD}  # fmt: skip


def _fetch_all(raw: RawClient, topic: str) -> tuple[list[Got], set[int], set[int]]:
    """Every record of every partition through our own decoder; the codecs and producer ids."""
    got: list[Got] = []
    codecs: set[int] = set()
    producer_ids: set[int] = set()
    for p in range(PARTITIONS):
        offset = 0
        while True:
            request = FetchRequest(
                max_wait_ms=0,
                min_bytes=0,
                max_bytes=8 << 20,
                topics=(
                    FetchTopic(
                        topic=topic,
                        partitions=(
                            FetchPartition(
                                partition=p, fetch_offset=offset, partition_max_bytes=4 << 20
                            ),
                        ),
                    ),
                ),
            )
            data = raw.request(request, 12).responses[0].partitions[0]
            assert data.error_code == 0
            batches = decode_batches(data.records or b"")
            for batch in batches:
                codecs.add(batch.header.compression)
                producer_ids.add(batch.header.producer_id)
                for r in batch.records:
                    if r.offset >= offset:
                        headers = tuple((k, v or b"") for k, v in r.headers)
                        got.append(Got(p, r.offset, Rec(r.key, r.value, headers)))
                offset = batch.header.next_offset
            if offset >= data.high_watermark:
                break
            assert batches, f"no progress at {topic}-{p}@{offset}"
    return got, codecs, producer_ids


@pytest.mark.parametrize("codec", list(CODECS))
def test_confluent_compression_codecs(
    broker: BrokerProcess, fresh_topic: Callable[[str], str], codec: str
) -> None:
    topic = _topic(broker, fresh_topic, f"codec-{codec}")
    sent = make_records(codec, 500)
    produce_confluent(broker.kafka_address, topic, sent, compression=codec)
    with RawClient(broker.kafka_address) as raw:
        got, codecs, _ = _fetch_all(raw, topic)
    check_read_back(sent, got)
    assert int(CODECS[codec]) in codecs, f"no {codec} batch stored (saw {codecs})"


# -- admin --------------------------------------------------------------------------------------
def _admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.kafka_address})


def _kafka_error_code(fut: object) -> int:
    with pytest.raises(KafkaException) as info:
        fut.result(15)  # type: ignore[attr-defined]
    return int(info.value.args[0].code())


def test_admin_topic_lifecycle(broker: BrokerProcess, fresh_topic: Callable[[str], str]) -> None:
    admin = _admin(broker)
    name, dry = fresh_topic("admin"), fresh_topic("admin-dry")

    admin.create_topics([NewTopic(dry, 2, 1)], validate_only=True)[dry].result(15)
    assert dry not in admin.list_topics(timeout=10).topics

    new = NewTopic(name, 2, 1, config={"retention.ms": "3600000"})
    admin.create_topics([new], operation_timeout=10)[name].result(15)
    assert len(admin.list_topics(timeout=10).topics[name].partitions) == 2

    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert configs["cleanup.policy"].value == "delete"
    assert configs["cleanup.policy"].is_default

    admin.create_partitions([NewPartitions(name, 4)])[name].result(15)
    with RawClient(broker.kafka_address) as raw:
        wait_for_leaders(raw, name, 4)
    assert len(admin.list_topics(timeout=10).topics[name].partitions) == 4
    # Fewer partitions than now is refused (INVALID_PARTITIONS, 37).
    assert _kafka_error_code(admin.create_partitions([NewPartitions(name, 3)])[name]) == 37

    # The new partitions take records.
    produce_confluent(broker.kafka_address, name, [Rec(b"k", b"v", ())] * 3)

    admin.delete_topics([name], operation_timeout=10)[name].result(15)
    assert name not in admin.list_topics(timeout=10).topics
    assert _kafka_error_code(admin.delete_topics([name])[name]) == 3


def test_admin_create_topic_errors(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    admin = _admin(broker)
    for bad in ("bad/name", "..", "x" * 250, "spaces are bad"):
        assert _kafka_error_code(admin.create_topics([NewTopic(bad, 1, 1)])[bad]) == 17, bad
    name = fresh_topic("rf")
    assert _kafka_error_code(admin.create_topics([NewTopic(name, 1, 3)])[name]) == 38
    # librdkafka refuses 0 partitions itself, so the broker's answer is checked raw.
    with RawClient(broker.kafka_address) as raw:
        request = CreateTopicsRequest(
            topics=(CreatableTopic(name=name, num_partitions=0, replication_factor=1),)
        )
        assert raw.request(request, 5).topics[0].error_code == 37
        request = CreateTopicsRequest(
            topics=(CreatableTopic(name=name, num_partitions=1, replication_factor=0),)
        )
        assert raw.request(request, 5).topics[0].error_code == 38
    assert name not in admin.list_topics(timeout=10).topics
    # Creating an existing topic: TOPIC_ALREADY_EXISTS (36).
    existing = fresh_topic("dup")
    admin.create_topics([NewTopic(existing, 1, 1)])[existing].result(15)
    assert _kafka_error_code(admin.create_topics([NewTopic(existing, 1, 1)])[existing]) == 36


def test_list_offsets_earliest_latest(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    topic = _topic(broker, fresh_topic, "offsets")
    records = [Rec(b"k", b"v%d" % i, ()) for i in range(10)]  # one key: one partition
    produce_confluent(broker.kafka_address, topic, records)
    admin = _admin(broker)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    latest = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps})
    earliest = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps})
    ends = sorted(f.result(15).offset for f in latest.values())
    assert ends == [0, 0, 10]
    assert [f.result(15).offset for f in earliest.values()] == [0, 0, 0]


def test_metadata_auto_creates_topic(
    broker: BrokerProcess, fresh_topic: Callable[[str], str]
) -> None:
    topic = fresh_topic("auto")
    with RawClient(broker.kafka_address) as raw:
        request = MetadataRequest(
            topics=(MetadataRequestTopic(name=topic),), allow_auto_topic_creation=True
        )
        first = raw.request(request, 12).topics[0]
        assert first.error_code in (0, 5), first  # LEADER_NOT_AVAILABLE while it is being made
        wait_for_leaders(raw, topic, 1)  # num_partitions defaults to 1
        # Without permission to create, an unknown topic stays unknown.
        other = fresh_topic("noauto")
        request = MetadataRequest(
            topics=(MetadataRequestTopic(name=other),), allow_auto_topic_creation=False
        )
        assert raw.request(request, 12).topics[0].error_code == 3
    # kcat's metadata listing shows the new topic with its leader.
    done = subprocess.run(
        ["kcat", "-L", "-J", "-b", broker.kafka_address, "-t", topic],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    listing = json.loads(done.stdout)
    assert listing["brokers"] == [{"id": 1, "name": broker.kafka_address}]
    (entry,) = listing["topics"]
    assert entry["topic"] == topic
    assert [p["leader"] for p in entry["partitions"]] == [1]
