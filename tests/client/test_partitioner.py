"""murmur2 must match the Java client bit for bit; sticky partitioning must stick, then move."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from client.partitioner import DefaultPartitioner, murmur2, partition_for_key, to_positive

# Vectors from Apache Kafka's UtilsTest.testMurmur2 (Java's signed 32-bit results).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_java_vectors() -> None:
    for key, expected in JAVA_VECTORS.items():
        assert murmur2(key) == expected, key


def test_to_positive_clears_sign_bit_like_java() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_murmur2_agrees_with_kafka_python(key: bytes) -> None:
    # kafka-python ports the same Java function independently; its result is unsigned-masked.
    assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key) & 0xFFFFFFFF


def test_partition_for_key_uses_positive_modulo() -> None:
    assert partition_for_key(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7
    assert partition_for_key(b"", 3) == to_positive(murmur2(b"")) % 3


def test_keyed_records_ignore_stickiness() -> None:
    p = DefaultPartitioner(random.Random(1))
    assert {p.partition("t", b"abc", 12) for _ in range(5)} == {partition_for_key(b"abc", 12)}


def test_keyless_records_stick_until_sticky_bytes_then_move() -> None:
    p = DefaultPartitioner(random.Random(7), sticky_bytes=300)
    first = p.partition("t", None, 8, record_bytes=100)
    assert p.partition("t", None, 8, record_bytes=100) == first
    assert p.partition("t", None, 8, record_bytes=100) == first
    moved = p.partition("t", None, 8, record_bytes=100)
    assert moved != first


def test_keyless_records_only_go_to_available_partitions() -> None:
    p = DefaultPartitioner(random.Random(3), sticky_bytes=1)
    chosen = {p.partition("t", None, 10, available=(2, 5), record_bytes=1) for _ in range(50)}
    assert chosen == {2, 5}


def test_sticky_state_is_per_topic() -> None:
    p = DefaultPartitioner(random.Random(5), sticky_bytes=10**9)
    a = p.partition("a", None, 1000)
    b = p.partition("b", None, 1000)
    assert p.partition("a", None, 1000) == a
    assert p.partition("b", None, 1000) == b


def test_single_candidate_is_chosen_even_when_full() -> None:
    p = DefaultPartitioner(random.Random(5), sticky_bytes=1)
    assert [p.partition("t", None, 1, record_bytes=5) for _ in range(3)] == [0, 0, 0]
