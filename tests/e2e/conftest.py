"""One shared broker process for the e2e package, and helpers every e2e test uses.

Starting a node costs about a second, so tests that only talk to a broker share one
(package-scoped); tests that kill or restart a broker start their own. Topic names are
fresh per test so tests never see each other's records.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.protocol.connection import ClientConnection, ResponseReceived
from client.protocol.messages.create_topics import (
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
)
from client.protocol.messages.list_offsets import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from client.protocol.messages.metadata import MetadataRequest, MetadataRequestTopic
from client.protocol.messages.produce import (
    PartitionProduceData,
    PartitionProduceResponse,
    ProduceRequest,
    ProduceResponse,
    TopicProduceData,
)
from client.protocol.records import RecordBatchBuilder
from tests.harness import BrokerProcess, running_broker

_counter = itertools.count()


@pytest.fixture(scope="package")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A running single-node broker shared by the whole e2e package."""
    with running_broker(tmp_path_factory.mktemp("e2e-broker"), check_exit=True) as node:
        yield node


@pytest.fixture
def fresh_topic() -> Callable[[str], str]:
    """Returns a function making a topic name no other test (or earlier run) uses."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"

    return make


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker of this test's own, for tests that kill or restart it."""
    node = BrokerProcess(1, tmp_path)
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        if node.is_running():
            node.kill()


# -- A raw Kafka connection over a blocking socket, on our own sans-I/O protocol layer ------

#: The brief (bad-input.md section 6): every answer, or the close, comes within a second.
ANSWER_DEADLINE_S = 1.0


class RawClient:
    """One Kafka connection: our `ClientConnection` codec over a plain blocking socket.

    Used where third-party clients cannot go: hand-made batches, bad versions, pipelining
    and raw garbage. Every wait has a deadline, so a broker that neither answers nor
    closes fails the test instead of hanging it.
    """

    def __init__(self, address: str, deadline_s: float = ANSWER_DEADLINE_S) -> None:
        host, port = address.rsplit(":", 1)
        self.deadline_s = deadline_s
        self.sock = socket.create_connection((host, int(port)), timeout=5.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = ClientConnection(client_id="e2e")
        self._ready: deque[ResponseReceived] = deque()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, body: Any, version: int) -> int:
        correlation_id, frame = self.conn.send_request(body, version=version)
        self.sock.sendall(frame)
        return correlation_id

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> ResponseReceived:
        """The next response, in request order; fails if none comes within the deadline."""
        deadline = time.monotonic() + self.deadline_s
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no response within {self.deadline_s}s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self._ready.extend(self.conn.receive_data(chunk))
        return self._ready.popleft()

    def request(self, body: Any, version: int) -> Any:
        correlation_id = self.send(body, version)
        event = self.recv()
        assert event.correlation_id == correlation_id
        return event.response

    def wait_closed(self) -> bytes:
        """Waits for the broker to close; returns any bytes it sent first. Fails past the deadline."""
        deadline = time.monotonic() + self.deadline_s
        received = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {self.deadline_s}s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


def produce_request(
    topic: str, partition: int, records: bytes | None, acks: int = -1
) -> ProduceRequest:
    return ProduceRequest(
        acks=acks,
        timeout_ms=5000,
        topic_data=(
            TopicProduceData(
                name=topic,
                partition_data=(PartitionProduceData(index=partition, records=records),),
            ),
        ),
    )


def partition_response(response: ProduceResponse) -> PartitionProduceResponse:
    (topic,) = response.responses
    (part,) = topic.partition_responses
    return part


def simple_batch(
    count: int = 1, value_bytes: int = 10, *, key: bytes | None = b"k", **builder_args: Any
) -> bytes:
    builder = RecordBatchBuilder(batch_bytes_max=1 << 30, **builder_args)
    now_ms = int(time.time() * 1000)
    for i in range(count):
        builder.append(key, (b"%08d" % i).ljust(value_bytes, b"v"), (), now_ms)
    return builder.build()


def create_topic(raw: RawClient, name: str, partitions: int = 1, **configs: str) -> None:
    """CreateTopics, then waits (bounded) until Metadata shows a leader for each partition."""
    request = CreateTopicsRequest(
        topics=(
            CreatableTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=1,
                configs=tuple(CreatableTopicConfig(name=k, value=v) for k, v in configs.items()),
            ),
        ),
        timeout_ms=10_000,
    )
    saved, raw.deadline_s = (
        raw.deadline_s,
        15.0,
    )  # a create is a replicated write, not an error path
    try:
        (result,) = raw.request(request, 5).topics
        assert result.error_code == 0, result
        wait_for_leaders(raw, name, partitions)
    finally:
        raw.deadline_s = saved


def wait_for_leaders(raw: RawClient, name: str, partitions: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        response = raw.request(
            MetadataRequest(
                topics=(MetadataRequestTopic(name=name),), allow_auto_topic_creation=False
            ),
            12,
        )
        (topic,) = response.topics
        leaders = [p for p in topic.partitions if p.error_code == 0 and p.leader_id >= 0]
        if topic.error_code == 0 and len(leaders) == partitions:
            return
        assert time.monotonic() < deadline, f"no leaders for {name}: {topic}"
        time.sleep(0.02)  # poll interval while observing readiness


class Canary:
    """A producer on its own connection: proves the node still serves others after abuse."""

    def __init__(self, address: str, topic: str) -> None:
        self.address = address
        self.topic = topic
        self.next_offset: int | None = None

    def check(self) -> None:
        with RawClient(self.address) as raw:
            part = partition_response(
                raw.request(produce_request(self.topic, 0, simple_batch()), 9)
            )
        assert part.error_code == 0, part
        if self.next_offset is not None:
            assert part.base_offset == self.next_offset
        self.next_offset = part.base_offset + 1


def wait_partition_served(
    raw: RawClient, topic: str, partition: int = 0, timeout_s: float = 15.0
) -> None:
    """Polls ListOffsets until the partition's leader serves it (no NOT_LEADER_OR_FOLLOWER).

    Needed after a restart: /readyz can say 200 a moment before a partition's leader has
    committed an entry of its term (see the e2e report), and real clients retry error 6.
    """
    request = ListOffsetsRequest(
        replica_id=-1,
        topics=(
            ListOffsetsTopic(
                name=topic,
                partitions=(ListOffsetsPartition(partition_index=partition, timestamp=-1),),
            ),
        ),
    )
    deadline = time.monotonic() + timeout_s
    while True:
        code = raw.request(request, 7).topics[0].partitions[0].error_code
        if code == 0:
            return
        assert code == 6 and time.monotonic() < deadline, f"{topic}-{partition}: error {code}"
        time.sleep(0.01)  # poll interval while observing readiness
