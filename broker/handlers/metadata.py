"""ApiVersions, Metadata and DescribeCluster: how clients discover the cluster.

Metadata answers from the node's current metadata image plus what it knows of partition
leaders. A client is told the brokers' addresses on the listener it connected through
(Kafka's rule), which is what lets containers and the host use different addresses.
Unknown topics are auto-created when the broker allows it and the request asks for it;
the response then says LEADER_NOT_AVAILABLE until leaders exist, as Kafka does, and
clients retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.metadata_image import TopicInfo
from client.protocol.api_keys import api_versions_keys
from client.protocol.errors import ErrorCode
from client.protocol.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse
from client.protocol.messages.describe_cluster import (
    DescribeClusterBroker,
    DescribeClusterRequest,
    DescribeClusterResponse,
)
from client.protocol.messages.metadata import (
    MetadataRequest,
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)

if TYPE_CHECKING:
    from broker.kafka_server import RequestContext
    from broker.node import Node

_API_KEYS = api_versions_keys()
#: How long Metadata waits for an auto-created topic to get leaders before answering.
AUTO_CREATE_WAIT_S = 2.0


async def handle_api_versions(
    node: Node, request: ApiVersionsRequest, ctx: RequestContext
) -> ApiVersionsResponse:
    return ApiVersionsResponse(error_code=0, api_keys=_API_KEYS, throttle_time_ms=0)


def _brokers(node: Node, listener: str) -> tuple[MetadataResponseBroker, ...]:
    out = []
    for broker in sorted(node.controller.image.brokers.values(), key=lambda b: b.node_id):
        address = broker.listener(listener)
        if address is not None:
            out.append(
                MetadataResponseBroker(
                    node_id=broker.node_id, host=address.host, port=address.port, rack=broker.rack
                )
            )
    if not out:
        # Before registration has committed, at least point the client at ourselves.
        for lst in node.config.kafka_listeners():
            if lst.name == listener:
                out.append(
                    MetadataResponseBroker(
                        node_id=node.node_id, host=lst.advertised.host, port=lst.advertised.port
                    )
                )
    return tuple(out)


def _topic(node: Node, info: TopicInfo) -> MetadataResponseTopic:
    partitions = []
    live = set(node.controller.image.brokers)
    for p in info.partitions:
        leader = node.leader_of(p)
        replicas = tuple(p.replicas)
        partitions.append(
            MetadataResponsePartition(
                error_code=0 if leader else ErrorCode.LEADER_NOT_AVAILABLE,
                partition_index=p.partition,
                leader_id=leader.leader_id if leader else -1,
                leader_epoch=leader.epoch if leader else -1,
                replica_nodes=replicas,
                isr_nodes=replicas,
                offline_replicas=tuple(r for r in replicas if r not in live),
            )
        )
    return MetadataResponseTopic(
        error_code=0,
        name=info.name,
        topic_id=info.topic_id,
        is_internal=info.internal,
        partitions=tuple(partitions),
    )


async def handle_metadata(
    node: Node, request: MetadataRequest, ctx: RequestContext
) -> MetadataResponse:
    image = node.controller.image
    topics: list[MetadataResponseTopic] = []
    if request.topics is None or (ctx.version == 0 and not request.topics):
        # All topics (v0 uses an empty array for that).
        topics = [
            _topic(node, info) for name, info in sorted(image.topics.items()) if not info.internal
        ]
    else:
        auto_create = node.config.auto_create_topics and (
            ctx.version < 4 or request.allow_auto_topic_creation
        )
        for requested in request.topics:
            name = requested.name
            if not name and requested.topic_id is not None:
                name = image.topics_by_id.get(requested.topic_id)
                if name is None:
                    topics.append(
                        MetadataResponseTopic(
                            error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                            name=None,
                            topic_id=requested.topic_id,
                        )
                    )
                    continue
            assert name is not None
            info = node.controller.image.topics.get(name)
            if info is None and auto_create:
                result = await node.create_topic(
                    name, node.config.num_partitions, node.config.replication_factor()
                )
                if result.error in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
                    await node.wait_for_partitions(name, AUTO_CREATE_WAIT_S)
                    info = node.controller.image.topics.get(name)
                elif result.error == ErrorCode.INVALID_TOPIC:
                    topics.append(
                        MetadataResponseTopic(error_code=ErrorCode.INVALID_TOPIC, name=name)
                    )
                    continue
            if info is None:
                topics.append(
                    MetadataResponseTopic(
                        error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name=name
                    )
                )
                continue
            topics.append(_topic(node, info))
    return MetadataResponse(
        throttle_time_ms=0,
        brokers=_brokers(node, ctx.listener_name),
        cluster_id=image.cluster_id or node.config.cluster_id,
        controller_id=node.controller.leader_id or -1,
        topics=tuple(topics),
    )


async def handle_describe_cluster(
    node: Node, request: DescribeClusterRequest, ctx: RequestContext
) -> DescribeClusterResponse:
    brokers = tuple(
        DescribeClusterBroker(broker_id=b.node_id, host=b.host, port=b.port, rack=b.rack)
        for b in _brokers(node, ctx.listener_name)
    )
    image = node.controller.image
    return DescribeClusterResponse(
        error_code=0,
        cluster_id=image.cluster_id or node.config.cluster_id,
        controller_id=node.controller.leader_id or -1,
        brokers=brokers,
    )
