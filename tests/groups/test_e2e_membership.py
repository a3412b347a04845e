"""Issue 7's remaining proof with real clients and a real broker process.

Static membership (a restarted `group.instance.id` member takes its place back without a
rebalance; an admin removes it by instance id), simple consumers committing without
joining, DeleteGroups, and offsets retention: a broker started with a short
`offsets_retention_ms` (given as RAFTKA_* environment variables, so the setting's whole
path to the coordinator is exercised) expires the offsets of an empty group, and only
those.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tests.groups.test_e2e_clients import (
    PARTITIONS,
    WAIT_S,
    confluent_consumer,
    new_topic,
    partitions_of,
    poll_until,
    produce,
)
from tests.harness import BrokerProcess, running_broker

#: librdkafka's "no committed offset" (OFFSET_INVALID).
NO_OFFSET = -1001


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path_factory.mktemp("groups-membership")) as node:
        yield node


@pytest.fixture(autouse=True)
def close_consumers() -> Iterator[None]:
    from tests.groups import test_e2e_clients

    yield
    while test_e2e_clients.OPEN:
        test_e2e_clients.OPEN.pop().close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def committed(bootstrap: str, group: str, topic: str) -> list[int]:
    """The group's committed offsets, read by a consumer that never joins the group."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return [tp.offset for tp in reader.committed(tps, timeout=10)]
    finally:
        reader.close()


