"""KIP-951: a follower answering NOT_LEADER_OR_FOLLOWER names the current leader.

Clients then go straight to the new leader instead of refreshing metadata first, which
is what makes failover fast for Fetch v12+.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from client.protocol.messages.create_topics import CreatableTopic, CreateTopicsRequest
from client.protocol.messages.fetch import FetchPartition, FetchRequest, FetchTopic
from tests.e2e.conftest import RawClient
from tests.harness import Cluster

NOT_LEADER_OR_FOLLOWER = 6


def _leader(cluster: Cluster, topic: str) -> tuple[int, int]:
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(cluster.http_url(1) + "/v1/cluster", timeout=5) as r:
            view = json.loads(r.read())
        for t in view["topics"]:
            if t["name"] == topic and t["partitions"][0]["leader"]:
                p = t["partitions"][0]
                return p["leader"], p["leader_epoch"]
        assert time.monotonic() < deadline, view
        time.sleep(0.1)


def test_fetch_from_a_follower_names_the_leader(tmp_path: Path) -> None:
    with Cluster(3, tmp_path) as cluster:
        cluster.start(timeout_s=30)
        with RawClient(cluster.node(1).kafka_address, deadline_s=15) as raw:
            create = CreateTopicsRequest(
                topics=(CreatableTopic(name="hinted", num_partitions=1, replication_factor=3),),
                timeout_ms=10_000,
            )
            assert raw.request(create, 5).topics[0].error_code == 0
        leader, epoch = _leader(cluster, "hinted")
        follower = next(n for n in (1, 2, 3) if n != leader)
        request = FetchRequest(
            replica_id=-1,
            max_wait_ms=0,
            min_bytes=1,
            max_bytes=1 << 20,
            topics=(
                FetchTopic(
                    topic="hinted",
                    partitions=(
                        FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20),
                    ),
                ),
            ),
        )
        with RawClient(cluster.node(follower).kafka_address) as raw:
            response = raw.request(request, 12)
        data = response.responses[0].partitions[0]
        assert data.error_code == NOT_LEADER_OR_FOLLOWER
        assert (data.current_leader.leader_id, data.current_leader.leader_epoch) == (leader, epoch)
