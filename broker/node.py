"""One Raftka broker node: the metadata group, the hosted partitions and the Kafka listeners.

Start-up order: open the metadata group's log and start the Raft driver (group 0 over the
configured voters); bind the Kafka listeners; then, in the background, register this
broker in the metadata group and keep the hosted partitions in step with the metadata
image (a partition's Raft group is created on the image change that assigns a replica
here and removed, with its data, when its topic is deleted).

Leaders of partitions this node does not host are learned by gossip on the peer
transport's control channel: each node tells its peers, on every change and once a
second, which groups it leads and in which term. The highest term wins, so a stale
message can never move a leader back. The metadata image itself holds only durable
facts (topics, assignments, brokers), and failover does not wait for a metadata write.

A single node is a one-voter cluster and runs exactly the same code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from broker.clock import Clock
from broker.config import BrokerConfig, HostPort
from broker.controller import CONTROL_GROUP_ID, MetadataController
from broker.failpoints import DurabilityJournal, Failpoints, parse_failpoints
from broker.faults import install_fault_routes
from broker.fetch_waiters import FetchWaiters
from broker.group_service import GroupService
from broker.http_server import HttpServer, Readiness
from broker.kafka_server import KafkaServer
from broker.metadata_image import (
    METADATA_GROUP_ID,
    ApplyResult,
    MetadataImage,
    PartitionAssignment,
    ProducerIdBlock,
    TopicInfo,
    assign_replicas,
    validate_topic_name,
)
from broker.metrics import BrokerMetrics
from broker.partition import Partition
from broker.peer_transport import PeerTransport
from broker.raft_driver import FORGET_STAGGER_TICKS, RaftDriver, RaftGroup
from broker.raft_storage import RaftLogStorage, no_records
from client.protocol.api_keys import ApiKey
from client.protocol.errors import ErrorCode
from raft.config import Config as RaftConfig
from raft.raw_node import RawNode
from raft.types import ConfState, Role
from storage.config import FsyncPolicy, LogConfig
from storage.errors import CorruptLogError
from storage.hard_state_log import HardStateLog
from storage.log import PartitionLog

log = logging.getLogger("raftka.node")

LEADER_GOSSIP_INTERVAL_S = 1.0
#: Every this many gossip turns, leaderships move back to preferred replicas.
LEADER_BALANCE_EVERY_TURNS = 5
METADATA_TIMEOUT_S = 10.0
#: Each stage of a graceful stop gets at most this long.
STOP_STEP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    leader_id: int
    epoch: int


class Node:
    """A broker node; `broker.__main__` builds it and calls start()/stop()."""

    def __init__(
        self,
        config: BrokerConfig,
        metrics: BrokerMetrics,
        transport: PeerTransport,
        clock: Clock,
        http: HttpServer,
        sources: dict[str, str] | None = None,
    ) -> None:
        from broker.handlers import build_handlers

        self.config = config
        self.node_id = config.node_id
        self.metrics = metrics
        self.transport = transport
        self.clock = clock
        self.http = http
        self.sources = sources or {}
        self.voters = tuple(sorted(p.node_id for p in config.voters()))
        self.driver = RaftDriver(
            self.node_id,
            transport,
            config.tick_ms,
            on_fsync=metrics.fsync_duration.observe,
            election_ticks=config.election_ticks,
            heartbeat_ticks=config.heartbeat_ticks,
            control_group_id=CONTROL_GROUP_ID,
            peers=self._all_peers,
            failpoints=Failpoints(parse_failpoints(config.failpoints)),
            journal=DurabilityJournal(os.path.abspath(config.data_dir))
            if config.durability_journal
            else None,
            on_election=metrics.raft_elections.inc,
        )
        self.controller = MetadataController(
            self.node_id, self.driver, self._send_control, self._on_image, self._on_metadata_leader
        )
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.partitions_by_group: dict[int, Partition] = {}
        self.leaders: dict[int, LeaderInfo] = {}
        self.fetch_waiters = FetchWaiters(config.fetch_waiters_max)
        self.groups = GroupService(self)
        self.group_handlers = self.groups.handlers()
        self.servers = [
            KafkaServer(
                listener.name,
                listener.bind.host,
                listener.bind.port,
                build_handlers(self),
                config.frame_bytes_max,
                config.connections_max,
                config.inflight_requests_per_connection_max,
                on_request=self._observe_request,
            )
            for listener in config.kafka_listeners()
        ]
        self.producer_block: ProducerIdBlock | None = None
        self._next_producer_id = 0
        self._producer_lock = asyncio.Lock()
        self._reconcile_needed = asyncio.Event()
        self._registration_check = asyncio.Event()
        #: Latched by the first successful readiness check (see `readiness`).
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._registered = False
        self._data_dir = os.path.abspath(config.data_dir)
        self._rng = random.Random()
        #: Set when peers told this node, started on an empty disk, that it was a member.
        self._disk_lost = False
        self._empty_peers: set[int] = set()
        if transport.link_filter is not None:
            install_fault_routes(http, transport.link_filter, self.driver.failpoints)
        transport.on_message(self._on_peer_message)
        transport.on_unreachable(self.driver.report_unreachable)
        transport.on_peer_lost(self.driver.on_peer_lost)
        http.add_route("GET", "/", self._status_page)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        os.makedirs(self._data_dir, exist_ok=True)
        fresh_disk = not any(
            os.path.exists(os.path.join(self._data_dir, name))
            for name in ("__raft_state", "__cluster_metadata")
        )
        self.hard_states = HardStateLog(os.path.join(self._data_dir, "__raft_state"))
        self._open_metadata_group()
        if fresh_disk and len(self.voters) > 1:
            self.driver.votes_held = True  # until peers say whether we were a member
        self.driver.start()
        self._elect_metadata_leader_soon()
        self.groups.start()
        for server in self.servers:
            await server.start()
        self._tasks = [
            asyncio.create_task(self._register_loop(), name="register"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._gossip_loop(), name="leader-gossip"),
        ]
        if self.driver.votes_held:
            self._tasks.append(asyncio.create_task(self._probe_membership(), name="membership"))

    async def stop(self) -> None:
        """Graceful stop: refuse new clients, hand leaderships away, flush and close."""
        self._stopping = True
        for server in self.servers:
            await server.stop_accepting()
        await self._transfer_leaderships_away()
        for server in self.servers:
            await server.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.fetch_waiters.notify_all()
        for partition in self.partitions.values():
            partition.close()  # fail in-flight appends, so nothing below waits on them
        for step in (self.groups.stop(), self.driver.stop()):
            try:
                await asyncio.wait_for(step, STOP_STEP_TIMEOUT_S)
            except TimeoutError:
                log.error("a stop step did not finish in %.0f s; going on", STOP_STEP_TIMEOUT_S)
        for partition in self.partitions.values():
            partition.close()
            partition.log.close()
        group0 = self.controller.group
        if group0 is not None:
            group0.storage.log.close()

    async def _transfer_leaderships_away(self) -> None:
        """Controlled shutdown: move every leadership we hold to a caught-up peer."""
        led = [p for p in self.partitions.values() if p.group is not None and p.group.is_leader]
        if self.controller.group is not None and self.controller.is_leader and len(self.voters) > 1:
            led_groups = [self.controller.group]
        else:
            led_groups = []
        led_groups += [p.group for p in led if p.group is not None and len(p.replicas) > 1]
        if not led_groups:
            return
        for group in led_groups:
            await self.driver.until_idle(group)
            target = _best_transferee(group)
            if target:
                try:
                    self.driver.transfer_leadership(group, target)
                except Exception as error:
                    log.info("leadership transfer of group %d failed: %s", group.group_id, error)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.config.election_ticks * self.config.tick_ms / 1000
        while loop.time() < deadline and any(g.is_leader for g in led_groups):
            await asyncio.sleep(self.config.tick_ms / 1000)

    def readiness(self) -> Readiness:
        """Ready once the node knows the metadata leader and is registered; at start-up
        also once it hosts every partition assigned to it and each has a serving leader.

        The per-partition checks are a start-up gate only (latched): creating a topic or
        electing a leader later is routine and must not make /readyz flap, or
        orchestrators would restart healthy nodes in the middle of a failover.
        """
        if self.controller.leader_id == 0:
            return Readiness(False, "no metadata leader yet")
        image = self.controller.image
        if self.node_id not in image.brokers:
            return Readiness(False, "not registered in the metadata yet")
        if not self._started:
            missing = [
                f"{info.name}-{p.partition}"
                for info in image.topics.values()
                for p in info.partitions
                if self.node_id in p.replicas and p.group_id not in self.partitions_by_group
            ]
            if missing:
                return Readiness(
                    False, "creating the partitions this node hosts", {"partitions": missing[:20]}
                )
            leaderless = [
                f"{p.topic}-{p.index}"
                for p in self.partitions.values()
                if p.leader_id == 0 or (p.leader_id == self.node_id and not p.leader_ready)
            ]
            if leaderless:
                return Readiness(
                    False, "partitions without a leader", {"partitions": leaderless[:20]}
                )
            self._started = True
        return Readiness(True, "ready", {"partitions": len(self.partitions)})

    def cluster_info(self) -> dict[str, Any]:
        image = self.controller.image
        topics = []
        for info in image.topics.values():
            parts = []
            for p in info.partitions:
                leader = self.leader_of(p)
                local = self.partitions.get((info.name, p.partition))
                parts.append(
                    {
                        "partition": p.partition,
                        "replicas": list(p.replicas),
                        "leader": leader.leader_id if leader else None,
                        "leader_epoch": leader.epoch if leader else None,
                        "high_watermark": local.high_watermark if local else None,
                        "log_start_offset": local.log_start_offset if local else None,
                        "log_end_offset": local.log_end_offset if local else None,
                    }
                )
            topics.append({"name": info.name, "topic_id": str(info.topic_id), "partitions": parts})
        return {
            "cluster_id": image.cluster_id,
            "node_id": self.node_id,
            "controller_id": self.controller.leader_id,
            "metadata_applied_index": image.applied_index,
            "brokers": [
                {"node_id": b.node_id, "listeners": [[x.name, x.host, x.port] for x in b.listeners]}
                for b in image.brokers.values()
            ],
            "topics": topics,
            "voters": list(self.voters),
            "raft_groups": len(self.driver.groups),
            "raft_groups_quiesced": sum(1 for g in self.driver.groups.values() if g.quiesced),
            "raft_groups_resyncing": self.driver.resyncing,
            "peer_links": self.transport.stats(),
        }

    # -- metadata group -------------------------------------------------------------------
    def _log_config(self, topic_configs: dict[str, str] | None = None) -> LogConfig:
        cfg = self.config
        topic_configs = topic_configs or {}
        retention_ms = int(topic_configs.get("retention.ms", cfg.retention_ms))
        retention_bytes = int(topic_configs.get("retention.bytes", cfg.retention_bytes))
        return LogConfig(
            segment_bytes_max=int(topic_configs.get("segment.bytes", cfg.segment_bytes_max)),
            segment_age_ms_max=cfg.segment_age_ms_max,
            fsync_policy=FsyncPolicy.ALWAYS if cfg.fsync == "always" else FsyncPolicy.NEVER,
            retention_ms=None if retention_ms < 0 else retention_ms,
            retention_bytes=None if retention_bytes < 0 else retention_bytes,
        )

    def _raft_config(self, group_id: int, applied_index: int) -> RaftConfig:
        return RaftConfig(
            node_id=self.node_id,
            election_ticks=self.config.election_ticks,
            heartbeat_ticks=self.config.heartbeat_ticks,
            rng=random.Random(self._rng.getrandbits(64) ^ group_id),
            applied_index=applied_index,
            uncommitted_bytes_max=256 << 20,
            msg_bytes_max=1 << 20,
        )

    def _open_metadata_group(self) -> None:
        directory = os.path.join(self._data_dir, "__cluster_metadata")
        plog = PartitionLog.open(directory, self._log_config())
        storage = RaftLogStorage(
            plog,
            self.hard_states,
            METADATA_GROUP_ID,
            ConfState(voters=self.voters),
            record_count=no_records,
        )
        # The image is rebuilt by replaying the whole metadata log: applied index 0.
        node = RawNode(self._raft_config(METADATA_GROUP_ID, 0), storage)
        group = RaftGroup(
            METADATA_GROUP_ID, node, storage, self.controller, self._peers_of(self.voters)
        )
        self.controller.group = group
        self.driver.add_group(group)
        if self.voters == (self.node_id,):
            self.driver.campaign(group)

    def _peers_of(self, replicas: Iterable[int]) -> tuple[int, ...]:
        return tuple(r for r in replicas if r != self.node_id)

    def _on_metadata_leader(self, leader_id: int) -> None:
        self._reconcile_needed.set()
        self._registration_check.set()

    def _on_image(self, image: MetadataImage) -> None:
        self._reconcile_needed.set()
        self._registration_check.set()
        for broker in image.brokers.values():
            if broker.node_id != self.node_id and broker.node_id not in self.voters:
                self.transport.add_peer(
                    broker.node_id, HostPort(broker.raft_host, broker.raft_port)
                )

    async def propose_metadata(
        self, record: dict[str, Any], timeout_s: float = METADATA_TIMEOUT_S
    ) -> ApplyResult:
        return await self.controller.propose(record, timeout_s)

    async def _register_loop(self) -> None:
        """Make sure the cluster id is set and this broker is registered; keep it so."""
        cfg = self.config
        record = {
            "type": "register_broker",
            "node_id": self.node_id,
            "listeners": [
                [x.name, x.advertised.host, x.advertised.port] for x in cfg.kafka_listeners()
            ],
            "raft": [cfg.raft_listen.host, cfg.raft_listen.port],
        }
        while not self._stopping:
            image = self.controller.image
            if self.controller.leader_id == 0:
                await asyncio.sleep(cfg.tick_ms / 1000)
                continue
            if not image.cluster_id and self.controller.is_leader:
                await self.propose_metadata({"type": "init_cluster", "cluster_id": cfg.cluster_id})
                continue
            mine = image.brokers.get(self.node_id)
            listeners = [[x.name, x.host, x.port] for x in mine.listeners] if mine else None
            if mine is None or listeners != record["listeners"]:
                await self.propose_metadata(record)
                continue
            self._registered = True
            await self._registration_check.wait()
            self._registration_check.clear()

    # -- partitions -----------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while not self._stopping:
            await self._reconcile_needed.wait()
            self._reconcile_needed.clear()
            try:
                await self._reconcile(self.controller.image)
            except Exception:
                log.exception("reconciling partitions failed")
                await asyncio.sleep(1)
                self._reconcile_needed.set()

    async def _reconcile(self, image: MetadataImage) -> None:
        wanted: dict[int, tuple[TopicInfo, PartitionAssignment]] = {}
        for info in image.topics.values():
            for p in info.partitions:
                if self.node_id in p.replicas:
                    wanted[p.group_id] = (info, p)
        for group_id in [g for g in self.partitions_by_group if g not in wanted]:
            await self._remove_partition(group_id)
        loop = asyncio.get_running_loop()
        for group_id, (info, assignment) in wanted.items():
            if group_id in self.partitions_by_group:
                continue
            plog, quarantined = await loop.run_in_executor(
                None, self._open_partition_log, info, assignment
            )
            self._add_partition(info, assignment, plog, resync=quarantined)

    def _partition_dir(self, topic: str, index: int) -> str:
        return os.path.join(self._data_dir, f"{topic}-{index}")

    def _open_partition_log(
        self, info: TopicInfo, assignment: PartitionAssignment
    ) -> tuple[PartitionLog, bool]:
        """Open (recovering) the replica's log; a directory left by a deleted topic is wiped.

        Returns the log and whether it was quarantined. A log that fails verification in
        the middle (not a torn tail: that is cut silently) has lost records this replica
        may have acknowledged. With other replicas to copy from, its directory is moved
        aside as `<dir>.corrupt-<unix seconds>` for the operator, and the replica starts
        empty and re-syncs without voting (see `RaftDriver.require_resync`). A replica
        with no peer keeps the error: serving a silently shortened log would lose data.
        """
        directory = self._partition_dir(info.name, assignment.partition)
        config = self._log_config(dict(info.configs))
        try:
            plog = self._open_log_dir(directory, info, assignment, config)
            self._check_holds_commit(plog, assignment.group_id)
            return plog, False
        except CorruptLogError as error:
            if len(assignment.replicas) < 2:
                raise
            quarantine = f"{directory}.corrupt-{int(time.time())}"
            log.error(
                "partition %s-%d: %s; moved to %s, re-syncing from the other replicas "
                "(this replica votes again once it has caught up)",
                info.name,
                assignment.partition,
                error,
                quarantine,
            )
            os.replace(directory, quarantine)
            return self._open_log_dir(directory, info, assignment, config), True

    def _check_holds_commit(self, plog: PartitionLog, group_id: int) -> None:
        """Raise CorruptLogError if recovery cut entries this replica knew committed.

        Recovery cuts a damaged last frame as a torn tail: with all its bytes present it
        could still be a write the crash interrupted. But the hard state holds the commit
        index saved with the last term or vote change, and a committed entry was fsynced
        before that: if the log now ends below it, the cut removed durable data. (A lower
        bound only: damage to entries committed since then still reads as a torn tail.)
        """
        stored = self.hard_states.get(group_id)
        if stored is None or plog.config.fsync_policy is not FsyncPolicy.ALWAYS:
            return
        if stored.commit > plog.last_index:
            plog.close()
            raise CorruptLogError(
                plog.directory,
                0,
                f"log ends at index {plog.last_index}, below its durable commit {stored.commit}",
            )

    @staticmethod
    def _open_log_dir(
        directory: str, info: TopicInfo, assignment: PartitionAssignment, config: LogConfig
    ) -> PartitionLog:
        meta_path = os.path.join(directory, "partition.json")
        meta = {"topic_id": str(info.topic_id), "group_id": assignment.group_id}
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                if json.load(f) != meta:
                    shutil.rmtree(directory)
        if not os.path.exists(meta_path):
            os.makedirs(directory, exist_ok=True)
            with open(meta_path + ".tmp", "w") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(meta_path + ".tmp", meta_path)
        return PartitionLog.open(directory, config)

    def _add_partition(
        self,
        info: TopicInfo,
        assignment: PartitionAssignment,
        plog: PartitionLog,
        resync: bool = False,
    ) -> None:
        partition = Partition(
            info.name,
            assignment.partition,
            assignment.group_id,
            assignment.replicas,
            plog,
            self.driver,
            self._on_partition_change,
        )
        storage = RaftLogStorage(
            plog,
            self.hard_states,
            assignment.group_id,
            ConfState(voters=tuple(sorted(assignment.replicas))),
            snapshot_data=partition.snapshot_state,
        )
        hard_state, _ = storage.initial_state()
        applied = max(hard_state.commit, plog.first_index - 1)
        partition.high_watermark = plog.offset_for_index(applied + 1)
        partition._applied_index = applied
        node = RawNode(self._raft_config(assignment.group_id, applied), storage)
        group = RaftGroup(
            assignment.group_id, node, storage, partition, self._peers_of(assignment.replicas)
        )
        partition.group = group
        partition.quorum_reachable = partial(self._quorum_reachable, assignment.replicas)
        self.partitions[partition.key] = partition
        self.partitions_by_group[assignment.group_id] = partition
        self.driver.add_group(group)
        if resync or self._disk_lost:
            # Every replica created in this life of a wiped node lost what it held.
            self.driver.require_resync(group)
        elif assignment.replicas[0] == self.node_id or len(assignment.replicas) == 1:
            self.driver.campaign(group)

    async def _remove_partition(self, group_id: int) -> None:
        partition = self.partitions_by_group.pop(group_id)
        self.partitions.pop(partition.key, None)
        await self.driver.remove_group(group_id)
        partition.close()
        partition.log.close()
        self.hard_states.stage(group_id, None)  # forgotten with the next hard-state sync
        self.leaders.pop(group_id, None)
        self.metrics.remove_partition(partition.topic, partition.index)
        self.metrics.remove_group(group_id)
        await asyncio.get_running_loop().run_in_executor(
            None, shutil.rmtree, partition.log.directory, True
        )

    def _on_partition_change(self, partition: Partition) -> None:
        group = partition.group
        if group is not None:
            if partition.leader_id:
                self._learn_leader(group.group_id, partition.leader_id, group.term)
                if partition.leader_id == self.node_id and partition.leader_ready:
                    self._broadcast_leaders([partition.group_id])
            self.metrics.set_raft_state(
                group.group_id, group.term, Role(group.node.raft.role).name.lower()
            )
        self.metrics.set_partition_offsets(
            partition.topic,
            partition.index,
            log_start_offset=partition.log_start_offset,
            high_watermark=partition.high_watermark,
            log_end_offset=partition.log_end_offset,
        )
        self.fetch_waiters.notify(partition.key)
        self.groups.on_partition_change(partition)

    # -- leaders --------------------------------------------------------------------------
    def _learn_leader(self, group_id: int, leader_id: int, epoch: int) -> None:
        known = self.leaders.get(group_id)
        if (
            known is None
            or epoch > known.epoch
            or (epoch == known.epoch and leader_id != known.leader_id)
        ):
            self.leaders[group_id] = LeaderInfo(leader_id, epoch)

    def leader_of(self, assignment: PartitionAssignment) -> LeaderInfo | None:
        local = self.partitions_by_group.get(assignment.group_id)
        cached = self.leaders.get(assignment.group_id)
        if local is not None and local.group is not None:
            if local.is_leader:
                return LeaderInfo(self.node_id, local.leader_epoch)
            if local.leader_id and local.leader_id != self.node_id:
                return LeaderInfo(local.leader_id, local.group.term)
            if cached is not None and cached.leader_id == self.node_id:
                return None  # we know we no longer lead it; do not send clients back here
        return cached

    def _send_control(self, peer_id: int, message: list[Any]) -> None:
        self.transport.send(peer_id, CONTROL_GROUP_ID, message)

    def _broadcast_leaders(self, group_ids: Iterable[int] | None = None) -> None:
        rows = []
        for partition in self.partitions_by_group.values():
            if group_ids is not None and partition.group_id not in group_ids:
                continue
            if partition.is_leader:
                rows.append([partition.group_id, self.node_id, partition.leader_epoch])
        if not rows:
            return
        for peer in self._all_peers():
            self._send_control(peer, ["leaders", rows])

    def _all_peers(self) -> set[int]:
        peers = set(self.voters) | set(self.controller.image.brokers)
        peers.discard(self.node_id)
        return peers

    def _quorum_reachable(self, replicas: tuple[int, ...]) -> bool:
        reachable = sum(1 for r in replicas if r == self.node_id or self.transport.is_connected(r))
        return reachable * 2 > len(replicas)

    async def _gossip_loop(self) -> None:
        turns = 0
        while not self._stopping:
            await asyncio.sleep(LEADER_GOSSIP_INTERVAL_S)
            turns += 1
            self._broadcast_leaders()
            if turns % LEADER_BALANCE_EVERY_TURNS == 0:
                self._balance_leaders()
            try:
                from broker.health_metrics import update_health_gauges
            except ImportError:
                continue
            update_health_gauges(self)

    def _balance_leaders(self) -> None:
        """Hand leadership back to each partition's preferred replica once it has caught up.

        The preferred replica (the first of the assignment) is spread evenly by the
        assigner; after a node restarts, this moves its leaderships home so that load
        stays spread, as Kafka's auto.leader.rebalance does.
        """
        for partition in self.partitions.values():
            group = partition.group
            preferred = partition.replicas[0]
            if group is None or group.busy or preferred == self.node_id or not partition.is_leader:
                continue
            if not self.transport.is_connected(preferred):
                continue
            progress = group.node.raft.prs.get(preferred)
            if progress is None or progress.match_index < group.node.raft.log.last_index():
                continue
            try:
                self.driver.transfer_leadership(group, preferred)
            except Exception as error:
                log.info(
                    "leader balance of %s-%d failed: %s", partition.topic, partition.index, error
                )

    def _on_peer_message(self, from_id: int, group_id: int, payload: Any) -> None:
        self.driver.heard_from(from_id)
        if group_id != CONTROL_GROUP_ID:
            self.driver.step(from_id, group_id, payload)
            return
        if not isinstance(payload, list) or not payload:
            return
        kind = payload[0]
        if kind == "alive":
            if len(payload) == 2 and isinstance(payload[1], int):
                self.driver.on_incarnation(from_id, payload[1])
            return
        if kind == "quiesce" and len(payload) == 4 and all(isinstance(x, int) for x in payload[1:]):
            self.driver.on_quiesce(from_id, payload[1], payload[2], payload[3])
        elif kind == "fwd" and len(payload) == 2 and isinstance(payload[1], bytes):
            task = asyncio.get_running_loop().create_task(self.controller.on_forwarded(payload[1]))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        elif kind == "whoami":
            image = self.controller.image
            known = image.applied_index > 0 and not self.driver.votes_held
            self.transport.send(
                from_id, CONTROL_GROUP_ID, ["you-are", known, from_id in image.brokers]
            )
        elif kind == "you-are" and len(payload) == 3:
            self._on_membership_answer(from_id, payload[1] is True, payload[2] is True)
        elif kind == "leaders" and len(payload) == 2 and isinstance(payload[1], list):
            for row in payload[1]:
                if isinstance(row, list) and len(row) == 3 and all(isinstance(x, int) for x in row):
                    self._learn_leader(row[0], row[1], row[2])

    # -- an empty disk: new member or wiped one? ----------------------------------------------
    async def _probe_membership(self) -> None:
        """Ask the peers, each heartbeat, whether this node was a member before.

        A node that starts on an empty disk cannot tell a brand-new cluster from one it
        belonged to before its disk was lost. In the second case it forgot its votes and
        its logs: voting now could elect a leader missing committed entries, or vote twice
        in one term. So it holds every vote until a peer with metadata answers (then it
        knows), or until a majority of the voters (itself included) are as empty as it is
        (a new cluster).
        """
        interval_s = self.config.heartbeat_ticks * self.config.tick_ms / 1000
        while self.driver.votes_held and not self._stopping:
            for peer in self.voters:
                if peer != self.node_id:
                    self.transport.send(peer, CONTROL_GROUP_ID, ["whoami"])
            await asyncio.sleep(interval_s)

    def _on_membership_answer(self, from_id: int, known: bool, registered: bool) -> None:
        if not self.driver.votes_held:
            return
        if known:
            if registered:
                self._disk_lost = True
                log.warning(
                    "node %d was a member before but its data directory is empty: every "
                    "group it hosts re-syncs from its peers before it votes again",
                    self.node_id,
                )
                for group in self.driver.groups.values():
                    self.driver.require_resync(group)
            self.driver.votes_held = False
            self._elect_metadata_leader_soon()
            return
        self._empty_peers.add(from_id)
        if len(self._empty_peers) + 1 >= len(self.voters) // 2 + 1:
            self.driver.votes_held = False  # a new cluster: a majority started empty
            self._elect_metadata_leader_soon()

    def _elect_metadata_leader_soon(self) -> None:
        """At start-up the metadata group knows no leader: rather than a whole election
        timeout, campaign within a few ticks, one node after another in id order (so they
        do not split the vote). In a running cluster PreVote turns this into nothing."""
        group = self.controller.group
        if group is None or len(self.voters) < 2:
            return
        rank = sorted(self.voters).index(self.node_id)
        self.driver.campaign_soon(group, 1 + FORGET_STAGGER_TICKS * rank)

    # -- services for the handlers --------------------------------------------------------
    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: dict[str, str] | None = None,
        validate_only: bool = False,
        internal: bool = False,
        timeout_s: float = METADATA_TIMEOUT_S,
    ) -> ApplyResult:
        problem = validate_topic_name(name)
        if problem:
            return ApplyResult(ErrorCode.INVALID_TOPIC, problem)
        image = self.controller.image
        if name in image.topics:
            return ApplyResult(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        if partitions <= 0:
            return ApplyResult(
                ErrorCode.INVALID_PARTITIONS, "Number of partitions must be larger than 0."
            )
        brokers = sorted(image.brokers) or [self.node_id]
        if replication_factor <= 0 or replication_factor > len(brokers):
            return ApplyResult(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"Replication factor: {replication_factor} larger than available brokers: {len(brokers)}."
                if replication_factor > 0
                else "Replication factor must be larger than 0.",
            )
        if validate_only:
            return ApplyResult()
        start = self._rng.randrange(len(brokers))
        return await self.propose_metadata(
            {
                "type": "create_topic",
                "name": name,
                "topic_id": uuid.uuid4().bytes,
                "partitions": [
                    list(r) for r in assign_replicas(brokers, partitions, replication_factor, start)
                ],
                "configs": dict(configs or {}),
                "internal": internal,
            },
            timeout_s,
        )

    async def wait_for_partitions(self, topic: str, timeout_s: float) -> None:
        """After creating a topic: wait until its partitions have leaders (best effort)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            info = self.controller.image.topics.get(topic)
            if info is not None and all(self.leader_of(p) for p in info.partitions):
                return
            await asyncio.sleep(self.config.tick_ms / 1000 / 2)

    async def allocate_producer_id(self) -> int:
        async with self._producer_lock:
            block = self.producer_block
            if block is None or self._next_producer_id >= block.first_id + block.size:
                result = await self.propose_metadata(
                    {"type": "alloc_producer_ids", "node_id": self.node_id}
                )
                if result.error != ErrorCode.NONE:
                    raise RuntimeError(result.message or result.error.name)
                block = result.value
                assert isinstance(block, ProducerIdBlock)
                self.producer_block = block
                self._next_producer_id = block.first_id
            pid = self._next_producer_id
            self._next_producer_id += 1
            return pid

    def _observe_request(
        self, api_key: int, version: int, bytes_out: int, duration_s: float
    ) -> None:
        try:
            name = ApiKey(api_key).name
        except ValueError:
            name = str(api_key)
        self.metrics.observe_request(name, version, "NONE", duration_s)
        self.metrics.bytes_out.inc(bytes_out)

    async def _status_page(self, request: Any) -> Any:
        from broker.status_page import render_status_page

        return render_status_page(self)


def _best_transferee(group: RaftGroup) -> int:
    status = group.node.status()
    best, best_match = 0, -1
    for peer, progress in sorted(status.progress.items()):
        if (
            peer != group.node.raft.id
            and not progress.is_learner
            and progress.match_index > best_match
        ):
            best, best_match = peer, progress.match_index
    return best
