"""Admin APIs: topics, partitions, configs and producer ids.

Every change goes through the metadata group (see controller.py): the answer a client
gets is the verdict of the replicated state machine, whichever node it asked. Requests
are validated first, with Kafka's error codes and messages, so a bad request never
reaches the log.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from broker.metadata_image import assign_replicas
from client.protocol.errors import ErrorCode
from client.protocol.messages.create_partitions import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreatePartitionsTopicResult,
)
from client.protocol.messages.create_topics import (
    CreatableTopicResult,
    CreateTopicsRequest,
    CreateTopicsResponse,
)
from client.protocol.messages.delete_topics import (
    DeletableTopicResult,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)
from client.protocol.messages.describe_configs import (
    DescribeConfigsRequest,
    DescribeConfigsResourceResult,
    DescribeConfigsResponse,
    DescribeConfigsResult,
)
from client.protocol.messages.init_producer_id import InitProducerIdRequest, InitProducerIdResponse

if TYPE_CHECKING:
    from broker.kafka_server import RequestContext
    from broker.node import Node

#: A CreateTopics waits for the metadata change at least this long, whatever it asks.
METADATA_TIMEOUT_S_MIN = 10.0
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
SOURCE_TOPIC_CONFIG = 1
SOURCE_STATIC_BROKER_CONFIG = 4
SOURCE_DEFAULT_CONFIG = 5
#: Topic configs a client may set, with the broker setting that gives their default.
TOPIC_CONFIGS = {
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "segment.bytes": "segment_bytes_max",
    "segment.ms": "segment_age_ms_max",
    "max.message.bytes": "message_bytes_max",
    "cleanup.policy": None,
    "min.insync.replicas": None,
}
_FIXED_DEFAULTS = {"cleanup.policy": "delete", "min.insync.replicas": "1"}


def _config_default(node: Node, name: str) -> str:
    setting = TOPIC_CONFIGS.get(name)
    if setting is None:
        return _FIXED_DEFAULTS.get(name, "")
    return str(getattr(node.config, setting))


def _validate_configs(configs: dict[str, str]) -> str | None:
    for key, value in configs.items():
        if key not in TOPIC_CONFIGS:
            return f"Unknown topic config name: {key}"
        if key == "cleanup.policy":
            if value != "delete":
                return "Only cleanup.policy=delete is supported"
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            return f"Invalid value {value} for configuration {key}: Not a number of type LONG"
        if number < -1 or (
            key in ("segment.bytes", "max.message.bytes", "segment.ms") and number <= 0
        ):
            return f"Invalid value {value} for configuration {key}"
    return None


async def handle_create_topics(
    node: Node, request: CreateTopicsRequest, ctx: RequestContext
) -> CreateTopicsResponse:
    async def one(topic: Any) -> CreatableTopicResult:
        configs = {c.name: c.value for c in topic.configs}
        problem = _validate_configs(configs)
        if problem:
            return CreatableTopicResult(
                name=topic.name, error_code=ErrorCode.INVALID_CONFIG, error_message=problem
            )
        partitions = (
            node.config.num_partitions if topic.num_partitions == -1 else topic.num_partitions
        )
        rf = (
            node.config.replication_factor()
            if topic.replication_factor == -1
            else topic.replication_factor
        )
        if topic.assignments:
            return CreatableTopicResult(
                name=topic.name,
                error_code=ErrorCode.INVALID_REQUEST,
                error_message="manual replica assignment is not supported",
            )
        result = await node.create_topic(
            topic.name,
            partitions,
            rf,
            configs,
            validate_only=request.validate_only,
            timeout_s=max(METADATA_TIMEOUT_S_MIN, request.timeout_ms / 1000),
        )
        if result.error != ErrorCode.NONE:
            return CreatableTopicResult(
                name=topic.name, error_code=result.error, error_message=result.message
            )
        info = node.controller.image.topics.get(topic.name)
        return CreatableTopicResult(
            name=topic.name,
            topic_id=info.topic_id if info is not None else uuid.UUID(int=0),
            error_code=0,
            num_partitions=partitions,
            replication_factor=rf,
        )

    names = [t.name for t in request.topics]
    duplicates = {n for n in names if names.count(n) > 1}
    results = await asyncio.gather(
        *(
            _const(
                CreatableTopicResult(
                    name=t.name,
                    error_code=ErrorCode.INVALID_REQUEST,
                    error_message="duplicate topic",
                )
            )
            if t.name in duplicates
            else one(t)
            for t in request.topics
        )
    )
    if not request.validate_only:
        await asyncio.gather(
            *(
                node.wait_for_partitions(r.name, max(0, request.timeout_ms) / 1000)
                for r in results
                if r.error_code == 0
            )
        )
    return CreateTopicsResponse(throttle_time_ms=0, topics=tuple(results))


async def _const(value: Any) -> Any:
    return value


async def handle_delete_topics(
    node: Node, request: DeleteTopicsRequest, ctx: RequestContext
) -> DeleteTopicsResponse:
    image = node.controller.image
    targets: list[tuple[str | None, Any]] = []
    if ctx.version >= 6:
        for state in request.topics:
            name = state.name or image.topics_by_id.get(state.topic_id)
            targets.append((name, state.topic_id))
    else:
        targets = [(name, None) for name in request.topic_names]

    async def one(name: str | None, topic_id: Any) -> DeletableTopicResult:
        if name is None:
            return DeletableTopicResult(
                name=None,  # type: ignore[arg-type]
                topic_id=topic_id,
                error_code=ErrorCode.UNKNOWN_TOPIC_ID,
            )
        info = node.controller.image.topics.get(name)
        if info is None:
            return DeletableTopicResult(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        if info.internal:
            return DeletableTopicResult(
                name=name, error_code=ErrorCode.INVALID_REQUEST, error_message="internal topic"
            )
        result = await node.propose_metadata({"type": "delete_topic", "name": name})
        return DeletableTopicResult(
            name=name, topic_id=info.topic_id, error_code=result.error, error_message=result.message
        )

    results = await asyncio.gather(*(one(n, t) for n, t in targets))
    return DeleteTopicsResponse(throttle_time_ms=0, responses=tuple(results))


async def handle_create_partitions(
    node: Node, request: CreatePartitionsRequest, ctx: RequestContext
) -> CreatePartitionsResponse:
    async def one(topic: Any) -> CreatePartitionsTopicResult:
        image = node.controller.image
        info = image.topics.get(topic.name)
        if info is None:
            return CreatePartitionsTopicResult(
                name=topic.name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            )
        current = len(info.partitions)
        if topic.count <= current:
            return CreatePartitionsTopicResult(
                name=topic.name,
                error_code=ErrorCode.INVALID_PARTITIONS,
                error_message=f"Topic currently has {current} partitions, {topic.count} would not be an increase.",
            )
        if topic.assignments:
            return CreatePartitionsTopicResult(
                name=topic.name,
                error_code=ErrorCode.INVALID_REQUEST,
                error_message="manual assignment is not supported",
            )
        if request.validate_only:
            return CreatePartitionsTopicResult(name=topic.name, error_code=0)
        rf = len(info.partitions[0].replicas)
        brokers = sorted(image.brokers)
        new = assign_replicas(brokers, topic.count - current, rf, start=0, first_index=current)
        result = await node.propose_metadata(
            {
                "type": "create_partitions",
                "name": topic.name,
                "count": topic.count,
                "new_partitions": [list(r) for r in new],
            }
        )
        if result.error == ErrorCode.NONE:
            await node.wait_for_partitions(topic.name, max(0, request.timeout_ms) / 1000)
        return CreatePartitionsTopicResult(
            name=topic.name, error_code=result.error, error_message=result.message
        )

    results = await asyncio.gather(*(one(t) for t in request.topics))
    return CreatePartitionsResponse(throttle_time_ms=0, results=tuple(results))


async def handle_describe_configs(
    node: Node, request: DescribeConfigsRequest, ctx: RequestContext
) -> DescribeConfigsResponse:
    results = []
    for resource in request.resources:
        keys = set(resource.configuration_keys) if resource.configuration_keys is not None else None
        entries: list[DescribeConfigsResourceResult] = []
        if resource.resource_type == RESOURCE_TOPIC:
            info = node.controller.image.topics.get(resource.resource_name)
            if info is None:
                results.append(
                    DescribeConfigsResult(
                        error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        error_message=f"Topic {resource.resource_name} does not exist",
                        resource_type=resource.resource_type,
                        resource_name=resource.resource_name,
                    )
                )
                continue
            for name in sorted(TOPIC_CONFIGS):
                if keys is not None and name not in keys:
                    continue
                explicit = name in info.configs
                entries.append(
                    DescribeConfigsResourceResult(
                        name=name,
                        value=info.configs[name] if explicit else _config_default(node, name),
                        read_only=False,
                        is_default=not explicit,
                        config_source=SOURCE_TOPIC_CONFIG if explicit else SOURCE_DEFAULT_CONFIG,
                        is_sensitive=False,
                    )
                )
        elif resource.resource_type == RESOURCE_BROKER:
            from broker.config import settings_reference

            for setting in settings_reference():
                if keys is not None and setting.name not in keys:
                    continue
                value = getattr(node.config, setting.name, None)
                source = node.sources.get(setting.name, "default")
                entries.append(
                    DescribeConfigsResourceResult(
                        name=setting.name,
                        value=None if value is None else str(value),
                        read_only=True,
                        is_default=source == "default",
                        config_source=SOURCE_DEFAULT_CONFIG
                        if source == "default"
                        else SOURCE_STATIC_BROKER_CONFIG,
                        is_sensitive=False,
                        documentation=setting.help,
                    )
                )
        else:
            results.append(
                DescribeConfigsResult(
                    error_code=ErrorCode.INVALID_REQUEST,
                    error_message=f"unsupported resource type {resource.resource_type}",
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                )
            )
            continue
        results.append(
            DescribeConfigsResult(
                error_code=0,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=tuple(entries),
            )
        )
    return DescribeConfigsResponse(throttle_time_ms=0, results=tuple(results))


async def handle_init_producer_id(
    node: Node, request: InitProducerIdRequest, ctx: RequestContext
) -> InitProducerIdResponse:
    if request.transactional_id:
        return InitProducerIdResponse(
            error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            producer_id=-1,
            producer_epoch=-1,
        )
    # KIP-360: an idempotent producer bumps its epoch to reset its sequences.
    if ctx.version >= 3 and request.producer_id >= 0 and 0 <= request.producer_epoch < 32766:
        return InitProducerIdResponse(
            error_code=0,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch + 1,
        )
    try:
        producer_id = await node.allocate_producer_id()
    except RuntimeError:
        return InitProducerIdResponse(
            error_code=ErrorCode.COORDINATOR_NOT_AVAILABLE, producer_id=-1, producer_epoch=-1
        )
    return InitProducerIdResponse(error_code=0, producer_id=producer_id, producer_epoch=0)
