"""ClusterMetadata in the pure style: feed responses, check lookups and listener calls."""

from __future__ import annotations

import uuid

from client.cluster import ClusterMetadata, MetadataChange
from client.protocol.messages.metadata import (
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)
from client.structs import BrokerMetadata, TopicPartition

_Broker = MetadataResponseBroker
_Partition = MetadataResponsePartition
_Topic = MetadataResponseTopic
_Response = MetadataResponse


BROKERS = tuple(_Broker(node_id=i, host=f"h{i}", port=9090 + i) for i in (1, 2, 3))


def topic(name: str, leaders: list[int], epoch: int = 0, **kw: object) -> _Topic:
    parts = tuple(
        _Partition(partition_index=i, leader_id=leader, leader_epoch=epoch, replica_nodes=(leader,))
        for i, leader in enumerate(leaders)
    )
    return _Topic(name=name, partitions=parts, **kw)  # type: ignore[arg-type]


def response(*topics: _Topic, brokers: tuple[_Broker, ...] = BROKERS) -> _Response:
    return _Response(brokers=brokers, cluster_id="c1", controller_id=2, topics=topics)


def test_bootstrap_brokers_have_negative_ids_until_first_response() -> None:
    cm = ClusterMetadata([("a", 1), ("b", 2)])
    assert cm.brokers() == (BrokerMetadata(-1, "a", 1), BrokerMetadata(-2, "b", 2))
    assert not cm.bootstrapped
    cm.update(response(), now_ms=10)
    assert cm.bootstrapped
    assert {b.node_id for b in cm.brokers()} == {1, 2, 3}
    assert cm.broker(2) == BrokerMetadata(2, "h2", 9092)
    assert cm.controller_id == 2 and cm.cluster_id == "c1"


def test_empty_broker_list_is_ignored() -> None:
    cm = ClusterMetadata([("a", 1)])
    change = cm.update(_Response(topics=(topic("t", [1]),)), now_ms=5)
    assert not change.accepted
    assert cm.version == 0 and cm.partitions_for("t") is None
    assert cm.brokers() == (BrokerMetadata(-1, "a", 1),)


def test_partitions_leaders_and_reverse_index() -> None:
    cm = ClusterMetadata()
    cm.update(response(topic("t", [1, 2, 1, -1], epoch=4)), now_ms=0)
    assert cm.partitions_for("t") == (0, 1, 2, 3)
    assert cm.available_partitions_for("t") == (0, 1, 2)
    assert cm.leader_for(TopicPartition("t", 1)) == 2
    assert cm.leader_for(TopicPartition("t", 3)) == -1
    assert cm.leader_for(TopicPartition("nope", 0)) == -1
    assert cm.leader_epoch_for(TopicPartition("t", 0)) == 4
    assert cm.partitions_for_node(1) == {TopicPartition("t", 0), TopicPartition("t", 2)}
    assert cm.partitions_for_node(3) == frozenset()


def test_internal_unauthorized_and_errored_topics() -> None:
    cm = ClusterMetadata()
    cm.update(
        response(
            topic("__consumer_offsets", [1], is_internal=True),
            topic("t", [1]),
            _Topic(error_code=29, name="secret"),
            _Topic(error_code=3, name="missing"),
        ),
        now_ms=0,
    )
    assert cm.internal_topics == {"__consumer_offsets"}
    assert cm.topics(exclude_internal=True) == {"t"}
    assert cm.unauthorized_topics == {"secret"}
    assert cm.topic_error("missing") == 3
    assert cm.partitions_for("missing") is None


def test_listeners_are_told_what_changed() -> None:
    cm = ClusterMetadata()
    seen: list[MetadataChange] = []
    cm.add_listener(lambda _cm, change: seen.append(change))
    cm.update(response(topic("a", [1, 2]), topic("b", [3])), now_ms=0)
    assert seen[-1].topics_added == {"a", "b"} and seen[-1].brokers_changed
    cm.update(response(topic("a", [1, 3]), topic("c", [1])), now_ms=1)
    last = seen[-1]
    assert last.topics_added == {"c"}
    assert last.topics_removed == {"b"}
    assert last.leaders_moved == {TopicPartition("a", 1)}
    assert not last.brokers_changed
    cm.update(response(topic("a", [1, 3]), topic("c", [1])), now_ms=2)
    assert seen[-1].empty


def test_failing_listener_does_not_block_others() -> None:
    cm = ClusterMetadata()
    calls: list[int] = []

    def bad(_cm: ClusterMetadata, _c: MetadataChange) -> None:
        raise RuntimeError("boom")

    cm.add_listener(bad)
    cm.add_listener(lambda _cm, _c: calls.append(1))
    cm.update(response(), now_ms=0)
    assert calls == [1]


def test_partial_update_keeps_topics_not_requested() -> None:
    cm = ClusterMetadata()
    cm.update(response(topic("a", [1]), topic("b", [2])), now_ms=0)
    cm.update(response(topic("b", [3, 3])), now_ms=1, topics_requested=["b", "gone"])
    assert cm.partitions_for("a") == (0,)
    assert cm.partitions_for("b") == (0, 1)
    assert cm.leader_for(TopicPartition("b", 0)) == 3
    # A full update drops what the response does not list.
    cm.update(response(topic("b", [3, 3])), now_ms=2)
    assert cm.partitions_for("a") is None


