"""Consumer-protocol subscription/assignment bytes, checked against kafka-python's encoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from broker.groups.assignment_codec import (
    Assignment,
    BadConsumerProtocol,
    Subscription,
    decode_assignment,
    decode_assignment_or_none,
    decode_subscription,
    decode_subscription_or_none,
    encode_assignment,
    encode_subscription,
)

topics = st.text(min_size=1, max_size=6)
topic_partitions = st.lists(
    st.tuples(topics, st.lists(st.integers(0, 2**31 - 1), max_size=4).map(tuple)), max_size=3
).map(tuple)


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_subscription_matches_kafka_python(version: int) -> None:
    theirs = ConsumerProtocolSubscription(
        version=version,
        topics=["a", "b"],
        user_data=b"ud",
        owned_partitions=[("a", [0, 1])],
        generation_id=5,
        rack_id="r1",
    ).encode()
    ours = decode_subscription(theirs)
    assert ours.topics == ("a", "b") and ours.user_data == b"ud" and ours.version == version
    assert ours.owned_partitions == ((("a", (0, 1)),) if version >= 1 else ())
    assert ours.generation_id == (5 if version >= 2 else -1)
    assert ours.rack_id == ("r1" if version >= 3 else None)
    assert encode_subscription(ours) == theirs


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_assignment_matches_kafka_python(version: int) -> None:
    theirs = ConsumerProtocolAssignment(
        version=version, assigned_partitions=[("t", [0, 2]), ("u", [1])], user_data=None
    ).encode()
    ours = decode_assignment(theirs)
    assert ours == Assignment((("t", (0, 2)), ("u", (1,))), None, version)
    assert encode_assignment(ours) == theirs


def test_newer_version_is_read_with_the_newest_known_schema() -> None:
    raw = encode_subscription(Subscription(("a",), None, (), 7, "rack", 3))
    future = b"\x00\x04" + raw[2:] + b"\x00\x00\x00\x09"  # v4 with a field we do not know
    sub = decode_subscription(future)
    assert (sub.version, sub.topics, sub.generation_id, sub.rack_id) == (4, ("a",), 7, "rack")


def test_garbage_is_rejected_and_display_helpers_return_none() -> None:
    with pytest.raises(BadConsumerProtocol):
        decode_assignment(b"\x00\x00\x7f\xff\xff\xff")
    assert decode_assignment_or_none(b"") is None
    assert decode_subscription_or_none(b"\x00") is None


@settings(max_examples=50, deadline=None)
@given(
    st.lists(topics, max_size=4).map(tuple),
    st.none() | st.binary(max_size=8),
    topic_partitions,
    st.integers(-1, 2**31 - 1),
    st.none() | topics,
)
def test_subscription_round_trip_v3(
    ts: tuple[str, ...],
    user_data: bytes | None,
    owned: tuple[tuple[str, tuple[int, ...]], ...],
    generation: int,
    rack: str | None,
) -> None:
    sub = Subscription(ts, user_data, owned, generation, rack, 3)
    assert decode_subscription(encode_subscription(sub)) == sub
