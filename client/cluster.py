"""ClusterMetadata: what the client knows about the cluster, as a pure store.

Theory of operation. Every Metadata response is turned into a complete, new,
immutable `_Snapshot` (brokers by id, partitions by topic, a reverse index of
partitions by leader node, leader epochs, topic ids, internal / unauthorized
topics, controller and cluster id) *outside* the live object, and then swapped
in with one assignment. Readers on the hot path (the producer choosing a node
for a partition, the fetcher grouping partitions by leader) therefore always
see one consistent picture, with O(1) dict lookups and no locks: this is an
asyncio client, nothing here ever runs concurrently.

The store does no I/O and reads no clock: the caller passes `now_ms`. It holds
no futures either; waiting for a refresh is the refresher's job (client.py).
After a swap the store tells its listeners what changed (topics added or
removed, partitions whose leader moved, brokers changed), so that the producer
can re-route batches and the consumer can re-check its subscription.

Leader hints: Produce/Fetch responses (KIP-951) and errors such as
NOT_LEADER_OR_FOLLOWER carry a newer leader and epoch for one partition.
`apply_leader_hint` applies them at once (again as a copied snapshot), so the
next request goes to the right node without waiting for a full refresh.
Epochs only move forward (KIP-320): a response from a lagging broker that
reports an older leader epoch than one we already know does not win.

Bootstrap brokers are listed with negative node ids (-1, -2, ...) until the
first accepted response; an empty broker list is ignored, as a broker that
answers it cannot be used to reach anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from client.structs import NO_EPOCH, NO_LEADER, BrokerMetadata, PartitionMetadata, TopicPartition

log = logging.getLogger(__name__)

TOPIC_AUTHORIZATION_FAILED = 29

# Coordinator types of FindCoordinator (key_type).
GROUP = 0
TRANSACTION = 1


# Structural views of the generated MetadataResponse dataclasses: the store reads named
# fields only, so any version (and test doubles) fit.
class _BrokerLike(Protocol):
    @property
    def node_id(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def rack(self) -> str | None: ...


class _PartitionLike(Protocol):
    @property
    def error_code(self) -> int: ...
    @property
    def partition_index(self) -> int: ...
    @property
    def leader_id(self) -> int: ...
    @property
    def leader_epoch(self) -> int: ...
    @property
    def replica_nodes(self) -> Sequence[int]: ...
    @property
    def isr_nodes(self) -> Sequence[int]: ...
    @property
    def offline_replicas(self) -> Sequence[int]: ...


class _TopicLike(Protocol):
    @property
    def error_code(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def is_internal(self) -> bool: ...
    @property
    def partitions(self) -> Sequence[_PartitionLike]: ...


class MetadataResponseLike(Protocol):
    @property
    def brokers(self) -> Sequence[_BrokerLike]: ...
    @property
    def cluster_id(self) -> str | None: ...
    @property
    def controller_id(self) -> int: ...
    @property
    def topics(self) -> Sequence[_TopicLike]: ...


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """What one update changed; listeners receive it after the swap."""

    topics_added: frozenset[str] = frozenset()
    topics_removed: frozenset[str] = frozenset()
    leaders_moved: frozenset[TopicPartition] = frozenset()
    brokers_changed: bool = False
    accepted: bool = True

    @property
    def empty(self) -> bool:
        return not (
            self.topics_added or self.topics_removed or self.leaders_moved or self.brokers_changed
        )


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One consistent picture of the cluster. Never mutated once published."""

    brokers: dict[int, BrokerMetadata] = field(default_factory=dict)
    partitions: dict[TopicPartition, PartitionMetadata] = field(default_factory=dict)
    by_topic: dict[str, tuple[int, ...]] = field(default_factory=dict)
    available_by_topic: dict[str, tuple[int, ...]] = field(default_factory=dict)
    by_leader: dict[int, frozenset[TopicPartition]] = field(default_factory=dict)
    topic_ids: dict[str, object] = field(default_factory=dict)
    internal_topics: frozenset[str] = frozenset()
    unauthorized_topics: frozenset[str] = frozenset()
    topic_errors: dict[str, int] = field(default_factory=dict)
    controller_id: int = NO_LEADER
    cluster_id: str | None = None


