"""Raftka's asyncio Kafka client.

The public surface: Producer, Consumer, AdminClient, the data types they take and
return, and the errors they raise (`client.errors`). Everything else in the package is
internal. Names are imported lazily (PEP 562), so that the broker, which only needs
`client.protocol`, does not load the asyncio client when it imports the wire layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.admin import AdminClient, NewTopic
    from client.consumer import Consumer
    from client.producer import Producer, RecordFuture
    from client.structs import (
        BrokerMetadata,
        ConsumerRecord,
        OffsetAndMetadata,
        PartitionMetadata,
        RecordMetadata,
        TopicPartition,
    )

_EXPORTS = {
    "AdminClient": "client.admin",
    "NewTopic": "client.admin",
    "Consumer": "client.consumer",
    "Producer": "client.producer",
    "RecordFuture": "client.producer",
    "BrokerMetadata": "client.structs",
    "ConsumerRecord": "client.structs",
    "OffsetAndMetadata": "client.structs",
    "PartitionMetadata": "client.structs",
    "RecordMetadata": "client.structs",
    "TopicPartition": "client.structs",
}

__all__ = [
    "AdminClient",
    "BrokerMetadata",
    "Consumer",
    "ConsumerRecord",
    "NewTopic",
    "OffsetAndMetadata",
    "PartitionMetadata",
    "Producer",
    "RecordFuture",
    "RecordMetadata",
    "TopicPartition",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
