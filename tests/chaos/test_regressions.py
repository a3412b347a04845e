"""Broker bugs the chaos runs found, each reduced to the smallest reproduction.

Each test reproduces a bug the chaos runs found, at the smallest scale that shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.protocol.messages.fetch import FetchPartition, FetchRequest, FetchTopic
from tests.e2e.conftest import RawClient, create_topic
from tests.harness import BrokerProcess


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    node = BrokerProcess(1, tmp_path)
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        node.terminate()


def test_fetch_error_partition_has_empty_not_null_records(broker: BrokerProcess) -> None:
    with RawClient(broker.kafka_address) as raw:
        create_topic(raw, "t")
        request = FetchRequest(
            max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
            topics=(FetchTopic(topic="t", partitions=(FetchPartition(
                partition=0, fetch_offset=5, current_leader_epoch=-1,
                partition_max_bytes=1 << 20),)),),
        )  # fmt: skip
        partition = raw.request(request, 12).responses[0].partitions[0]
    assert partition.error_code == 1  # OFFSET_OUT_OF_RANGE: the log is empty
    assert partition.records is not None, "null records: librdkafka cannot parse this response"