Listener = Callable[["ClusterMetadata", MetadataChange], None]


class ClusterMetadata:
    """Pure store of cluster metadata. See the module docstring for the rules."""

    def __init__(self, bootstrap: Iterable[tuple[str, int]] = ()) -> None:
        brokers = {
            -(i + 1): BrokerMetadata(-(i + 1), host, port)
            for i, (host, port) in enumerate(bootstrap)
        }
        self._snap = _Snapshot(brokers=brokers)
        self._bootstrapped = False
        self._coordinators: dict[tuple[int, str], BrokerMetadata] = {}
        self._listeners: list[Listener] = []
        self.version = 0
        self.updated_at_ms = -1

    # ---- updates -------------------------------------------------------------------------

    def update(
        self,
        response: MetadataResponseLike,
        now_ms: int,
        topics_requested: Collection[str] | None = None,
    ) -> MetadataChange:
        """Swap in the picture `response` describes.

        `topics_requested=None` means the request asked for every topic, so topics missing
        from the response are gone. Otherwise, only the requested topics are replaced and
        every other known topic is kept as it was.
        """
        if not response.brokers:
            return MetadataChange(accepted=False)
        old = self._snap
        new = self._build(response, old, topics_requested)
        change = _diff(old, new, brokers_were_bootstrap=not self._bootstrapped)
        self._snap = new
        self._bootstrapped = True
        self.version += 1
        self.updated_at_ms = now_ms
        self._notify(change)
        return change

    def _build(
        self,
        response: MetadataResponseLike,
        old: _Snapshot,
        topics_requested: Collection[str] | None,
    ) -> _Snapshot:
        brokers = {
            b.node_id: BrokerMetadata(b.node_id, b.host, b.port, b.rack) for b in response.brokers
        }
        partitions: dict[TopicPartition, PartitionMetadata] = {}
        topic_ids: dict[str, object] = {}
        internal: set[str] = set()
        unauthorized: set[str] = set()
        errors: dict[str, int] = {}
        if topics_requested is not None:
            keep = {t for t in old.by_topic if t not in topics_requested}
            for tp, pm in old.partitions.items():
                if tp.topic in keep:
                    partitions[tp] = pm
            topic_ids.update((t, i) for t, i in old.topic_ids.items() if t in keep)
            internal.update(old.internal_topics & keep)
            unauthorized.update(t for t in old.unauthorized_topics if t not in topics_requested)
            errors.update((t, e) for t, e in old.topic_errors.items() if t not in topics_requested)
        for topic in response.topics:
            name = topic.name
            if name is None:
                continue
            if topic.error_code == TOPIC_AUTHORIZATION_FAILED:
                unauthorized.add(name)
            if topic.error_code:
                errors[name] = topic.error_code
                if not topic.partitions:
                    continue
            if topic.is_internal:
                internal.add(name)
            topic_id = getattr(topic, "topic_id", None)
            if topic_id is not None and getattr(topic_id, "int", 1) != 0:
                topic_ids[name] = topic_id
            for p in topic.partitions:
                pm = _partition(name, p)
                previous = old.partitions.get(pm.tp)
                if (
                    previous is not None
                    and pm.leader_epoch != NO_EPOCH
                    and previous.leader_epoch > pm.leader_epoch
                ):
                    pm = previous  # a lagging broker's view: keep the newer epoch (KIP-320)
                partitions[pm.tp] = pm
        return _index(
            partitions,
            brokers=brokers,
            topic_ids=topic_ids,
            internal_topics=frozenset(internal),
            unauthorized_topics=frozenset(unauthorized),
            topic_errors=errors,
            controller_id=response.controller_id,
            cluster_id=response.cluster_id,
        )

    def apply_leader_hint_from(
        self, tp: TopicPartition, leader: Any, node_endpoints: Iterable[Any]
    ) -> bool:
        """Apply a Produce/Fetch response's CurrentLeader hint with its NodeEndpoints.

        Returns False when the hint cannot be used: no leader in it, not newer than what
        the store has, or a leader whose address neither the store nor the response
        knows (then only a Metadata refresh can say where it is).
        """
        if leader is None or leader.leader_id < 0:
            return False
        endpoints = [
            BrokerMetadata(e.node_id, e.host, e.port, e.rack)
            for e in node_endpoints
            if e.node_id == leader.leader_id
        ]
        if not endpoints and self.broker(leader.leader_id) is None:
            return False
        return self.apply_leader_hint(tp, leader.leader_id, leader.leader_epoch, endpoints)

    def apply_leader_hint(
        self,
        tp: TopicPartition,
        leader_id: int,
        leader_epoch: int,
        endpoints: Iterable[BrokerMetadata] = (),
    ) -> bool:
        """Apply a newer leader for one partition (KIP-951). Returns whether it changed."""
        old = self._snap
        previous = old.partitions.get(tp)
        if previous is None or leader_id < 0:
            return False
        if leader_epoch < previous.leader_epoch or (
            leader_epoch == previous.leader_epoch and leader_id == previous.leader_id
        ):
            return False
        brokers = dict(old.brokers)
        for b in endpoints:
            brokers[b.node_id] = b
        partitions = dict(old.partitions)
        partitions[tp] = PartitionMetadata(
            tp.topic,
            tp.partition,
            leader_id,
            leader_epoch,
            previous.replica_nodes,
            previous.isr_nodes,
            previous.offline_replicas,
            0,
        )
        self._snap = _index(
            partitions,
            brokers=brokers,
            topic_ids=old.topic_ids,
            internal_topics=old.internal_topics,
            unauthorized_topics=old.unauthorized_topics,
            topic_errors=old.topic_errors,
            controller_id=old.controller_id,
            cluster_id=old.cluster_id,
        )
        self.version += 1
        moved = frozenset((tp,)) if leader_id != previous.leader_id else frozenset()
        self._notify(MetadataChange(leaders_moved=moved, brokers_changed=bool(endpoints)))
        return True

    def mark_leader_unknown(self, tp: TopicPartition) -> None:
        """Forget the leader of `tp` after NOT_LEADER_OR_FOLLOWER without a hint."""
        old = self._snap
        previous = old.partitions.get(tp)
        if previous is None or previous.leader_id == NO_LEADER:
            return
        partitions = dict(old.partitions)
        partitions[tp] = PartitionMetadata(
            tp.topic,
            tp.partition,
            NO_LEADER,
            previous.leader_epoch,
            previous.replica_nodes,
            previous.isr_nodes,
            previous.offline_replicas,
            0,
        )
        self._snap = _index(
            partitions,
            brokers=old.brokers,
            topic_ids=old.topic_ids,
            internal_topics=old.internal_topics,
            unauthorized_topics=old.unauthorized_topics,
            topic_errors=old.topic_errors,
            controller_id=old.controller_id,
            cluster_id=old.cluster_id,
        )
        self.version += 1
        self._notify(MetadataChange(leaders_moved=frozenset((tp,))))

    # ---- coordinators --------------------------------------------------------------------

    def add_coordinator(self, key_type: int, key: str, broker: BrokerMetadata) -> None:
        self._coordinators[(key_type, key)] = broker

    def remove_coordinator(self, key_type: int, key: str) -> None:
        self._coordinators.pop((key_type, key), None)

    def coordinator(self, key_type: int, key: str) -> BrokerMetadata | None:
        return self._coordinators.get((key_type, key))

    # ---- listeners -----------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _notify(self, change: MetadataChange) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(self, change)
            except Exception:  # a listener's bug must not break the store for the others
                log.exception("metadata listener %r failed", listener)

    # ---- lookups (hot path: O(1)) --------------------------------------------------------

    @property
    def bootstrapped(self) -> bool:
        return self._bootstrapped

    def brokers(self) -> tuple[BrokerMetadata, ...]:
        return tuple(self._snap.brokers.values())

    def broker(self, node_id: int) -> BrokerMetadata | None:
        found = self._snap.brokers.get(node_id)
        if found is None:
            for b in self._coordinators.values():
                if b.node_id == node_id:
                    return b
        return found

    def leader_for(self, tp: TopicPartition) -> int:
        pm = self._snap.partitions.get(tp)
        return NO_LEADER if pm is None else pm.leader_id

    def leader_epoch_for(self, tp: TopicPartition) -> int:
        pm = self._snap.partitions.get(tp)
        return NO_EPOCH if pm is None else pm.leader_epoch

    def partition_metadata(self, tp: TopicPartition) -> PartitionMetadata | None:
        return self._snap.partitions.get(tp)

    def partitions_for(self, topic: str) -> tuple[int, ...] | None:
        return self._snap.by_topic.get(topic)

    def available_partitions_for(self, topic: str) -> tuple[int, ...]:
        return self._snap.available_by_topic.get(topic, ())

    def partitions_for_node(self, node_id: int) -> frozenset[TopicPartition]:
        return self._snap.by_leader.get(node_id, frozenset())

    def topics(self, exclude_internal: bool = False) -> frozenset[str]:
        names = frozenset(self._snap.by_topic)
        return names - self._snap.internal_topics if exclude_internal else names

    def topic_id(self, topic: str) -> object | None:
        return self._snap.topic_ids.get(topic)

    def topic_error(self, topic: str) -> int:
        return self._snap.topic_errors.get(topic, 0)

    @property
    def internal_topics(self) -> frozenset[str]:
        return self._snap.internal_topics

    @property
    def unauthorized_topics(self) -> frozenset[str]:
        return self._snap.unauthorized_topics

    @property
    def controller_id(self) -> int:
        return self._snap.controller_id

    @property
    def cluster_id(self) -> str | None:
        return self._snap.cluster_id

    def is_stale(self, now_ms: int, max_age_ms: int) -> bool:
        return self.updated_at_ms < 0 or now_ms - self.updated_at_ms >= max_age_ms


