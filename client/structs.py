"""Plain named data the client hands to and receives from applications.

Frozen slotted dataclasses, except the two types built or hashed once per record
on the hot path (TopicPartition, ConsumerRecord): those are NamedTuples, still
immutable and named, but built, hashed and compared in C.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# Kafka's "no leader" and "no epoch" sentinels, used throughout the protocol.
NO_LEADER = -1
NO_EPOCH = -1


class TopicPartition(NamedTuple):
    """A partition of a topic: the unit of ordering, leadership and offsets.

    A NamedTuple because it is a dict key on every hot path (accumulator, fetcher,
    metadata): tuple hashing and equality run in C, a dataclass's run in Python.
    """

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    """A broker as Metadata reports it (or a bootstrap address, with a negative id)."""

    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    """Leadership and replication facts of one partition, from one Metadata response."""

    topic: str
    partition: int
    leader_id: int
    leader_epoch: int = NO_EPOCH
    replica_nodes: tuple[int, ...] = ()
    isr_nodes: tuple[int, ...] = ()
    offline_replicas: tuple[int, ...] = ()
    error_code: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record landed (the result of Producer.send's future)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    serialized_key_size: int = -1
    serialized_value_size: int = -1

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class ConsumerRecord(NamedTuple):
    """One record fetched by the consumer.

    A NamedTuple, not a dataclass, on purpose: the consumer builds one per record and a
    tuple is built by one C call (about 8x cheaper than a frozen dataclass's __init__).
    It is still immutable and its fields are named.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_type: int = 0  # 0 = CreateTime, 1 = LogAppendTime
    leader_epoch: int = NO_EPOCH

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed offset: the next offset to consume, plus free-form metadata."""

    offset: int
    metadata: str = ""
    leader_epoch: int = NO_EPOCH


@dataclass(frozen=True, slots=True)
class OffsetAndTimestamp:
    """The answer of a ListOffsets lookup by timestamp."""

    offset: int
    timestamp_ms: int
    leader_epoch: int = NO_EPOCH


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """What AdminClient.describe_topics returns for one topic."""

    name: str
    topic_id: str | None
    is_internal: bool
    partitions: tuple[PartitionMetadata, ...] = field(default_factory=tuple)
