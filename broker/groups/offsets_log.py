"""Records of the internal `__consumer_offsets` topic: their binary form, replay and compaction.

Why this module exists: group metadata and committed offsets are durable only as records
of a Raft-replicated partition of `__consumer_offsets`. A new coordinator rebuilds a
group from nothing but these records, so their encoding must be exact and stable. We use
Kafka's own schemas (the coordinator's `OffsetCommitKey/Value` and `GroupMetadataKey/Value`
definitions), so a partition written by Raftka reads like one written by Kafka:

    key   = int16 key version, then fields
            version 0/1: OffsetCommitKey   (group string, topic string, partition int32)
            version 2:   GroupMetadataKey  (group string)
    value = int16 value version, then fields; `None` (a tombstone) deletes the key
            OffsetCommitValue v3: offset int64, leader_epoch int32, metadata string,
                                  commit_timestamp int64
            GroupMetadataValue v3: protocol_type string, generation int32, protocol string?,
                                  leader string?, current_state_timestamp int64,
                                  members [member_id, group_instance_id?, client_id,
                                  client_host, rebalance_timeout int32, session_timeout int32,
                                  subscription bytes, assignment bytes]

Strings are int16-length-prefixed UTF-8 (-1 for null); bytes are int32-length-prefixed.
We write key v1 / v2 and value v3; we read value versions 0-3 (older Kafka data).

Replay rule (also the compaction rule): the last record of a key wins and a tombstone
deletes the key. `live_records` returns that minimal set so the partition can be
compacted or snapshotted without changing what a replay rebuilds.

Routing: Kafka puts group `g` on partition `abs(g.hashCode()) % partitions`, with Java's
`String.hashCode` over UTF-16 code units and Kafka's `Utils.abs` (which maps
Integer.MIN_VALUE to 0). `partition_for_group` reproduces it exactly so that a cluster of
mixed clients and tools agrees with Kafka about placement.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from broker.groups.binary_reader import BinaryReader

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3
GROUP_VALUE_VERSION = 3

Record = tuple[bytes, bytes | None]


class CorruptGroupRecord(ValueError):
    """A record of `__consumer_offsets` that cannot be decoded (bad bytes or unknown version)."""


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """One committed offset. `expire_timestamp_ms` exists only in records of value v1."""

    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp_ms: int = -1
    expire_timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PersistedMember:
    """A member as stored after a rebalance: enough to serve and describe it after failover."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """The group metadata value: the group as of its last stored generation."""

    protocol_type: str
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    current_state_timestamp_ms: int
    members: tuple[PersistedMember, ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group_id: str


# --- routing -----------------------------------------------------------------------------


def java_string_hashcode(text: str) -> int:
    """Java's `String.hashCode()`: s[0]*31^(n-1) + ... over UTF-16 code units, as int32."""
    units = text.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for_group(group_id: str, partitions: int) -> int:
    """Kafka's `Utils.abs(groupId.hashCode()) % groupMetadataTopicPartitionCount`."""
    assert partitions > 0, partitions
    h = java_string_hashcode(group_id)
    # Utils.abs is `n & 0x7fffffff`, so MIN_VALUE maps to 0 rather than staying negative.
    return (h & 0x7FFFFFFF) % partitions


# --- primitive writers and a bounds-checked reader ---------------------------------------


def _w_str(out: bytearray, value: str | None) -> None:
    if value is None:
        out += struct.pack(">h", -1)
        return
    raw = value.encode()
    assert len(raw) <= 0x7FFF, "string too long for an int16 length"
    out += struct.pack(">h", len(raw))
    out += raw


def _w_bytes(out: bytearray, value: bytes) -> None:
    out += struct.pack(">i", len(value))
    out += value


class _Reader(BinaryReader):
    __slots__ = ()
    error = CorruptGroupRecord

    def str_or_none(self) -> str | None:
        n = self.i16()
        if n == -1:
            return None
        try:
            return self._take(n).decode()
        except UnicodeDecodeError as exc:
            raise CorruptGroupRecord("invalid UTF-8 in a string") from exc

    def str(self) -> str:
        value = self.str_or_none()
        if value is None:
            raise CorruptGroupRecord("null where a string is required")
        return value

    def bytes(self) -> bytes:
        n = self.i32()
        return b"" if n == -1 else self._take(n)

    def done(self) -> bool:
        return self._pos == len(self._buf)


# --- keys --------------------------------------------------------------------------------


def encode_offset_key(group_id: str, topic: str, partition: int) -> bytes:
    out = bytearray(struct.pack(">h", OFFSET_KEY_VERSION))
    _w_str(out, group_id)
    _w_str(out, topic)
    out += struct.pack(">i", partition)
    return bytes(out)


def encode_group_key(group_id: str) -> bytes:
    out = bytearray(struct.pack(">h", GROUP_KEY_VERSION))
    _w_str(out, group_id)
    return bytes(out)


