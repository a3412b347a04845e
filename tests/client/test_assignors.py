"""Assignors and the consumer-protocol bytes, checked against known layouts and invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from client.assignors import (
    Assignment,
    CooperativeStickyAssignor,
    Member,
    RangeAssignor,
    RoundRobinAssignor,
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from client.structs import TopicPartition as TP


def members(
    *specs: tuple[str, tuple[str, ...]], owned: dict[str, list[TP]] | None = None
) -> list[Member]:
    owned = owned or {}
    return [
        Member(mid, Subscription(topics, owned_partitions=tuple(owned.get(mid, ()))))
        for mid, topics in specs
    ]


def test_subscription_round_trip_and_v0_layout() -> None:
    s = Subscription(("a", "b"), b"ud", (TP("a", 1), TP("a", 0)), 5, "r1")
    for version in (1, 2, 3):
        back = decode_subscription(encode_subscription(s, version))
        assert back.topics == s.topics and back.user_data == b"ud"
        assert set(back.owned_partitions) == set(s.owned_partitions)
    v0 = encode_subscription(Subscription(("t",)), version=0)
    assert v0 == b"\x00\x00" + b"\x00\x00\x00\x01" + b"\x00\x01t" + b"\xff\xff\xff\xff"


def test_assignment_bytes_follow_the_consumer_protocol_layout() -> None:
    a = Assignment((TP("t", 0), TP("t", 2)), None)
    assert encode_assignment(a, version=0) == (
        b"\x00\x00"  # version
        + b"\x00\x00\x00\x01"  # one topic
        + b"\x00\x01t"  # topic name
        + b"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02"  # partitions 0 and 2
        + b"\xff\xff\xff\xff"  # null user data
    )
    b = Assignment((TP("t", 0), TP("t", 2), TP("u", 1)), b"x")
    assert decode_assignment(encode_assignment(b)) == b
    assert decode_assignment(b"").partitions == ()


def test_range_matches_java_layout() -> None:
    ms = members(("c0", ("t",)), ("c1", ("t",)), ("c2", ("t",)))
    out = RangeAssignor().assign({"t": 7}, ms)
    assert out["c0"] == (TP("t", 0), TP("t", 1), TP("t", 2))
    assert out["c1"] == (TP("t", 3), TP("t", 4))
    assert out["c2"] == (TP("t", 5), TP("t", 6))


def test_roundrobin_deals_in_turn_and_skips_unsubscribed() -> None:
    ms = members(("a", ("t", "u")), ("b", ("t",)))
    out = RoundRobinAssignor().assign({"t": 3, "u": 2}, ms)
    assert out["a"] == (TP("t", 0), TP("t", 2), TP("u", 0), TP("u", 1))
    assert out["b"] == (TP("t", 1),)


def test_cooperative_sticky_keeps_owned_and_withholds_moves() -> None:
    owned = {"a": [TP("t", p) for p in range(6)]}
    ms = members(("a", ("t",)), ("b", ("t",)), owned=owned)
    assignor = CooperativeStickyAssignor()
    target = assignor.balanced_sticky({"t": 6}, ms)
    assert len(target["a"]) == 3 and len(target["b"]) == 3
    assert set(target["a"]) <= set(owned["a"])
    first = assignor.assign({"t": 6}, ms)
    assert first["a"] == target["a"] and first["b"] == ()  # moved partitions withheld
    # Next round: a revoked what it lost, so b gets it.
    ms2 = members(("a", ("t",)), ("b", ("t",)), owned={"a": list(first["a"])})
    second = assignor.assign({"t": 6}, ms2)
    assert second["a"] == first["a"] and set(second["b"]) == set(target["b"])


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcd"), st.integers(1, 9), min_size=1),
    st.lists(st.sets(st.sampled_from("abcd"), min_size=1), min_size=1, max_size=5),
    st.sampled_from([RangeAssignor, RoundRobinAssignor, CooperativeStickyAssignor]),
)
def test_every_subscribed_partition_assigned_once(
    topics: dict[str, int], subs: list[set[str]], assignor_type: type
) -> None:
    ms = [Member(f"m{i}", Subscription(tuple(sorted(s)))) for i, s in enumerate(subs)]
    out = assignor_type().assign(topics, ms)
    assigned = [tp for tps in out.values() for tp in tps]
    assert len(assigned) == len(set(assigned))
    subscribed = {t for s in subs for t in s}
    expected = {TP(t, p) for t, n in topics.items() if t in subscribed for p in range(n)}
    assert set(assigned) == expected
    for m in ms:
        assert all(tp.topic in m.subscription.topics for tp in out[m.member_id])
    if assignor_type is not RangeAssignor and all(s == subs[0] for s in subs):
        sizes = [len(v) for v in out.values()]
        assert max(sizes) - min(sizes) <= 1