def test_stale_leader_epoch_from_lagging_broker_is_ignored() -> None:
    cm = ClusterMetadata()
    cm.update(response(topic("t", [2], epoch=7)), now_ms=0)
    cm.update(response(topic("t", [1], epoch=6)), now_ms=1)
    assert cm.leader_for(TopicPartition("t", 0)) == 2
    cm.update(response(topic("t", [1], epoch=8)), now_ms=2)
    assert cm.leader_for(TopicPartition("t", 0)) == 1


def test_leader_hint_applies_immediately_and_only_forward() -> None:
    cm = ClusterMetadata()
    cm.update(response(topic("t", [1, 1], epoch=3)), now_ms=0)
    seen: list[MetadataChange] = []
    cm.add_listener(lambda _cm, change: seen.append(change))
    tp = TopicPartition("t", 0)
    assert cm.apply_leader_hint(tp, 2, 4)
    assert cm.leader_for(tp) == 2 and cm.leader_epoch_for(tp) == 4
    assert tp in cm.partitions_for_node(2) and tp not in cm.partitions_for_node(1)
    assert seen[-1].leaders_moved == {tp}
    assert not cm.apply_leader_hint(tp, 1, 3)  # older epoch
    assert not cm.apply_leader_hint(tp, 2, 4)  # nothing new
    assert cm.leader_for(tp) == 2


def test_leader_hint_can_bring_a_new_endpoint() -> None:
    cm = ClusterMetadata()
    cm.update(response(topic("t", [1])), now_ms=0)
    tp = TopicPartition("t", 0)
    assert cm.apply_leader_hint(tp, 9, 1, endpoints=[BrokerMetadata(9, "h9", 9099)])
    assert cm.broker(9) == BrokerMetadata(9, "h9", 9099)


def test_mark_leader_unknown() -> None:
    cm = ClusterMetadata()
    cm.update(response(topic("t", [1, 2])), now_ms=0)
    tp = TopicPartition("t", 0)
    cm.mark_leader_unknown(tp)
    assert cm.leader_for(tp) == -1
    assert cm.available_partitions_for("t") == (1,)
    assert cm.partitions_for("t") == (0, 1)


def test_snapshot_swap_leaves_old_reads_consistent() -> None:
    cm = ClusterMetadata()
    cm.update(response(topic("t", [1])), now_ms=0)
    before = cm.partitions_for_node(1)
    cm.update(response(topic("t", [2])), now_ms=1)
    assert before == {TopicPartition("t", 0)}  # the old frozenset was not mutated
    assert cm.partitions_for_node(1) == frozenset()


def test_coordinators_by_type_and_key() -> None:
    cm = ClusterMetadata()
    cm.update(response(), now_ms=0)
    b = BrokerMetadata(7, "c", 1)
    cm.add_coordinator(0, "g1", b)
    assert cm.coordinator(0, "g1") == b
    assert cm.coordinator(1, "g1") is None
    assert cm.broker(7) == b
    cm.remove_coordinator(0, "g1")
    assert cm.coordinator(0, "g1") is None


def test_staleness_uses_passed_time() -> None:
    cm = ClusterMetadata()
    assert cm.is_stale(0, 1000)
    cm.update(response(), now_ms=500)
    assert not cm.is_stale(1499, 1000)
    assert cm.is_stale(1500, 1000)


def test_decoded_wire_response_of_any_version_feeds_the_store() -> None:
    tid = uuid.UUID(int=42)
    wire = response(
        _Topic(
            name="t",
            topic_id=tid,
            partitions=(_Partition(partition_index=0, leader_id=3, leader_epoch=9),),
        )
    )
    for version in (1, 7, 12):
        decoded = MetadataResponse.decode(wire.encode(version), version)
        cm = ClusterMetadata()
        cm.update(decoded, now_ms=0)
        assert cm.leader_for(TopicPartition("t", 0)) == 3
        assert cm.leader_epoch_for(TopicPartition("t", 0)) == (9 if version >= 7 else -1)
        assert cm.topic_id("t") == (tid if version >= 10 else None)


def test_leader_hint_from_a_response_uses_its_node_endpoints() -> None:
    """KIP-951 as Produce/Fetch responses carry it: CurrentLeader plus NodeEndpoints."""
    from client.protocol.messages.produce import LeaderIdAndEpoch, NodeEndpoint

    cm = ClusterMetadata()
    cm.update(response(topic("t", [1])), now_ms=0)
    tp = TopicPartition("t", 0)
    # A leader nobody knows the address of: unusable, the caller must refresh metadata.
    assert not cm.apply_leader_hint_from(tp, LeaderIdAndEpoch(leader_id=7, leader_epoch=3), ())
    assert cm.leader_for(tp) == 1
    endpoints = [
        NodeEndpoint(node_id=6, host="h6", port=96),
        NodeEndpoint(node_id=7, host="h7", port=97, rack="r1"),
    ]
    assert cm.apply_leader_hint_from(tp, LeaderIdAndEpoch(leader_id=7, leader_epoch=3), endpoints)
    assert (cm.leader_for(tp), cm.leader_epoch_for(tp)) == (7, 3)
    assert cm.broker(7) == BrokerMetadata(7, "h7", 97, "r1")
    assert cm.broker(6) is None  # only the hinted leader's endpoint is taken
    assert not cm.apply_leader_hint_from(tp, LeaderIdAndEpoch(), endpoints)
    assert not cm.apply_leader_hint_from(tp, None, endpoints)
