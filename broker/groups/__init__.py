"""Consumer groups: Kafka's classic group coordinator and the `__consumer_offsets` records.

`state` is the pure group state machine, `offsets_log` the record codec (with replay,
compaction and group-to-partition routing), `coordinator` the asyncio shell that the
broker's request dispatch calls (`GroupCoordinator.handle_<api>`).
"""

from broker.groups.coordinator import CoordinatorConfig, GroupCoordinator, GroupLog
from broker.groups.offsets_log import live_records, partition_for_group
from broker.groups.state import GroupConfig

__all__ = [
    "CoordinatorConfig",
    "GroupConfig",
    "GroupCoordinator",
    "GroupLog",
    "live_records",
    "partition_for_group",
]
