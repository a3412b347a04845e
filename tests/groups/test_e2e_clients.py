"""Consumer groups of real clients against a real broker process (issue 7's proof, part 1).

confluent-kafka (range and cooperative-sticky), kafka-python (with its admin describing
the group) and aiokafka each form a group over a 4-partition topic, read every record
exactly once, commit, survive a member leaving, and resume from committed offsets.
Heartbeat intervals are short so rebalances are noticed quickly (members learn of a
rebalance through their heartbeat, as in Kafka).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.harness import BrokerProcess, running_broker

PARTITIONS = 4
RECORDS = 200
WAIT_S = 30.0
JS_DIR = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path_factory.mktemp("groups-e2e")) as node:
        yield node


def new_topic(broker: BrokerProcess) -> str:
    name = f"grp-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.kafka_address})
    for fut in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        fut.result(10)
    return name


def produce(broker: BrokerProcess, topic: str, start: int, count: int) -> set[bytes]:
    producer = Producer({"bootstrap.servers": broker.kafka_address})
    values = {f"v{i}".encode() for i in range(start, start + count)}
    for i, v in enumerate(sorted(values)):
        producer.produce(topic, key=str(i).encode(), value=v)
    assert producer.flush(10) == 0
    return values


def confluent_consumer(broker: BrokerProcess, group: str, strategy: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.kafka_address,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "heartbeat.interval.ms": 100,
            "session.timeout.ms": 6000,
            "partition.assignment.strategy": strategy,
        }
    )
    OPEN.append(consumer)
    return consumer


OPEN: list[Consumer] = []


@pytest.fixture(autouse=True)
def close_consumers() -> Iterator[None]:
    """librdkafka threads keep a process alive: close every consumer, also on failure."""
    yield
    while OPEN:
        OPEN.pop().close()


def commit(c: Consumer, msg: Message) -> None:
    """Commit synchronously; retry REBALANCE_IN_PROGRESS as applications must.

    Kafka refuses commits while a group waits for its leader's assignment
    (CompletingRebalance); the commit succeeds once the group is Stable again.
    """
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            c.commit(msg, asynchronous=False)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.REBALANCE_IN_PROGRESS:
                raise
            assert time.monotonic() < deadline, "commit kept failing"
            time.sleep(0.02)


def poll_until(consumers: list[Consumer], done: Callable[[], bool], got: dict[bytes, int]) -> None:
    """Poll every consumer in turn, committing each record, until `done()` holds."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"timed out; got {len(got)} records"
        for c in consumers:
            msg = c.poll(0.05)
            if msg is None or msg.error():
                continue
            got[msg.value()] = got.get(msg.value(), 0) + 1
            commit(c, msg)


def partitions_of(c: Consumer) -> set[int]:
    return {tp.partition for tp in c.assignment()}


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_confluent_group_splits_takes_over_and_resumes(
    broker: BrokerProcess, strategy: str
) -> None:
    """Records are produced only while the group is stable, so "exactly once" is exact.

    (Commits racing a rebalance may fail with REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION,
    as with Kafka; the unit tests cover those answers.)
    """
    topic = new_topic(broker)
    group = f"g-{uuid.uuid4().hex[:8]}"
    a = confluent_consumer(broker, group, strategy)
    b = confluent_consumer(broker, group, strategy)
    a.subscribe([topic])
    b.subscribe([topic])
    got: dict[bytes, int] = {}

    def split() -> bool:
        pa, pb = partitions_of(a), partitions_of(b)
        return bool(pa) and bool(pb) and not pa & pb and len(pa | pb) == PARTITIONS

    poll_until([a, b], split, got)
    first = produce(broker, topic, 0, RECORDS)
    poll_until([a, b], lambda: len(got) >= RECORDS, got)
    assert split()
    assert set(got) == first and set(got.values()) == {1}  # every record exactly once

    OPEN.remove(a)
    a.close()  # LeaveGroup: b takes over every partition
    poll_until([b], lambda: len(partitions_of(b)) == PARTITIONS, got)
    second = produce(broker, topic, RECORDS, 40)
    poll_until([b], lambda: len(got) >= RECORDS + 40, got)
    assert set(got) == first | second and set(got.values()) == {1}
    OPEN.remove(b)
    b.close()

    third = produce(broker, topic, RECORDS + 40, 20)
    c = confluent_consumer(broker, group, strategy)
    c.subscribe([topic])
    resumed: dict[bytes, int] = {}
    poll_until([c], lambda: len(resumed) >= 20, resumed)
    assert set(resumed) == third  # started at the committed offsets, nothing re-read


