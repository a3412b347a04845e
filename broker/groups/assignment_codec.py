"""The consumer protocol's member metadata and assignment bytes, decoded for people.

Why this module exists: to the coordinator, JoinGroup metadata and SyncGroup assignments
are opaque bytes, and it forwards them untouched. DescribeGroups shows them as bytes too;
but the status page, the command line and logs want "member X owns t-0, t-3". Groups with
protocol type "consumer" use Kafka's ConsumerProtocolSubscription / Assignment schemas
(versions 0-3, not flexible), which this module reads and writes.

Layout (every value big-endian, after an int16 version):

    Subscription: topics [string], user_data bytes?, owned_partitions (v1+)
                  [topic string, partitions [int32]], generation_id int32 (v2+),
                  rack_id string? (v3+)
    Assignment:   assigned_partitions [topic string, partitions [int32]], user_data bytes?

Kafka reads a newer version with the newest schema it knows and ignores what follows
(later versions only append fields); we do the same, so a future client does not break
the status page. Decoding never trusts a length: bad bytes raise `BadConsumerProtocol`,
and the `*_or_none` helpers turn that into None for display code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from broker.groups.binary_reader import BinaryReader

SCHEMA_VERSION_MAX = 3

TopicPartitions = tuple[tuple[str, tuple[int, ...]], ...]


class BadConsumerProtocol(ValueError):
    """Bytes that are not a consumer-protocol subscription or assignment."""


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: tuple[str, ...]
    user_data: bytes | None = None
    owned_partitions: TopicPartitions = ()
    generation_id: int = -1
    rack_id: str | None = None
    version: int = SCHEMA_VERSION_MAX


@dataclass(frozen=True, slots=True)
class Assignment:
    partitions: TopicPartitions
    user_data: bytes | None = None
    version: int = SCHEMA_VERSION_MAX


class _Reader(BinaryReader):
    __slots__ = ()
    error = BadConsumerProtocol

    def count(self) -> int:
        n = self.i32()
        if n < -1 or n > len(self._buf):  # each element takes at least one byte
            raise BadConsumerProtocol(f"bad array length {n}")
        return max(n, 0)

    def string_or_none(self) -> str | None:
        n = self.i16()
        if n == -1:
            return None
        try:
            return self._take(n).decode()
        except UnicodeDecodeError as exc:
            raise BadConsumerProtocol("invalid UTF-8") from exc

    def string(self) -> str:
        return self.string_or_none() or ""

    def bytes_or_none(self) -> bytes | None:
        n = self.i32()
        return None if n == -1 else self._take(n)

    def topic_partitions(self) -> TopicPartitions:
        out = []
        for _ in range(self.count()):
            topic = self.string()
            out.append((topic, tuple(self.i32() for _ in range(self.count()))))
        return tuple(out)


def _w_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out += struct.pack(">h", -1)
    else:
        raw = value.encode()
        out += struct.pack(">h", len(raw)) + raw


def _w_bytes(out: bytearray, value: bytes | None) -> None:
    if value is None:
        out += struct.pack(">i", -1)
    else:
        out += struct.pack(">i", len(value)) + value


def _w_topic_partitions(out: bytearray, value: TopicPartitions) -> None:
    out += struct.pack(">i", len(value))
    for topic, partitions in value:
        _w_string(out, topic)
        out += struct.pack(f">i{len(partitions)}i", len(partitions), *partitions)


def encode_subscription(sub: Subscription) -> bytes:
    assert 0 <= sub.version <= SCHEMA_VERSION_MAX, sub.version
    out = bytearray(struct.pack(">hi", sub.version, len(sub.topics)))
    for topic in sub.topics:
        _w_string(out, topic)
    _w_bytes(out, sub.user_data)
    if sub.version >= 1:
        _w_topic_partitions(out, sub.owned_partitions)
    if sub.version >= 2:
        out += struct.pack(">i", sub.generation_id)
    if sub.version >= 3:
        _w_string(out, sub.rack_id)
    return bytes(out)


def decode_subscription(raw: bytes) -> Subscription:
    r = _Reader(raw)
    version = r.i16()
    if version < 0:
        raise BadConsumerProtocol(f"negative version {version}")
    schema = min(version, SCHEMA_VERSION_MAX)
    topics = tuple(r.string() for _ in range(r.count()))
    user_data = r.bytes_or_none()
    owned = r.topic_partitions() if schema >= 1 else ()
    generation_id = r.i32() if schema >= 2 else -1
    rack_id = r.string_or_none() if schema >= 3 else None
    return Subscription(topics, user_data, owned, generation_id, rack_id, version)


def encode_assignment(assignment: Assignment) -> bytes:
    assert 0 <= assignment.version <= SCHEMA_VERSION_MAX, assignment.version
    out = bytearray(struct.pack(">h", assignment.version))
    _w_topic_partitions(out, assignment.partitions)
    _w_bytes(out, assignment.user_data)
    return bytes(out)


def decode_assignment(raw: bytes) -> Assignment:
    r = _Reader(raw)
    version = r.i16()
    if version < 0:
        raise BadConsumerProtocol(f"negative version {version}")
    partitions = r.topic_partitions()
    user_data = r.bytes_or_none()
    return Assignment(partitions, user_data, version)


def decode_subscription_or_none(raw: bytes) -> Subscription | None:
    """For display: None when the bytes are empty or not the consumer protocol."""
    try:
        return decode_subscription(raw) if raw else None
    except BadConsumerProtocol:
        return None


def decode_assignment_or_none(raw: bytes) -> Assignment | None:
    """For display: None when the bytes are empty or not the consumer protocol."""
    try:
        return decode_assignment(raw) if raw else None
    except BadConsumerProtocol:
        return None
