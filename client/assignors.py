"""Partition assignors of the classic consumer group protocol, and the embedded schemas.

The group leader (one of the consumers) receives every member's subscription in
JoinGroup, computes an assignment with the assignor the broker picked, and
hands it back in SyncGroup. The bytes inside those messages are the "consumer
protocol" (ConsumerProtocolSubscription / ConsumerProtocolAssignment in Kafka's
message definitions): versioned, with fields appended over time so that older
readers ignore what they do not know. We write Subscription v1 (owned
partitions, needed by cooperative rebalancing) and Assignment v1, and read any
version.

Assignors (all pure, deterministic in member id order):

- `range`: per topic, members subscribed to it in sorted order get contiguous
  ranges; the first `partitions % members` get one extra (Java's RangeAssignor).
- `roundrobin`: every subscribed partition, sorted, dealt to members in turn,
  skipping members not subscribed to that topic (Java's RoundRobinAssignor).
- `cooperative-sticky`: balanced (sizes differ by at most one for equal
  subscriptions) while keeping each member's owned partitions where possible;
  cooperative (KIP-429): a partition that must move is first left unassigned
  for one round, so its owner revokes it before anyone else gets it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from client.structs import TopicPartition

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: tuple[str, ...]
    user_data: bytes | None = None
    owned_partitions: tuple[TopicPartition, ...] = ()
    generation_id: int = -1
    rack_id: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    partitions: tuple[TopicPartition, ...] = ()
    user_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    subscription: Subscription = field(default_factory=lambda: Subscription(()))


class Assignor(Protocol):
    name: str
    cooperative: bool

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Sequence[Member]
    ) -> dict[str, tuple[TopicPartition, ...]]: ...


# ---- embedded schemas -----------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def i16(self, v: int) -> None:
        self.out += _I16.pack(v)

    def i32(self, v: int) -> None:
        self.out += _I32.pack(v)

    def string(self, s: str | None) -> None:
        if s is None:
            self.i16(-1)
            return
        data = s.encode()
        self.i16(len(data))
        self.out += data

    def bytes_(self, b: bytes | None) -> None:
        if b is None:
            self.i32(-1)
            return
        self.i32(len(b))
        self.out += b

    def partitions(self, tps: Sequence[TopicPartition]) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        self.i32(len(by_topic))
        for topic in sorted(by_topic):
            self.string(topic)
            self.i32(len(by_topic[topic]))
            for p in sorted(by_topic[topic]):
                self.i32(p)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def more(self) -> bool:
        return self.pos < len(self.data)

    def i16(self) -> int:
        (v,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        (v,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def bytes_(self) -> bytes | None:
        n = self.i32()
        if n < 0:
            return None
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def partitions(self) -> tuple[TopicPartition, ...]:
        out: list[TopicPartition] = []
        for _ in range(self.i32()):
            topic = self.string() or ""
            out.extend(TopicPartition(topic, self.i32()) for _ in range(self.i32()))
        return tuple(out)


def encode_subscription(s: Subscription, version: int = 1) -> bytes:
    w = _Writer()
    w.i16(version)
    w.i32(len(s.topics))
    for t in s.topics:
        w.string(t)
    w.bytes_(s.user_data)
    if version >= 1:
        w.partitions(s.owned_partitions)
    if version >= 2:
        w.i32(s.generation_id)
    if version >= 3:
        w.string(s.rack_id)
    return bytes(w.out)


def decode_subscription(data: bytes) -> Subscription:
    """Any version; fields of newer versions than we know are ignored (trailing bytes)."""
    try:
        r = _Reader(data)
        version = r.i16()
        topics = tuple(r.string() or "" for _ in range(r.i32()))
        user_data = r.bytes_()
        owned: tuple[TopicPartition, ...] = ()
        generation_id = -1
        rack_id = None
        if version >= 1 and r.more:
            owned = r.partitions()
        if version >= 2 and r.more:
            generation_id = r.i32()
        if version >= 3 and r.more:
            rack_id = r.string()
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"bad consumer subscription: {e}") from e
    return Subscription(topics, user_data, owned, generation_id, rack_id)


def encode_assignment(a: Assignment, version: int = 1) -> bytes:
    w = _Writer()
    w.i16(version)
    w.partitions(a.partitions)
    w.bytes_(a.user_data)
    return bytes(w.out)


def decode_assignment(data: bytes) -> Assignment:
    if not data:
        return Assignment()
    try:
        r = _Reader(data)
        r.i16()
        partitions = r.partitions()
        user_data = r.bytes_() if r.more else None
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"bad consumer assignment: {e}") from e
    return Assignment(partitions, user_data)


# ---- assignors -----------------------------------------------------------------------------


def _subscribers(members: Sequence[Member], topic: str) -> list[str]:
    return sorted(m.member_id for m in members if topic in m.subscription.topics)


class RangeAssignor:
    name = "range"
    cooperative = False

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Sequence[Member]
    ) -> dict[str, tuple[TopicPartition, ...]]:
        out: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
        for topic in sorted(partitions_per_topic):
            subs = _subscribers(members, topic)
            if not subs:
                continue
            n = partitions_per_topic[topic]
            per, extra = divmod(n, len(subs))
            start = 0
            for i, member_id in enumerate(subs):
                count = per + (1 if i < extra else 0)
                out[member_id].extend(TopicPartition(topic, p) for p in range(start, start + count))
                start += count
        return {m: tuple(tps) for m, tps in out.items()}


class RoundRobinAssignor:
    name = "roundrobin"
    cooperative = False

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Sequence[Member]
    ) -> dict[str, tuple[TopicPartition, ...]]:
        ids = sorted(m.member_id for m in members)
        topics_of = {m.member_id: set(m.subscription.topics) for m in members}
        out: dict[str, list[TopicPartition]] = {m: [] for m in ids}
        if not ids:
            return {}
        i = 0
        for topic in sorted(partitions_per_topic):
            if not any(topic in topics_of[m] for m in ids):
                continue
            for p in range(partitions_per_topic[topic]):
                while topic not in topics_of[ids[i % len(ids)]]:
                    i += 1
                out[ids[i % len(ids)]].append(TopicPartition(topic, p))
                i += 1
        return {m: tuple(tps) for m, tps in out.items()}


class CooperativeStickyAssignor:
    name = "cooperative-sticky"
    cooperative = True

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Sequence[Member]
    ) -> dict[str, tuple[TopicPartition, ...]]:
        target = self.balanced_sticky(partitions_per_topic, members)
        # KIP-429: a partition owned by someone else this round is withheld, so its
        # current owner revokes it first; the follow-up rebalance hands it over.
        owner: dict[TopicPartition, str] = {}
        for m in sorted(members, key=lambda m: m.member_id):
            for tp in m.subscription.owned_partitions:
                owner.setdefault(tp, m.member_id)
        return {
            member_id: tuple(tp for tp in tps if owner.get(tp, member_id) == member_id)
            for member_id, tps in target.items()
        }

    @staticmethod
    def balanced_sticky(
        partitions_per_topic: Mapping[str, int], members: Sequence[Member]
    ) -> dict[str, tuple[TopicPartition, ...]]:
        ids = sorted(m.member_id for m in members)
        if not ids:
            return {}
        by_id = {m.member_id: m for m in members}
        all_tps = [
            TopicPartition(t, p)
            for t in sorted(partitions_per_topic)
            if any(t in m.subscription.topics for m in members)
            for p in range(partitions_per_topic[t])
        ]
        quota, extra = divmod(len(all_tps), len(ids))
        out: dict[str, list[TopicPartition]] = {m: [] for m in ids}
        taken: set[TopicPartition] = set()
        valid = set(all_tps)
        # Keep owned partitions, up to each member's quota (the first `extra` may keep one more).
        big_slots = extra
        for member_id in ids:
            sub = by_id[member_id].subscription
            keep = [
                tp
                for tp in sorted(sub.owned_partitions)
                if tp in valid and tp not in taken and tp.topic in sub.topics
            ]
            limit = quota + (1 if big_slots and len(keep) > quota else 0)
            if limit > quota:
                big_slots -= 1
            keep = keep[:limit]
            out[member_id].extend(keep)
            taken.update(keep)
        # Hand out the rest to the least loaded subscribed member.
        for tp in all_tps:
            if tp in taken:
                continue
            candidates = [m for m in ids if tp.topic in by_id[m].subscription.topics]
            best = min(candidates, key=lambda m: (len(out[m]), m))
            out[best].append(tp)
        return {m: tuple(sorted(tps)) for m, tps in out.items()}


ASSIGNORS: dict[str, type[RangeAssignor | RoundRobinAssignor | CooperativeStickyAssignor]] = {
    "range": RangeAssignor,
    "roundrobin": RoundRobinAssignor,
    "cooperative-sticky": CooperativeStickyAssignor,
}
