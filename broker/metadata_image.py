"""The cluster's metadata as one immutable value, and the pure rules that change it.

Raft group 0 (the metadata group) carries small msgpack records: broker registrations,
topic creation and deletion, partition additions, config changes and producer-id block
allocations. Every node applies the committed records, in order, to a `MetadataImage`
with `apply_record`, which returns a *new* image (the old one is never mutated), so a
Metadata request handler can hold an image for as long as it likes while the next one is
built. Applying is deterministic: the same records give the same image on every node,
which is what makes the metadata group a replicated state machine.

Validation happens twice: the controller checks a request before proposing it (so the
client gets a precise error fast), and `apply_record` checks again at apply time, because
two proposals that were each valid alone may conflict once ordered (two creations of the
same topic). The apply-time verdict is the one returned to the client.

Partition Raft groups get cluster-unique group ids from a counter in the image; ids are
never reused, so messages of a deleted topic's groups can never reach a new topic's group.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from client.protocol.errors import ErrorCode

METADATA_GROUP_ID = 0
PRODUCER_ID_BLOCK_SIZE = 1000
TOPIC_NAME_BYTES_MAX = 249
_TOPIC_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Listener:
    """One advertised Kafka listener of a broker (Kafka's `advertised.listeners` entry)."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    node_id: int
    listeners: tuple[Listener, ...]
    raft_host: str
    raft_port: int
    rack: str | None = None

    def listener(self, name: str | None) -> Listener | None:
        """The listener called `name`, or the first one when `name` is None or unknown."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        return self.listeners[0] if self.listeners else None


@dataclass(frozen=True, slots=True)
class PartitionAssignment:
    partition: int
    replicas: tuple[int, ...]
    group_id: int


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionAssignment, ...]
    configs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    internal: bool = False


@dataclass(frozen=True, slots=True)
class ProducerIdBlock:
    """A range [first_id, first_id + size) of producer ids owned by one broker."""

    node_id: int
    first_id: int
    size: int


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of applying one metadata record: an error code and an optional value."""

    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class MetadataImage:
    """Invariant: every partition's group_id is unique and below `next_group_id`."""

    cluster_id: str = ""
    applied_index: int = 0
    brokers: Mapping[int, BrokerInfo] = field(default_factory=lambda: _EMPTY)
    topics: Mapping[str, TopicInfo] = field(default_factory=lambda: _EMPTY)
    topics_by_id: Mapping[uuid.UUID, str] = field(default_factory=lambda: _EMPTY)
    partitions_by_group: Mapping[int, tuple[str, int]] = field(default_factory=lambda: _EMPTY)
    next_group_id: int = 1
    next_producer_id: int = 0

    def partition(self, topic: str, index: int) -> PartitionAssignment | None:
        info = self.topics.get(topic)
        if info is None or not 0 <= index < len(info.partitions):
            return None
        return info.partitions[index]


def validate_topic_name(name: str) -> str | None:
    """Kafka's rules for a topic name; returns a message when it is invalid."""
    if not name:
        return "topic name is empty"
    if name in (".", ".."):
        return f"topic name cannot be {name!r}"
    if len(name) > TOPIC_NAME_BYTES_MAX:
        return f"topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"
    bad = set(name) - _TOPIC_NAME_CHARS
    if bad:
        return f"topic name {name!r} contains characters other than ASCII alphanumerics, '.', '_' and '-'"
    return None


def assign_replicas(
    broker_ids: Sequence[int],
    partitions: int,
    replication_factor: int,
    start: int,
    first_index: int = 0,
) -> list[tuple[int, ...]]:
    """Round-robin replica assignment, as Kafka's rack-unaware assigner does in spirit.

    The first replica (the preferred leader) of consecutive partitions walks the sorted
    broker list from `start`, so leaders spread evenly; the followers come after it.
    """
    ids = sorted(broker_ids)
    count = len(ids)
    assert 0 < replication_factor <= count, (replication_factor, count)
    result = []
    for p in range(first_index, first_index + partitions):
        head = (start + p) % count
        result.append(tuple(ids[(head + i) % count] for i in range(replication_factor)))
    return result


def apply_record(
    image: MetadataImage, index: int, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    """Apply one committed metadata record at raft index `index`; returns the new image."""
    kind = record.get("type")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        # A record from a newer version: skip it, but keep the index moving.
        return replace(image, applied_index=index), ApplyResult(
            ErrorCode.INVALID_REQUEST, f"unknown record {kind!r}"
        )
    try:
        new_image, result = handler(image, record)
    except (KeyError, TypeError, ValueError) as exc:
        return replace(image, applied_index=index), ApplyResult(
            ErrorCode.INVALID_REQUEST, f"malformed record: {exc}"
        )
    return replace(new_image, applied_index=index), result


def _init_cluster(
    image: MetadataImage, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    if image.cluster_id:
        return image, ApplyResult(value=image.cluster_id)
    return replace(image, cluster_id=str(record["cluster_id"])), ApplyResult(
        value=record["cluster_id"]
    )


def _register_broker(
    image: MetadataImage, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    info = BrokerInfo(
        node_id=int(record["node_id"]),
        listeners=tuple(Listener(str(n), str(h), int(p)) for n, h, p in record["listeners"]),
        raft_host=str(record["raft"][0]),
        raft_port=int(record["raft"][1]),
        rack=record.get("rack"),
    )
    if image.brokers.get(info.node_id) == info:
        return image, ApplyResult()
    brokers = dict(image.brokers)
    brokers[info.node_id] = info
    return replace(image, brokers=MappingProxyType(brokers)), ApplyResult()


def _create_topic(
    image: MetadataImage, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    name = str(record["name"])
    if name in image.topics:
        return image, ApplyResult(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
    problem = validate_topic_name(name)
    if problem:
        return image, ApplyResult(ErrorCode.INVALID_TOPIC, problem)
    topic_id = uuid.UUID(bytes=bytes(record["topic_id"]))
    group_id = image.next_group_id
    partitions = []
    for index, replicas in enumerate(record["partitions"]):
        partitions.append(PartitionAssignment(index, tuple(int(r) for r in replicas), group_id))
        group_id += 1
    info = TopicInfo(
        name=name,
        topic_id=topic_id,
        partitions=tuple(partitions),
        configs=MappingProxyType(
            {str(k): str(v) for k, v in dict(record.get("configs") or {}).items()}
        ),
        internal=bool(record.get("internal", False)),
    )
    return _with_topic(image, info, group_id), ApplyResult(value=info)


def _with_topic(image: MetadataImage, info: TopicInfo, next_group_id: int) -> MetadataImage:
    topics = dict(image.topics)
    topics[info.name] = info
    by_id = dict(image.topics_by_id)
    by_id[info.topic_id] = info.name
    groups = dict(image.partitions_by_group)
    for p in info.partitions:
        groups[p.group_id] = (info.name, p.partition)
    return replace(
        image,
        topics=MappingProxyType(topics),
        topics_by_id=MappingProxyType(by_id),
        partitions_by_group=MappingProxyType(groups),
        next_group_id=next_group_id,
    )


def _delete_topic(
    image: MetadataImage, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    name = str(record["name"])
    info = image.topics.get(name)
    if info is None:
        return image, ApplyResult(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
        )
    topics = dict(image.topics)
    del topics[name]
    by_id = dict(image.topics_by_id)
    by_id.pop(info.topic_id, None)
    groups = dict(image.partitions_by_group)
    for p in info.partitions:
        groups.pop(p.group_id, None)
    new_image = replace(
        image,
        topics=MappingProxyType(topics),
        topics_by_id=MappingProxyType(by_id),
        partitions_by_group=MappingProxyType(groups),
    )
    return new_image, ApplyResult(value=info)


def _create_partitions(
    image: MetadataImage, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    name = str(record["name"])
    info = image.topics.get(name)
    if info is None:
        return image, ApplyResult(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
        )
    if int(record["count"]) <= len(info.partitions):
        return image, ApplyResult(
            ErrorCode.INVALID_PARTITIONS,
            f"topic {name!r} already has {len(info.partitions)} partitions",
        )
    partitions = list(info.partitions)
    group_id = image.next_group_id
    for replicas in record["new_partitions"]:
        partitions.append(
            PartitionAssignment(len(partitions), tuple(int(r) for r in replicas), group_id)
        )
        group_id += 1
    if len(partitions) != int(record["count"]):
        return image, ApplyResult(
            ErrorCode.INVALID_REQUEST, "partition count and assignments disagree"
        )
    new_info = replace(info, partitions=tuple(partitions))
    return _with_topic(image, new_info, group_id), ApplyResult(value=new_info)


def _alter_configs(
    image: MetadataImage, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    name = str(record["name"])
    info = image.topics.get(name)
    if info is None:
        return image, ApplyResult(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
        )
    configs = dict(info.configs)
    for key, value in dict(record["configs"]).items():
        if value is None:
            configs.pop(str(key), None)
        else:
            configs[str(key)] = str(value)
    new_info = replace(info, configs=MappingProxyType(configs))
    return _with_topic(image, new_info, image.next_group_id), ApplyResult(value=new_info)


def _alloc_producer_ids(
    image: MetadataImage, record: Mapping[str, Any]
) -> tuple[MetadataImage, ApplyResult]:
    size = int(record.get("size", PRODUCER_ID_BLOCK_SIZE))
    if not 0 < size <= 1_000_000:
        return image, ApplyResult(ErrorCode.INVALID_REQUEST, f"bad producer id block size {size}")
    block = ProducerIdBlock(int(record["node_id"]), image.next_producer_id, size)
    return replace(image, next_producer_id=image.next_producer_id + size), ApplyResult(value=block)


_HANDLERS = {
    "init_cluster": _init_cluster,
    "register_broker": _register_broker,
    "create_topic": _create_topic,
    "delete_topic": _delete_topic,
    "create_partitions": _create_partitions,
    "alter_configs": _alter_configs,
    "alloc_producer_ids": _alloc_producer_ids,
}
