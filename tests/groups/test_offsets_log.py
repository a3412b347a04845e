"""Records of __consumer_offsets: exact bytes, round trips, replay, compaction, routing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.groups.offsets_log import (
    CorruptGroupRecord,
    GroupKey,
    GroupSnapshot,
    OffsetAndMetadata,
    OffsetKey,
    PersistedMember,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_group_value,
    encode_offset_key,
    encode_offset_value,
    group_record,
    java_string_hashcode,
    live_records,
    offset_record,
    partition_for_group,
    replay,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 97),
        ("abc", 96354),
        ("Aa", 2112),
        ("BB", 2112),
        ("hello", 99162322),
        ("Hello World", -862545276),
        ("polygenelubricants", -(2**31)),  # Integer.MIN_VALUE
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # a surrogate pair: two UTF-16 code units
    ],
)
def test_java_string_hashcode_vectors(text: str, expected: int) -> None:
    assert java_string_hashcode(text) == expected


def test_partition_for_group_matches_kafka_utils_abs() -> None:
    assert partition_for_group("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) == 0
    assert partition_for_group("Hello World", 50) == (-862545276 & 0x7FFFFFFF) % 50
    assert partition_for_group("hello", 50) == 99162322 % 50
    assert partition_for_group("anything", 1) == 0


def test_offset_key_and_value_bytes_are_kafkas_layout() -> None:
    key = encode_offset_key("g", "t", 3)
    assert key == struct.pack(">hh1sh1si", 1, 1, b"g", 1, b"t", 3)
    value = encode_offset_value(OffsetAndMetadata(42, 7, "m", 1000))
    assert value == struct.pack(">hqih1sq", 3, 42, 7, 1, b"m", 1000)
    assert decode_key(key) == OffsetKey("g", "t", 3)
    assert decode_offset_value(value) == OffsetAndMetadata(42, 7, "m", 1000)


def test_old_offset_value_versions_decode() -> None:
    v1 = struct.pack(">hqh2sqq", 1, 5, 2, b"md", 10, 99)
    assert decode_offset_value(v1) == OffsetAndMetadata(5, -1, "md", 10, 99)
    v0_null_metadata = struct.pack(">hqhq", 0, 5, -1, 10)
    assert decode_offset_value(v0_null_metadata) == OffsetAndMetadata(5, -1, "", 10)


def test_truncated_or_unknown_records_are_rejected() -> None:
    with pytest.raises(CorruptGroupRecord):
        decode_key(encode_offset_key("g", "t", 3)[:-1])
    with pytest.raises(CorruptGroupRecord):
        decode_key(struct.pack(">hh1s", 9, 1, b"g"))
    with pytest.raises(CorruptGroupRecord):
        decode_offset_value(struct.pack(">hq", 3, 1))


names = st.text(max_size=8)
members = st.builds(
    PersistedMember,
    names,
    st.none() | names,
    names,
    names,
    st.integers(-1, 2**31 - 1),
    st.integers(0, 2**31 - 1),
    st.binary(max_size=16),
    st.binary(max_size=16),
)
snapshots = st.builds(
    GroupSnapshot,
    names,
    st.integers(-1, 2**31 - 1),
    st.none() | names,
    st.none() | names,
    st.integers(-1, 2**62),
    st.lists(members, max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(snapshots)
def test_group_value_round_trip(snap: GroupSnapshot) -> None:
    assert decode_group_value(encode_group_value(snap)) == snap


@settings(max_examples=60, deadline=None)
@given(st.integers(-1, 2**62), st.integers(-1, 2**31 - 1), names, st.integers(-1, 2**62))
def test_offset_value_round_trip(offset: int, epoch: int, metadata: str, ts: int) -> None:
    o = OffsetAndMetadata(offset, epoch, metadata, ts)
    assert decode_offset_value(encode_offset_value(o)) == o


def test_group_key() -> None:
    key, value = group_record("grp", None)
    assert value is None
    assert decode_key(key) == GroupKey("grp")


def _snap(generation: int) -> GroupSnapshot:
    return GroupSnapshot("consumer", generation, "range", "m", 5, ())


def test_replay_last_value_wins_and_tombstones_delete() -> None:
    records = [
        offset_record("g", "t", 0, OffsetAndMetadata(1)),
        offset_record("g", "t", 1, OffsetAndMetadata(10)),
        group_record("g", _snap(1)),
        offset_record("g", "t", 0, OffsetAndMetadata(2)),
        offset_record("g", "t", 1, None),
        group_record("g", _snap(2)),
        group_record("h", _snap(1)),
        group_record("h", None),
    ]
    r = replay(records)
    assert r.groups == {"g": _snap(2)}
    assert r.offsets == {"g": {("t", 0): OffsetAndMetadata(2)}}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["g", "h"]),
            st.integers(0, 2),
            st.none() | st.integers(0, 100),
        ),
        max_size=30,
    )
)
def test_compaction_keeps_exactly_the_live_set(ops: list[tuple[str, int, int | None]]) -> None:
    records = [
        offset_record(g, "t", p, None if o is None else OffsetAndMetadata(o)) for g, p, o in ops
    ]
    compacted = live_records(records)
    assert replay(compacted) == replay(records)
    assert all(v is not None for _, v in compacted)
    assert len({k for k, _ in compacted}) == len(compacted)
    expected_live: dict[tuple[str, int], int | None] = {}
    for g, p, o in ops:
        expected_live[(g, p)] = o
    assert len(compacted) == sum(1 for o in expected_live.values() if o is not None)
