"""The metadata state machine: deterministic, immutable, validated again at apply time."""

from __future__ import annotations

import uuid

from broker.metadata_image import (
    MetadataImage,
    apply_record,
    assign_replicas,
    validate_topic_name,
)
from client.protocol.errors import ErrorCode


def _create(name: str, partitions: list[list[int]]) -> dict[str, object]:
    return {
        "type": "create_topic",
        "name": name,
        "topic_id": uuid.uuid4().bytes,
        "partitions": partitions,
    }


def test_create_topic_assigns_unique_group_ids_and_keeps_old_image() -> None:
    empty = MetadataImage()
    image, result = apply_record(empty, 5, _create("orders", [[1, 2, 3], [2, 3, 1]]))
    assert result.error is ErrorCode.NONE
    assert empty.topics == {}
    assert image.applied_index == 5
    groups = [p.group_id for p in image.topics["orders"].partitions]
    assert groups == [1, 2]
    image, _ = apply_record(image, 6, _create("payments", [[3, 1, 2]]))
    assert image.topics["payments"].partitions[0].group_id == 3
    assert image.partitions_by_group[3] == ("payments", 0)


def test_duplicate_creation_is_rejected_at_apply_time() -> None:
    image, _ = apply_record(MetadataImage(), 1, _create("t", [[1]]))
    again, result = apply_record(image, 2, _create("t", [[1]]))
    assert result.error is ErrorCode.TOPIC_ALREADY_EXISTS
    assert again.topics["t"] == image.topics["t"]
    assert again.applied_index == 2


def test_deleted_topic_group_ids_are_never_reused() -> None:
    image, _ = apply_record(MetadataImage(), 1, _create("t", [[1], [1]]))
    image, result = apply_record(image, 2, {"type": "delete_topic", "name": "t"})
    assert result.error is ErrorCode.NONE and "t" not in image.topics
    assert image.partitions_by_group == {}
    image, _ = apply_record(image, 3, _create("t", [[1]]))
    assert image.topics["t"].partitions[0].group_id == 3


def test_create_partitions_appends() -> None:
    image, _ = apply_record(MetadataImage(), 1, _create("t", [[1]]))
    image, result = apply_record(
        image,
        2,
        {"type": "create_partitions", "name": "t", "count": 3, "new_partitions": [[1], [1]]},
    )
    assert result.error is ErrorCode.NONE
    assert [p.partition for p in image.topics["t"].partitions] == [0, 1, 2]
    _, result = apply_record(
        image, 3, {"type": "create_partitions", "name": "t", "count": 2, "new_partitions": []}
    )
    assert result.error is ErrorCode.INVALID_PARTITIONS


def test_producer_id_blocks_never_overlap() -> None:
    image = MetadataImage()
    blocks = []
    for i in range(3):
        image, result = apply_record(image, i + 1, {"type": "alloc_producer_ids", "node_id": i + 1})
        blocks.append(result.value)
    ranges = [range(b.first_id, b.first_id + b.size) for b in blocks]
    assert all(set(a).isdisjoint(b) for a in ranges for b in ranges if a is not b)


def test_malformed_and_unknown_records_do_not_crash() -> None:
    image, result = apply_record(MetadataImage(), 1, {"type": "from_the_future"})
    assert result.error is ErrorCode.INVALID_REQUEST and image.applied_index == 1
    image, result = apply_record(image, 2, {"type": "create_topic", "name": "x"})
    assert result.error is ErrorCode.INVALID_REQUEST and image.applied_index == 2


def test_register_broker_and_listener_lookup() -> None:
    record = {
        "type": "register_broker",
        "node_id": 2,
        "listeners": [["INTERNAL", "raftka-2", 9092], ["EXTERNAL", "localhost", 19093]],
        "raft": ["raftka-2", 9192],
    }
    image, _ = apply_record(MetadataImage(), 1, record)
    broker = image.brokers[2]
    assert broker.listener("EXTERNAL") is not None and broker.listener("EXTERNAL").port == 19093
    assert broker.listener(None) is not None and broker.listener(None).host == "raftka-2"


def test_topic_name_rules() -> None:
    assert validate_topic_name("orders.v1_x-2") is None
    for bad in ("", ".", "..", "a/b", "é", "x" * 250):
        assert validate_topic_name(bad) is not None


def test_assignment_spreads_leaders() -> None:
    replicas = assign_replicas([3, 1, 2], partitions=6, replication_factor=3, start=0)
    leaders = [r[0] for r in replicas]
    assert sorted(leaders) == [1, 1, 2, 2, 3, 3]
    assert all(len(set(r)) == 3 for r in replicas)
