"""Choosing a partition for a record, compatible with the Java client.

Keyed records: `to_positive(murmur2(key)) % num_partitions`, exactly the Java
client's DefaultPartitioner / BuiltInPartitioner (and librdkafka's
`murmur2_random`), so that an application moving between clients keeps
every key on the same partition. murmur2 here is Austin Appleby's MurmurHash2
with Kafka's seed 0x9747b28c, computed with 32-bit wrap-around arithmetic and
Java's signed result.

Records without a key: sticky partitioning (KIP-480, refined by KIP-794). The
partitioner keeps one "sticky" partition per topic and sends every keyless
record there until about `sticky_bytes` bytes went to it, then picks another
one at random among the partitions that have a leader. Sticking fills batches
(fewer, larger requests) and still spreads load over time. Randomness is
injected (a `random.Random`), so tests are deterministic; nothing here reads
a clock or does I/O.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2: returns the same signed 32-bit int as Java's Utils.murmur2."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    length4 = length >> 2
    if length4:
        for k in struct.unpack_from(f"<{length4}I", data):
            k = (k * _M) & _MASK32
            k ^= k >> 24
            k = (k * _M) & _MASK32
            h = ((h * _M) & _MASK32) ^ k
    tail = length & 3
    base = length & ~3
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Java's Utils.toPositive: clears the sign bit (not abs(), which differs at MIN_VALUE)."""
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition the Java client would choose for `key`."""
    assert num_partitions > 0
    return to_positive(murmur2(key)) % num_partitions


class DefaultPartitioner:
    """murmur2 for keyed records, sticky for keyless ones (KIP-480/KIP-794).

    Invariant: the sticky partition of a topic is always < its partition count at
    the time it was chosen; a shrunk partition list (never happens in Kafka, but
    metadata can be partial) makes us choose again.
    """

    __slots__ = ("_rng", "_sticky", "_sticky_bytes")

    def __init__(self, rng: random.Random, sticky_bytes: int = 16384) -> None:
        self._rng = rng
        self._sticky_bytes = sticky_bytes
        # topic -> [partition, bytes sent to it since it was chosen]
        self._sticky: dict[str, list[int]] = {}

    def partition(
        self,
        topic: str,
        key: bytes | None,
        num_partitions: int,
        available: Sequence[int] = (),
        record_bytes: int = 0,
    ) -> int:
        """Choose a partition; `available` lists partitions that have a leader."""
        if key is not None:
            return partition_for_key(key, num_partitions)
        state = self._sticky.get(topic)
        if (
            state is None
            or state[0] >= num_partitions
            or state[1] >= self._sticky_bytes
            or (available and state[0] not in available)
        ):
            state = [self._choose(num_partitions, available, state[0] if state else -1), 0]
            self._sticky[topic] = state
        state[1] += record_bytes
        return state[0]

    def _choose(self, num_partitions: int, available: Sequence[int], previous: int) -> int:
        candidates: Sequence[int] = available or range(num_partitions)
        if len(candidates) == 1:
            return candidates[0]
        while True:  # bounded in expectation: at least two candidates, one is not `previous`
            choice = candidates[self._rng.randrange(len(candidates))]
            if choice != previous:
                return choice
