"""AdminClient: topics, partitions, configs, cluster, groups and offsets.

Each call is one or a few requests routed where Kafka wants them: topic changes
go to the controller (retrying on NOT_CONTROLLER after a metadata refresh),
group operations to each group's coordinator, ListGroups to every broker,
ListOffsets to each partition's leader. Per-item errors are raised as typed
KafkaError subclasses, except where noted (e.g. create_topics may ignore
TOPIC_ALREADY_EXISTS on request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from client.assignors import decode_assignment
from client.client import ClientConfig, KafkaClient
from client.clock import SYSTEM_CLOCK, Clock
from client.errors import ErrorCode, KafkaError, exception_for
from client.group import GroupMembership
from client.protocol.messages.create_partitions import (
    CreatePartitionsRequest,
    CreatePartitionsTopic,
)
from client.protocol.messages.create_topics import (
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
)
from client.protocol.messages.delete_groups import DeleteGroupsRequest
from client.protocol.messages.delete_topics import DeleteTopicsRequest
from client.protocol.messages.describe_configs import (
    DescribeConfigsRequest,
    DescribeConfigsResource,
)
from client.protocol.messages.describe_groups import DescribeGroupsRequest
from client.protocol.messages.list_groups import ListGroupsRequest
from client.protocol.messages.list_offsets import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from client.structs import (
    BrokerMetadata,
    OffsetAndMetadata,
    PartitionMetadata,
    TopicDescription,
    TopicPartition,
)

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
EARLIEST = -2
LATEST = -1


@dataclass(frozen=True, slots=True)
class NewTopic:
    name: str
    num_partitions: int = 1
    replication_factor: int = -1  # the broker's default
    configs: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    cluster_id: str | None
    controller_id: int
    brokers: tuple[BrokerMetadata, ...]


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    client_id: str
    client_host: str
    group_instance_id: str | None
    assignment: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: tuple[MemberDescription, ...]


class AdminClient:
    """Administrative operations. Use `async with AdminClient(...) as admin:`."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092",
        *,
        client_id: str = "raftka-admin",
        request_timeout_ms: int = 30000,
        retry_backoff_ms: int = 100,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._client = KafkaClient(
            ClientConfig(
                bootstrap_servers=bootstrap_servers,
                client_id=client_id,
                request_timeout_ms=request_timeout_ms,
                retry_backoff_ms=retry_backoff_ms,
            ),
            clock,
        )
        self._client.want_all_topics = True
        self.request_timeout_ms = request_timeout_ms

    @property
    def client(self) -> KafkaClient:
        return self._client

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AdminClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- routing -------------------------------------------------------------------------

    async def _to_controller(self, request: Any) -> Any:
        for _ in range(5):
            node_id = self._client.cluster.controller_id
            if node_id < 0:
                node_id = self._client.cluster.brokers()[0].node_id
            response = await self._client.send(node_id, request)
            codes = [getattr(r, "error_code", 0) for r in _results(response)]
            if ErrorCode.NOT_CONTROLLER not in codes:
                return response
            await self._client.refresh_metadata()
            await self._client.clock.sleep_ms(self._client.config.retry_backoff_ms)
        return response

    # ---- topics --------------------------------------------------------------------------

    async def create_topics(
        self,
        topics: Iterable[NewTopic],
        *,
        validate_only: bool = False,
        if_not_exists: bool = False,
    ) -> None:
        request = CreateTopicsRequest(
            topics=tuple(
                CreatableTopic(
                    name=t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    configs=tuple(
                        CreatableTopicConfig(name=k, value=v) for k, v in (t.configs or {}).items()
                    ),
                )
                for t in topics
            ),
            timeout_ms=self.request_timeout_ms,
            validate_only=validate_only,
        )
        response = await self._to_controller(request)
        for r in response.topics:
            if r.error_code == ErrorCode.TOPIC_ALREADY_EXISTS and if_not_exists:
                continue
            if r.error_code:
                raise exception_for(r.error_code, f"create topic {r.name}: {r.error_message}")
        await self._client.refresh_metadata()

    async def delete_topics(self, names: Iterable[str]) -> None:
        names = tuple(names)
        request = DeleteTopicsRequest(topic_names=names, timeout_ms=self.request_timeout_ms)
        response = await self._to_controller(request)
        for r in response.responses:
            if r.error_code:
                raise exception_for(r.error_code, f"delete topic {r.name}")
        await self._client.refresh_metadata()

    async def create_partitions(self, new_counts: Mapping[str, int]) -> None:
        request = CreatePartitionsRequest(
            topics=tuple(
                CreatePartitionsTopic(name=t, count=n, assignments=None)
                for t, n in new_counts.items()
            ),
            timeout_ms=self.request_timeout_ms,
        )
        response = await self._to_controller(request)
        for r in response.results:
            if r.error_code:
                raise exception_for(r.error_code, f"create partitions {r.name}: {r.error_message}")
        await self._client.refresh_metadata()

    async def list_topics(self, include_internal: bool = False) -> frozenset[str]:
        await self._client.refresh_metadata()
        return self._client.cluster.topics(exclude_internal=not include_internal)

    async def describe_topics(self, names: Iterable[str] | None = None) -> list[TopicDescription]:
        await self._client.refresh_metadata()
        cluster = self._client.cluster
        wanted = sorted(names) if names is not None else sorted(cluster.topics())
        out = []
        for name in wanted:
            partitions = cluster.partitions_for(name)
            if partitions is None:
                raise exception_for(
                    cluster.topic_error(name) or ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name
                )
            pms: list[PartitionMetadata] = [
                pm
                for p in partitions
                if (pm := cluster.partition_metadata(TopicPartition(name, p))) is not None
            ]
            tid = cluster.topic_id(name)
            out.append(
                TopicDescription(
                    name,
                    None if tid is None else str(tid),
                    name in cluster.internal_topics,
                    tuple(pms),
                )
            )
        return out

    async def describe_configs(
        self, resource_type: int, names: Iterable[str], keys: Sequence[str] | None = None
    ) -> dict[str, dict[str, str | None]]:
        request = DescribeConfigsRequest(
            resources=tuple(
                DescribeConfigsResource(
                    resource_type=resource_type,
                    resource_name=n,
                    configuration_keys=None if keys is None else tuple(keys),
                )
                for n in names
            )
        )
        if resource_type == RESOURCE_BROKER:
            response = await self._client.send(
                int(next(iter(request.resources)).resource_name), request
            )
        else:
            response = await self._client.send_any(request)
        out: dict[str, dict[str, str | None]] = {}
        for r in response.results:
            if r.error_code:
                raise exception_for(r.error_code, f"describe configs {r.resource_name}")
            out[r.resource_name] = {c.name: c.value for c in r.configs}
        return out

    # ---- cluster -------------------------------------------------------------------------

    async def describe_cluster(self) -> ClusterDescription:
        await self._client.refresh_metadata()
        c = self._client.cluster
        return ClusterDescription(c.cluster_id, c.controller_id, c.brokers())

    async def list_offsets(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Offsets by timestamp: EARLIEST (-2), LATEST (-1, the high watermark) or ms."""
        await self._client.wait_for_topics_metadata(sorted({tp.topic for tp in timestamps}))
        by_node: dict[int, list[TopicPartition]] = {}
        for tp in timestamps:
            leader = self._client.cluster.leader_for(tp)
            if leader < 0:
                raise exception_for(ErrorCode.LEADER_NOT_AVAILABLE, str(tp))
            by_node.setdefault(leader, []).append(tp)

        async def on(node_id: int, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            by_topic: dict[str, list[ListOffsetsPartition]] = {}
            for tp in tps:
                by_topic.setdefault(tp.topic, []).append(
                    ListOffsetsPartition(partition_index=tp.partition, timestamp=timestamps[tp])
                )
            response = await self._client.send(
                node_id,
                ListOffsetsRequest(
                    replica_id=-1,
                    topics=tuple(
                        ListOffsetsTopic(name=t, partitions=tuple(ps)) for t, ps in by_topic.items()
                    ),
                ),
            )
            out = {}
            for t in response.topics:
                for p in t.partitions:
                    if p.error_code:
                        raise exception_for(p.error_code, f"{t.name}-{p.partition_index}")
                    out[TopicPartition(t.name, p.partition_index)] = p.offset
            return out

        merged: dict[TopicPartition, int] = {}
        for part in await asyncio.gather(*(on(n, tps) for n, tps in by_node.items())):
            merged.update(part)
        return merged

    # ---- groups --------------------------------------------------------------------------

    async def list_groups(self) -> list[GroupListing]:
        await self._client.refresh_metadata()
        seen: dict[str, GroupListing] = {}
        for b in self._client.cluster.brokers():
            response = await self._client.send(b.node_id, ListGroupsRequest())
            if response.error_code:
                raise exception_for(response.error_code, "ListGroups")
            for g in response.groups:
                seen[g.group_id] = GroupListing(g.group_id, g.protocol_type, g.group_state)
        return sorted(seen.values(), key=lambda g: g.group_id)

    async def describe_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        out = []
        for group_id in group_ids:
            node_id = await self._client.find_coordinator(group_id)
            response = await self._client.send(node_id, DescribeGroupsRequest(groups=(group_id,)))
            for g in response.groups:
                if g.error_code:
                    raise exception_for(g.error_code, f"describe group {g.group_id}")
                members = tuple(
                    MemberDescription(
                        m.member_id,
                        m.client_id,
                        m.client_host,
                        m.group_instance_id,
                        _assignment(m.member_assignment) if g.protocol_type == "consumer" else (),
                    )
                    for m in g.members
                )
                out.append(
                    GroupDescription(
                        g.group_id, g.group_state, g.protocol_type, g.protocol_data, members
                    )
                )
        return out

    async def delete_groups(self, group_ids: Iterable[str]) -> None:
        for group_id in group_ids:
            node_id = await self._client.find_coordinator(group_id)
            response = await self._client.send(
                node_id, DeleteGroupsRequest(groups_names=(group_id,))
            )
            for r in response.results:
                if r.error_code:
                    raise exception_for(r.error_code, f"delete group {r.group_id}")

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata]:
        """Committed offsets of a group for every partition of every known topic."""
        await self._client.refresh_metadata()
        cluster = self._client.cluster
        tps = [
            TopicPartition(t, p)
            for t in cluster.topics(exclude_internal=True)
            for p in cluster.partitions_for(t) or ()
        ]
        membership = GroupMembership(
            self._client,
            group_id,
            topics=lambda: frozenset(),
            on_assignment=lambda _tps: None,
            before_revoke=lambda _tps: None,
        )
        found = await membership.fetch_committed(tps) if tps else {}
        return {tp: om for tp, om in found.items() if om is not None}

    async def alter_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, int]
    ) -> None:
        """Set a group's committed offsets (the group must have no active members)."""
        membership = GroupMembership(
            self._client,
            group_id,
            topics=lambda: frozenset(),
            on_assignment=lambda _tps: None,
            before_revoke=lambda _tps: None,
        )
        await membership.commit({tp: OffsetAndMetadata(o) for tp, o in offsets.items()})


def _assignment(data: bytes) -> tuple[TopicPartition, ...]:
    try:
        return decode_assignment(data).partitions
    except ValueError:
        return ()


def _results(response: Any) -> list[Any]:
    for name in ("topics", "responses", "results"):
        items = getattr(response, name, None)
        if isinstance(items, tuple):
            return list(items)
    return []


__all__ = [
    "EARLIEST",
    "LATEST",
    "RESOURCE_BROKER",
    "RESOURCE_TOPIC",
    "AdminClient",
    "ClusterDescription",
    "GroupDescription",
    "GroupListing",
    "KafkaError",
    "MemberDescription",
    "NewTopic",
]
