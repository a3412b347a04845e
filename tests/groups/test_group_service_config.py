"""Every group/offsets broker setting reaches the coordinator GroupService builds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from broker.config import load_config
from broker.group_service import GroupService


def test_settings_reach_the_coordinator_config() -> None:
    env = {
        "RAFTKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "7",
        "RAFTKA_GROUP_JOIN_WINDOW_MS": "11",
        "RAFTKA_GROUP_MEMBERS_MAX": "13",
        "RAFTKA_GROUP_SESSION_TIMEOUT_MS_MIN": "17",
        "RAFTKA_GROUP_SESSION_TIMEOUT_MS_MAX": "19",
        "RAFTKA_OFFSETS_TOPIC_PARTITIONS": "23",
        "RAFTKA_OFFSETS_RETENTION_MS": "29",
        "RAFTKA_OFFSETS_RETENTION_CHECK_INTERVAL_MS": "31",
        "RAFTKA_OFFSETS_METADATA_BYTES_MAX": "37",
        "RAFTKA_OFFSETS_COMPACTION_RECORDS_MIN": "41",
        "RAFTKA_OFFSETS_COMPACTION_LIVE_RATIO": "43",
    }
    config = load_config({}, env=env).config
    service = GroupService(cast(Any, SimpleNamespace(config=config)))
    c = service.coordinator.config
    g = c.group
    assert (g.initial_rebalance_delay_ms, g.join_window_ms, g.group_members_max) == (7, 11, 13)
    assert (g.min_session_timeout_ms, g.max_session_timeout_ms) == (17, 19)
    assert (c.offsets_topic_partitions, service.partitions_total) == (23, 23)
    assert (g.offsets_retention_ms, c.offsets_expiry_interval_ms) == (29, 31)
    assert g.offset_metadata_bytes_max == 37
    assert (c.compaction_records_min, c.compaction_live_ratio) == (41, 43)