def _partition(topic: str, p: _PartitionLike) -> PartitionMetadata:
    return PartitionMetadata(
        topic,
        p.partition_index,
        p.leader_id,
        getattr(p, "leader_epoch", NO_EPOCH),
        tuple(p.replica_nodes),
        tuple(p.isr_nodes),
        tuple(getattr(p, "offline_replicas", ()) or ()),
        p.error_code,
    )


def _index(
    partitions: dict[TopicPartition, PartitionMetadata],
    **rest: object,
) -> _Snapshot:
    """Derive the per-topic and per-leader indexes from the partition table."""
    by_topic: dict[str, list[int]] = {}
    available: dict[str, list[int]] = {}
    by_leader: dict[int, set[TopicPartition]] = {}
    for tp, pm in partitions.items():
        by_topic.setdefault(tp.topic, []).append(tp.partition)
        if pm.leader_id >= 0:
            available.setdefault(tp.topic, []).append(tp.partition)
            by_leader.setdefault(pm.leader_id, set()).add(tp)
    return _Snapshot(
        partitions=partitions,
        by_topic={t: tuple(sorted(ps)) for t, ps in by_topic.items()},
        available_by_topic={t: tuple(sorted(ps)) for t, ps in available.items()},
        by_leader={n: frozenset(tps) for n, tps in by_leader.items()},
        **rest,  # type: ignore[arg-type]
    )


def _diff(old: _Snapshot, new: _Snapshot, brokers_were_bootstrap: bool) -> MetadataChange:
    old_topics = old.by_topic.keys()
    new_topics = new.by_topic.keys()
    moved = frozenset(
        tp
        for tp, pm in new.partitions.items()
        if (prev := old.partitions.get(tp)) is not None and prev.leader_id != pm.leader_id
    )
    return MetadataChange(
        topics_added=frozenset(new_topics - old_topics),
        topics_removed=frozenset(old_topics - new_topics),
        leaders_moved=moved,
        brokers_changed=brokers_were_bootstrap or old.brokers != new.brokers,
    )