def test_kafka_python_group_and_admin_describe(broker: BrokerProcess) -> None:
    """Each consumer polls in its own thread, as applications do (a JoinGroup is a long
    poll that completes only when the other member rejoins too). Then one member leaves
    and the other takes over its partitions and reads what comes next, exactly once."""
    from kafka import KafkaAdminClient, KafkaConsumer

    topic = new_topic(broker)
    group = f"kp-{uuid.uuid4().hex[:8]}"
    sent = produce(broker, topic, 0, 60)
    got: list[bytes] = []
    owned: dict[int, int] = {}
    stops = [threading.Event(), threading.Event()]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=broker.kafka_address,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            heartbeat_interval_ms=100,
            session_timeout_ms=6000,
        )
        try:
            while not stops[i].is_set():
                for records in consumer.poll(100).values():
                    got.extend(r.value for r in records)
                    consumer.commit()
                owned[i] = len(consumer.assignment())
        except BaseException as exc:
            errors.append(exc)
        finally:
            consumer.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    admin = KafkaAdminClient(bootstrap_servers=broker.kafka_address)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (len(got) >= 60 and owned.get(0) == owned.get(1) == 2):
            assert time.monotonic() < deadline and not errors, (len(got), owned, errors)
            time.sleep(0.05)
        assert sorted(got) == sorted(sent)
        assert group in {g["group_id"] for g in admin.list_groups()}
        desc = admin.describe_groups([group])[group]
        assert desc["group_state"] == "Stable" and desc["protocol_type"] == "consumer"
        assert len(desc["members"]) == 2
        while sum(o.offset for o in admin.list_group_offsets(group)[group].values()) < 60:
            assert time.monotonic() < deadline, "commits never reached the end"
            time.sleep(0.05)
        stops[0].set()
        threads[0].join()  # close(): LeaveGroup, member 1 takes over every partition
        while owned.get(1) != PARTITIONS:
            assert time.monotonic() < deadline and not errors, (owned, errors)
            time.sleep(0.05)
        sent |= produce(broker, topic, 60, 20)
        while len(got) < 80:
            assert time.monotonic() < deadline and not errors, (len(got), errors)
            time.sleep(0.05)
    finally:
        for stop in stops:
            stop.set()
        for t in threads:
            t.join()
        admin.close()
    assert not errors
    assert sorted(got) == sorted(sent)  # every record exactly once, also after the leave


def test_aiokafka_group_commits_and_resumes(broker: BrokerProcess) -> None:
    import aiokafka

    topic = new_topic(broker)
    group = f"aio-{uuid.uuid4().hex[:8]}"
    sent = produce(broker, topic, 0, 50)

    async def consume(expected: int) -> list[bytes]:
        c = aiokafka.AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.kafka_address,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            heartbeat_interval_ms=100,
        )
        await c.start()
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + WAIT_S
            while len(got) < expected:
                assert time.monotonic() < deadline
                for records in (await c.getmany(timeout_ms=200)).values():
                    got += [r.value for r in records if r.value is not None]
            await c.commit()
        finally:
            await c.stop()
        return got

    assert sorted(asyncio.run(consume(50))) == sorted(sent)
    more = produce(broker, topic, 50, 10)
    assert sorted(asyncio.run(consume(10))) == sorted(more)


def test_describe_groups_shows_members_and_assignments(broker: BrokerProcess) -> None:
    """kafka-python's admin decodes the subscription and assignment the broker stored."""
    from kafka import KafkaAdminClient

    topic = new_topic(broker)
    group = f"d-{uuid.uuid4().hex[:8]}"
    c = confluent_consumer(broker, group, "range")
    c.subscribe([topic])
    poll_until([c], lambda: len(partitions_of(c)) == 4, {})
    admin = KafkaAdminClient(bootstrap_servers=broker.kafka_address)
    try:
        desc = admin.describe_groups([group])[group]
        assert (desc["group_state"], desc["protocol_data"]) == ("Stable", "range")
        (member,) = desc["members"]
        assert member["member_metadata"]["topics"] == [topic]
        assert member["member_assignment"]["assigned_partitions"] == [
            {"topic": topic, "partitions": [0, 1, 2, 3]}
        ]
    finally:
        admin.close()


def test_kcat_balanced_consumer(broker: BrokerProcess) -> None:
    topic = new_topic(broker)
    sent = produce(broker, topic, 0, 30)
    argv = ["kcat", "-b", broker.kafka_address, "-G", f"kc-{uuid.uuid4().hex[:8]}", topic]
    argv += ["-o", "beginning", "-e", "-q", "-f", "%s\\n", "-X", "heartbeat.interval.ms=100"]
    out = subprocess.run(argv, capture_output=True, timeout=WAIT_S, check=True)
    assert set(out.stdout.split()) == sent