class StaticMember(threading.Thread):
    """A confluent consumer with a group.instance.id, polled by its own thread."""

    def __init__(self, bootstrap: str, group: str, topic: str, instance_id: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "group.instance.id": instance_id,
                "heartbeat.interval.ms": 100,
                # Longer than the test's waits: only the admin's removal can hand over.
                "session.timeout.ms": 45_000,
                "partition.assignment.strategy": "range",
                "enable.auto.commit": False,
            }
        )
        self.topic = topic
        self.lock = threading.Lock()
        self.assigned: set[int] = set()
        self.revocations = 0
        self.stop = threading.Event()

    def _on_assign(self, _c: Any, tps: list[TopicPartition]) -> None:
        with self.lock:
            self.assigned = {tp.partition for tp in tps}

    def _on_revoke(self, _c: Any, _tps: list[TopicPartition]) -> None:
        with self.lock:
            self.assigned = set()
            self.revocations += 1

    def run(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        while not self.stop.is_set():
            self.consumer.poll(0.02)
        self.consumer.close()  # a static member sends no LeaveGroup (KIP-345)

    def partitions(self) -> set[int]:
        with self.lock:
            return set(self.assigned)

    def halt(self) -> None:
        """Stop polling and close (the thread closes a started consumer; idempotent)."""
        if self.ident is None and not self.stop.is_set():
            self.consumer.close()  # never started
        self.stop.set()
        if self.ident is not None:
            self.join(WAIT_S)


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(
    broker: BrokerProcess,
) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import MemberToRemove

    topic = new_topic(broker)
    group = f"st-{uuid.uuid4().hex[:8]}"
    a = StaticMember(broker.kafka_address, group, topic, "i-a")
    a.start()  # first: a leads the group, so b below is a follower
    b = StaticMember(broker.kafka_address, group, topic, "i-b")
    try:
        wait_for(lambda: len(a.partitions()) == PARTITIONS, "a alone")
        b.start()
        wait_for(lambda: len(a.partitions()) == len(b.partitions()) == 2, "a and b split")
        b_parts, a_parts, a_revocations = b.partitions(), a.partitions(), a.revocations
        b.halt()
        b = StaticMember(broker.kafka_address, group, topic, "i-b")  # same instance id
        b.start()
        wait_for(lambda: b.partitions() == b_parts, "b back on its partitions")
        assert (a.partitions(), a.revocations) == (a_parts, a_revocations)  # a saw nothing

        admin = KafkaAdminClient(bootstrap_servers=broker.kafka_address)
        try:
            desc = admin.describe_groups([group])[group]
            assert {m["group_instance_id"] for m in desc["members"]} == {"i-a", "i-b"}
            # b shuts down for good; rather than wait out its session, an operator
            # removes it by its instance id (batched LeaveGroup v3+).
            b.halt()
            result = admin.remove_group_members(group, [MemberToRemove(group_instance_id="i-b")])
            assert [e.__name__ for e in result.values()] == ["NoError"]
        finally:
            admin.close()
        wait_for(lambda: len(a.partitions()) == PARTITIONS, "a takes over b's partitions")
    finally:
        a.halt()
        b.halt()


def test_simple_consumer_commits_without_joining_and_delete_groups(
    broker: BrokerProcess,
) -> None:
    from kafka import KafkaAdminClient

    topic = new_topic(broker)
    simple = f"simple-{uuid.uuid4().hex[:8]}"
    c = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": simple})
    try:  # no subscribe(): OffsetCommit with generation -1 and no member id
        c.commit(offsets=[TopicPartition(topic, p, 10 + p) for p in range(2)], asynchronous=False)
    finally:
        c.close()
    assert committed(broker.kafka_address, simple, topic) == [10, 11, NO_OFFSET, NO_OFFSET]

    # A live group refuses commits from outside its membership.
    live = f"live-{uuid.uuid4().hex[:8]}"
    member = confluent_consumer(broker, live, "range")
    member.subscribe([topic])
    poll_until([member], lambda: len(partitions_of(member)) == PARTITIONS, {})
    outsider = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": live})
    try:
        with pytest.raises(KafkaException) as info:
            outsider.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
        assert info.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID
    finally:
        outsider.close()

    admin = KafkaAdminClient(bootstrap_servers=broker.kafka_address)
    try:
        assert admin.delete_groups([simple, live, "no-such-group"]) == {
            simple: "OK",
            live: "NonEmptyGroupError",
            "no-such-group": "GroupIdNotFoundError",
        }
        assert simple not in {g["group_id"] for g in admin.list_groups()}
    finally:
        admin.close()
    assert committed(broker.kafka_address, simple, topic) == [NO_OFFSET] * PARTITIONS


def test_short_offsets_retention_expires_only_empty_groups(tmp_path: Path) -> None:
    retention_ms = 2000
    node = BrokerProcess(
        1,
        tmp_path,
        env={
            "RAFTKA_OFFSETS_RETENTION_MS": str(retention_ms),
            "RAFTKA_OFFSETS_RETENTION_CHECK_INTERVAL_MS": "200",
        },
    )
    node.start()
    try:
        node.wait_ready()
        topic = new_topic(node)
        produce(node, topic, 0, 20)
        gone, kept = f"gone-{uuid.uuid4().hex[:8]}", f"kept-{uuid.uuid4().hex[:8]}"
        consumers = {}
        for group in (gone, kept):
            c = confluent_consumer(node, group, "range")
            c.subscribe([topic])
            got: dict[bytes, int] = {}
            poll_until([c], lambda got=got: len(got) >= 20, got)  # commits every record
            consumers[group] = c
        assert sum(committed(node.kafka_address, gone, topic)) == 20
        from tests.groups import test_e2e_clients

        test_e2e_clients.OPEN.remove(consumers[gone])
        consumers[gone].close()  # LeaveGroup: the group is Empty, its retention clock runs
        emptied = time.monotonic()
        wait_for(
            lambda: committed(node.kafka_address, gone, topic) == [NO_OFFSET] * PARTITIONS,
            "the empty group's offsets to expire",
        )
        assert time.monotonic() - emptied >= retention_ms / 1000 * 0.9
        consumers[kept].poll(0.1)  # kept stays a live member: its offsets stay too
        assert sum(committed(node.kafka_address, kept, topic)) == 20
    finally:
        if node.is_running():
            node.terminate()