def decode_key(key: bytes) -> OffsetKey | GroupKey:
    r = _Reader(key)
    version = r.i16()
    if version in (0, 1):
        decoded: OffsetKey | GroupKey = OffsetKey(r.str(), r.str(), r.i32())
    elif version == 2:
        decoded = GroupKey(r.str())
    else:
        raise CorruptGroupRecord(f"unknown key version {version}")
    if not r.done():
        raise CorruptGroupRecord("trailing bytes after a key")
    return decoded


# --- values ------------------------------------------------------------------------------


def encode_offset_value(value: OffsetAndMetadata) -> bytes:
    out = bytearray(struct.pack(">hqi", OFFSET_VALUE_VERSION, value.offset, value.leader_epoch))
    _w_str(out, value.metadata)
    out += struct.pack(">q", value.commit_timestamp_ms)
    return bytes(out)


def decode_offset_value(raw: bytes) -> OffsetAndMetadata:
    r = _Reader(raw)
    version = r.i16()
    if not 0 <= version <= 3:
        raise CorruptGroupRecord(f"unknown offset value version {version}")
    offset = r.i64()
    leader_epoch = r.i32() if version >= 3 else -1
    metadata = r.str_or_none() or ""
    commit_ts = r.i64()
    expire_ts = r.i64() if version == 1 else None
    return OffsetAndMetadata(offset, leader_epoch, metadata, commit_ts, expire_ts)


def encode_group_value(snap: GroupSnapshot) -> bytes:
    out = bytearray(struct.pack(">h", GROUP_VALUE_VERSION))
    _w_str(out, snap.protocol_type)
    out += struct.pack(">i", snap.generation_id)
    _w_str(out, snap.protocol_name)
    _w_str(out, snap.leader_id)
    out += struct.pack(">qi", snap.current_state_timestamp_ms, len(snap.members))
    for m in snap.members:
        _w_str(out, m.member_id)
        _w_str(out, m.group_instance_id)
        _w_str(out, m.client_id)
        _w_str(out, m.client_host)
        out += struct.pack(">ii", m.rebalance_timeout_ms, m.session_timeout_ms)
        _w_bytes(out, m.subscription)
        _w_bytes(out, m.assignment)
    return bytes(out)


def decode_group_value(raw: bytes) -> GroupSnapshot:
    r = _Reader(raw)
    version = r.i16()
    if not 0 <= version <= 3:
        raise CorruptGroupRecord(f"unknown group metadata value version {version}")
    protocol_type = r.str()
    generation = r.i32()
    protocol = r.str_or_none()
    leader = r.str_or_none()
    state_ts = r.i64() if version >= 2 else -1
    count = r.i32()
    if count < 0 or count > len(raw):
        raise CorruptGroupRecord(f"bad member count {count}")
    members = tuple(_decode_member(r, version) for _ in range(count))
    return GroupSnapshot(protocol_type, generation, protocol, leader, state_ts, members)


def _decode_member(r: _Reader, version: int) -> PersistedMember:
    member_id = r.str()
    instance_id = r.str_or_none() if version >= 3 else None
    client_id = r.str()
    client_host = r.str()
    rebalance_timeout = r.i32() if version >= 1 else -1
    session_timeout = r.i32()
    if version == 0:
        rebalance_timeout = session_timeout
    subscription = r.bytes()
    assignment = r.bytes()
    return PersistedMember(
        member_id,
        instance_id,
        client_id,
        client_host,
        rebalance_timeout,
        session_timeout,
        subscription,
        assignment,
    )


# --- whole records -----------------------------------------------------------------------


def offset_record(
    group_id: str, topic: str, partition: int, value: OffsetAndMetadata | None
) -> Record:
    """A commit (or, with `value=None`, a deletion) of one partition's offset."""
    key = encode_offset_key(group_id, topic, partition)
    return key, None if value is None else encode_offset_value(value)


def group_record(group_id: str, snap: GroupSnapshot | None) -> Record:
    """The group's metadata (or, with `snap=None`, the group's deletion)."""
    return encode_group_key(group_id), None if snap is None else encode_group_value(snap)


@dataclass(slots=True)
class ReplayedPartition:
    """What the records of one partition say: per group, its metadata and its offsets."""

    groups: dict[str, GroupSnapshot]
    offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]]


def live_records(records: Iterable[Record]) -> list[Record]:
    """The minimal set with the same replay: the last value per key, tombstoned keys dropped.

    Order follows each key's last write, so replaying the result equals replaying the input.
    """
    last: dict[bytes, bytes | None] = {}
    for key, value in records:
        last.pop(key, None)  # re-insert so iteration order is the order of last writes
        last[key] = value
    return [(k, v) for k, v in last.items() if v is not None]


def replay(records: Iterable[Record]) -> ReplayedPartition:
    """Rebuild a partition's groups and offsets. Raises CorruptGroupRecord on bad bytes."""
    out = ReplayedPartition({}, {})
    for key_bytes, value in live_records(records):
        assert value is not None
        key = decode_key(key_bytes)
        if isinstance(key, GroupKey):
            out.groups[key.group_id] = decode_group_value(value)
        else:
            per_group = out.offsets.setdefault(key.group_id, {})
            per_group[(key.topic, key.partition)] = decode_offset_value(value)
    return out
