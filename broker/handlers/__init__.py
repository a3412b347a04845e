"""Kafka request handlers, one module per family; `build_handlers` wires them by api key.

Each handler is `async def handle_<api>(node, request, ctx) -> response` and returns the
generated response object for the request's version (None only for acks=0 Produce).
Handlers never raise for a client's mistake: they answer with Kafka's error codes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from broker.handlers import admin, data, metadata
from client.protocol.api_keys import ApiKey

if TYPE_CHECKING:
    from broker.kafka_server import Handler, RequestContext
    from broker.node import Node


def build_handlers(node: Node) -> dict[int, Handler]:
    table: dict[ApiKey, Callable[[Node, Any, RequestContext], Awaitable[Any]]] = {
        ApiKey.API_VERSIONS: metadata.handle_api_versions,
        ApiKey.METADATA: metadata.handle_metadata,
        ApiKey.DESCRIBE_CLUSTER: metadata.handle_describe_cluster,
        ApiKey.PRODUCE: data.handle_produce,
        ApiKey.FETCH: data.handle_fetch,
        ApiKey.LIST_OFFSETS: data.handle_list_offsets,
        ApiKey.OFFSET_FOR_LEADER_EPOCH: data.handle_offset_for_leader_epoch,
        ApiKey.DELETE_RECORDS: data.handle_delete_records,
        ApiKey.INIT_PRODUCER_ID: admin.handle_init_producer_id,
        ApiKey.CREATE_TOPICS: admin.handle_create_topics,
        ApiKey.DELETE_TOPICS: admin.handle_delete_topics,
        ApiKey.CREATE_PARTITIONS: admin.handle_create_partitions,
        ApiKey.DESCRIBE_CONFIGS: admin.handle_describe_configs,
    }
    groups = getattr(node, "group_handlers", None)
    handlers: dict[int, Handler] = {int(k): partial(fn, node) for k, fn in table.items()}
    if groups:
        handlers.update(groups)
    return handlers