def test_kafkajs_joins_a_group_and_commits(broker: BrokerProcess) -> None:
    topic = new_topic(broker)
    produce(broker, topic, 0, 30)
    group = f"kjs-{uuid.uuid4().hex[:8]}"
    script = f"""
const {{ Kafka, logLevel }} = require('kafkajs');
const kafka = new Kafka({{ brokers: ['{broker.kafka_address}'], logLevel: logLevel.WARN }});
(async () => {{
  const c = kafka.consumer({{ groupId: '{group}', heartbeatInterval: 300 }});
  await c.connect();
  await c.subscribe({{ topic: '{topic}', fromBeginning: true }});
  let n = 0;
  await new Promise((resolve) => {{
    c.run({{ eachMessage: async () => {{ n++; if (n === 30) resolve(); }} }});
  }});
  await c.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchOffsets({{ groupId: '{group}', topics: ['{topic}'] }});
  await admin.disconnect();
  console.log(JSON.stringify({{ n, offsets }}));
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"""
    out = subprocess.run(
        ["node", "-e", script], cwd=JS_DIR, capture_output=True, timeout=WAIT_S, check=True
    )
    result = json.loads(out.stdout)
    assert result["n"] == 30
    committed = [int(p["offset"]) for p in result["offsets"][0]["partitions"]]
    assert sum(committed) == 30


def test_committed_offsets_survive_sigkill_restart(tmp_path: Path) -> None:
    """The restarted node rebuilds its group shards from __consumer_offsets."""
    node = BrokerProcess(1, tmp_path)
    node.start()
    try:
        node.wait_ready()
        topic = new_topic(node)
        group = f"r-{uuid.uuid4().hex[:8]}"
        produce(node, topic, 0, 40)
        c = confluent_consumer(node, group, "range")
        c.subscribe([topic])
        got: dict[bytes, int] = {}
        poll_until([c], lambda: len(got) >= 40, got)
        before = {tp.partition: tp.offset for tp in c.committed(c.assignment(), timeout=10)}
        assert sum(before.values()) == 40
        OPEN.remove(c)
        c.close()
        node.kill()
        node.restart()
        after_consumer = confluent_consumer(node, group, "range")
        deadline = time.monotonic() + WAIT_S
        while True:  # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS until the shard is loaded
            try:
                tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
                after = {tp.partition: tp.offset for tp in after_consumer.committed(tps, 5)}
                if after == before:
                    break
            except KafkaException:
                pass
            assert time.monotonic() < deadline, "committed offsets not back after restart"
            time.sleep(0.1)
    finally:
        if node.is_running():
            node.terminate()


def test_aiokafka_two_members_split_and_one_takes_over(broker: BrokerProcess) -> None:
    """Records are produced only while the group is stable, so "exactly once" is exact."""
    import aiokafka

    topic = new_topic(broker)
    group = f"aio2-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[bytes], set[bytes]]:
        def member() -> aiokafka.AIOKafkaConsumer:
            return aiokafka.AIOKafkaConsumer(
                topic,
                bootstrap_servers=broker.kafka_address,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                heartbeat_interval_ms=100,
            )

        got: list[bytes] = []
        a, b = member(), member()
        stops = {a: asyncio.Event(), b: asyncio.Event()}

        async def pump(c: aiokafka.AIOKafkaConsumer) -> None:
            while not stops[c].is_set():
                batch = await c.getmany(timeout_ms=100)
                for records in batch.values():
                    got.extend(r.value for r in records if r.value is not None)
                if batch:
                    await c.commit()

        async def until(condition: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + WAIT_S
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                for task in tasks:
                    if task.done():
                        task.result()  # a failed pump fails the test with its error
                await asyncio.sleep(0.05)

        await a.start()
        await b.start()
        tasks = [asyncio.ensure_future(pump(a)), asyncio.ensure_future(pump(b))]
        try:
            await until(lambda: len(a.assignment()) == len(b.assignment()) == 2, "the split")
            sent = produce(broker, topic, 0, 40)
            await until(lambda: len(got) >= 40, "the first records")
            stops[a].set()
            await tasks[0]
            await a.stop()  # LeaveGroup: b takes over every partition
            await until(lambda: len(b.assignment()) == PARTITIONS, "b to take over")
            sent |= produce(broker, topic, 40, 20)
            await until(lambda: len(got) >= 60, "the records after the take-over")
        finally:
            for c in (a, b):
                stops[c].set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await b.stop()
        return got, sent

    got, sent = asyncio.run(scenario())
    assert sorted(got) == sorted(sent)  # every record exactly once
