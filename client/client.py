"""KafkaClient: connections per node, version negotiation, and the metadata refresher.

Theory of operation.

Connections. One `BrokerConnection` per node id, opened on first use. Opening
is single-flight (concurrent callers share one attempt) and followed by
ApiVersions: for each API the client uses the highest version both sides
support, within what our wire layer generates (and never below the version we
need, e.g. Produce v3 for record batch v2). A node that cannot be reached is
retried after `reconnect_backoff_ms`, doubling up to `reconnect_backoff_max_ms`.

Metadata. `ClusterMetadata` (cluster.py) is the pure store; this module keeps
it fresh. At most one Metadata request is in flight: every caller of
`refresh_metadata()` awaits the same future. A background task refreshes every
`metadata_max_age_ms`, and at once when something asks for it (an unknown
topic, NOT_LEADER_OR_FOLLOWER, a fenced epoch, a lost connection), but never
more often than every `retry_backoff_ms`. Topics of interest accumulate from
the producer and consumer; `want_all_topics` (pattern subscriptions, admin)
asks for every topic.

Coordinators. `find_coordinator(key_type, key)` asks any node and caches the
answer in the store until `forget_coordinator` (NOT_COORDINATOR, connection
loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from client.clock import SYSTEM_CLOCK, Clock
from client.cluster import GROUP, ClusterMetadata
from client.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailableError,
    UnsupportedVersionError,
    exception_for,
)
from client.network import BrokerConnection
from client.protocol.api_keys import API_SPECS, ApiKey
from client.protocol.messages.api_versions import ApiVersionsRequest
from client.protocol.messages.find_coordinator import FindCoordinatorRequest
from client.protocol.messages.metadata import MetadataRequest, MetadataRequestTopic
from client.structs import BrokerMetadata

log = logging.getLogger(__name__)

CLIENT_SOFTWARE_NAME = "raftka-python"
CLIENT_SOFTWARE_VERSION = "0.1.0"

# Lowest version of each API the client will speak (what our handling code needs).
CLIENT_MIN_VERSIONS: dict[int, int] = {
    ApiKey.PRODUCE: 3,  # record batch v2
    ApiKey.FETCH: 4,  # record batch v2, isolation level
    ApiKey.METADATA: 1,  # controller id, is_internal, null = all topics
    ApiKey.LIST_OFFSETS: 1,
}
UNSUPPORTED_VERSION = 35


def parse_bootstrap(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """'h1:9092,h2:9093' or ['h1:9092', ...] -> [(host, port), ...]; port defaults to 9092."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("bootstrap_servers is empty")
    return out


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Settings shared by the producer, consumer and admin client (units in the names)."""

    bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092"
    client_id: str = "raftka"
    request_timeout_ms: int = 30000
    connect_timeout_ms: int = 10000
    metadata_max_age_ms: int = 300000
    retry_backoff_ms: int = 100
    reconnect_backoff_ms: int = 50
    reconnect_backoff_max_ms: int = 1000
    frame_bytes_max: int = 256 * 1024 * 1024


class _NodeState:
    __slots__ = ("backoff_ms", "conn", "connecting", "retry_at_ms")

    def __init__(self) -> None:
        self.conn: BrokerConnection | None = None
        self.connecting: asyncio.Future[BrokerConnection] | None = None
        self.backoff_ms = 0
        self.retry_at_ms = 0


class KafkaClient:
    """The shared network core of Producer, Consumer and AdminClient."""

    def __init__(self, config: ClientConfig | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config or ClientConfig()
        self.clock = clock
        self.cluster = ClusterMetadata(parse_bootstrap(self.config.bootstrap_servers))
        self._nodes: dict[int, _NodeState] = {}
        self._topics: set[str] = set()
        self.want_all_topics = False
        self._refresh: asyncio.Future[None] | None = None
        self._refresh_wanted = asyncio.Event()
        self._last_refresh_ms = -(10**12)
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bootstrap: fetch metadata once (raising if nobody answers), then keep it fresh."""
        await self.refresh_metadata()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="metadata-refresher")

    async def close(self) -> None:
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for state in self._nodes.values():
            if state.conn is not None:
                state.conn.close()
        self._nodes.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- connections ---------------------------------------------------------------------

    async def connection(self, node_id: int) -> BrokerConnection:
        """The open connection to `node_id`, opening (and negotiating) it if needed."""
        state = self._nodes.get(node_id)
        if state is None:
            state = self._nodes[node_id] = _NodeState()
        conn = state.conn
        if conn is not None and not conn.closed:
            return conn
        if state.connecting is None:
            state.connecting = asyncio.ensure_future(self._connect(node_id, state))
        return await asyncio.shield(state.connecting)

    def ready_connection(self, node_id: int) -> BrokerConnection | None:
        """The connection if it is open right now (hot path: no await)."""
        state = self._nodes.get(node_id)
        if state is None or state.conn is None or state.conn.closed:
            return None
        return state.conn

    async def _connect(self, node_id: int, state: _NodeState) -> BrokerConnection:
        try:
            broker = self.cluster.broker(node_id)
            if broker is None:
                raise KafkaConnectionError(f"node {node_id} is not in the metadata")
            wait_ms = state.retry_at_ms - self.clock.monotonic_ms()
            if wait_ms > 0:
                await self.clock.sleep_ms(wait_ms)
            try:
                conn = await BrokerConnection.open(
                    broker.host,
                    broker.port,
                    node_id=node_id,
                    client_id=self.config.client_id,
                    request_timeout_ms=self.config.request_timeout_ms,
                    connect_timeout_ms=self.config.connect_timeout_ms,
                    frame_bytes_max=self.config.frame_bytes_max,
                )
                await self._negotiate(conn)
            except (KafkaError, OSError) as e:
                cfg = self.config
                state.backoff_ms = min(
                    max(cfg.reconnect_backoff_ms, state.backoff_ms * 2),
                    cfg.reconnect_backoff_max_ms,
                )
                state.retry_at_ms = self.clock.monotonic_ms() + state.backoff_ms
                self.request_metadata_update()
                raise KafkaConnectionError(f"node {node_id}: {e}") from e
            state.backoff_ms = 0
            state.conn = conn
            conn.add_close_callback(self._on_connection_closed)
            return conn
        finally:
            state.connecting = None

    def _on_connection_closed(self, conn: BrokerConnection) -> None:
        if not self._closed:
            self.request_metadata_update()

    async def _negotiate(self, conn: BrokerConnection) -> None:
        """ApiVersions: choose, per API, the highest version both sides support."""
        version = API_SPECS[ApiKey.API_VERSIONS].max_version
        request = ApiVersionsRequest(
            client_software_name=CLIENT_SOFTWARE_NAME,
            client_software_version=CLIENT_SOFTWARE_VERSION,
        )
        response = await conn.request(request, version)
        if response.error_code == UNSUPPORTED_VERSION:
            theirs = {k.api_key: k.max_version for k in response.api_keys}
            version = min(version, theirs.get(ApiKey.API_VERSIONS, 0))
            response = await conn.request(request, version)
        if response.error_code:
            raise exception_for(response.error_code, "ApiVersions failed")
        conn.api_versions = negotiate_versions(
            {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
        )

    def version_for(self, conn: BrokerConnection, api_key: int, max_version: int = 1 << 15) -> int:
        version = conn.api_versions.get(api_key)
        if version is None:
            raise UnsupportedVersionError(f"node {conn.node_id} does not support api {api_key}")
        return min(version, max_version)

    async def send(
        self,
        node_id: int,
        request: Any,
        *,
        max_version: int = 1 << 15,
        timeout_ms: int | None = None,
    ) -> Any:
        """Send `request` to `node_id` at the negotiated version; returns the response body."""
        conn = await self.connection(node_id)
        version = self.version_for(conn, request.API_KEY, max_version)
        return await conn.send(request, version, timeout_ms=timeout_ms)

    async def send_any(self, request: Any, *, max_version: int = 1 << 15) -> Any:
        """Send to whichever node answers (metadata-free requests such as ListGroups)."""
        last: Exception = NoBrokersAvailableError("no broker known")
        for node_id in self._candidate_nodes():
            try:
                return await self.send(node_id, request, max_version=max_version)
            except (KafkaConnectionError, KafkaTimeoutError) as e:
                last = e
        raise last

    def _candidate_nodes(self) -> list[int]:
        """Connected nodes with the fewest requests in flight first, then the others."""
        ids = [b.node_id for b in self.cluster.brokers()]

        def load(node_id: int) -> tuple[int, int]:
            conn = self.ready_connection(node_id)
            return (0, conn.in_flight) if conn is not None else (1, 0)

        return sorted(ids, key=load)

    # ---- metadata ------------------------------------------------------------------------

    def add_topics(self, topics: Iterable[str]) -> bool:
        """Add topics of interest; returns True if any was new (a refresh was requested)."""
        new = set(topics) - self._topics
        if new:
            self._topics |= new
            self.request_metadata_update()
        return bool(new)

    def set_topics(self, topics: Iterable[str]) -> None:
        self._topics = set(topics)
        self.request_metadata_update()

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    def request_metadata_update(self) -> None:
        """Ask the refresher for a refresh soon (respecting retry_backoff_ms)."""
        self._refresh_wanted.set()

    async def refresh_metadata(self) -> None:
        """Refresh now, or join the refresh already in flight."""
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._do_refresh())
            self._refresh.add_done_callback(self._refresh_done)
        await asyncio.shield(self._refresh)

    def _refresh_done(self, future: asyncio.Future[None]) -> None:
        self._refresh = None
        if not future.cancelled():
            future.exception()  # retrieved here: waiters re-raise it themselves

    async def _do_refresh(self) -> None:
        self._last_refresh_ms = self.clock.monotonic_ms()
        self._refresh_wanted.clear()
        if self.want_all_topics:
            topics = None
        else:
            topics = tuple(MetadataRequestTopic(name=t) for t in sorted(self._topics))
        request = MetadataRequest(topics=topics, allow_auto_topic_creation=False)
        last: Exception = NoBrokersAvailableError("no broker answered Metadata")
        for node_id in self._candidate_nodes():
            try:
                response = await self.send(node_id, request, max_version=12)
            except (KafkaConnectionError, KafkaTimeoutError, UnsupportedVersionError) as e:
                last = e
                continue
            requested = None if topics is None else [t.name or "" for t in topics]
            change = self.cluster.update(response, self.clock.monotonic_ms(), requested)
            if change.accepted:
                return
        raise last

    async def _refresh_loop(self) -> None:
        cfg = self.config
        while not self._closed:
            age_ms = self.clock.monotonic_ms() - self._last_refresh_ms
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0, cfg.metadata_max_age_ms - age_ms) / 1000):
                    await self._refresh_wanted.wait()
            since_ms = self.clock.monotonic_ms() - self._last_refresh_ms
            if since_ms < cfg.retry_backoff_ms:
                await self.clock.sleep_ms(cfg.retry_backoff_ms - since_ms)
            try:
                await self.refresh_metadata()
            except KafkaError as e:
                log.warning("metadata refresh failed: %s", e)
                self._refresh_wanted.set()  # try again after the backoff

    async def wait_for_topics_metadata(self, topics: Sequence[str]) -> None:
        """Make sure the metadata covers `topics` (those that exist), refreshing if needed."""
        self.add_topics(topics)
        for _ in range(2):  # a refresh already in flight may predate these topics
            if all(self.cluster.partitions_for(t) is not None for t in topics):
                return
            with contextlib.suppress(KafkaError):
                await self.refresh_metadata()

    async def wait_for_topic(self, topic: str, timeout_ms: int) -> tuple[int, ...]:
        """Partitions of `topic`, refreshing until it appears or `timeout_ms` passes."""
        self.add_topics((topic,))
        deadline = self.clock.monotonic_ms() + timeout_ms
        while True:
            partitions = self.cluster.partitions_for(topic)
            if partitions:
                return partitions
            error = self.cluster.topic_error(topic)
            if error and not exception_for(error).retriable:
                raise exception_for(error, topic)
            if self.clock.monotonic_ms() >= deadline:
                raise KafkaTimeoutError(f"topic {topic!r} not in metadata after {timeout_ms} ms")
            with contextlib.suppress(KafkaError):
                await self.refresh_metadata()
            if not self.cluster.partitions_for(topic):
                await self.clock.sleep_ms(self.config.retry_backoff_ms)

    # ---- coordinators --------------------------------------------------------------------

    async def find_coordinator(self, key: str, key_type: int = GROUP) -> int:
        """Node id of the coordinator for `key` (cached until forgotten)."""
        known = self.cluster.coordinator(key_type, key)
        if known is not None:
            return known.node_id
        request = FindCoordinatorRequest(key=key, key_type=key_type, coordinator_keys=(key,))
        response = await self.send_any(request)
        if response.coordinators:
            c = response.coordinators[0]
            error_code, node_id, host, port = c.error_code, c.node_id, c.host, c.port
        else:
            error_code, node_id = response.error_code, response.node_id
            host, port = response.host, response.port
        if error_code:
            raise exception_for(error_code, f"FindCoordinator({key!r})")
        self.cluster.add_coordinator(key_type, key, BrokerMetadata(node_id, host, port))
        return node_id

    def forget_coordinator(self, key: str, key_type: int = GROUP) -> None:
        self.cluster.remove_coordinator(key_type, key)


def negotiate_versions(theirs: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Highest common version per API, for the APIs both sides know and can meet on."""
    chosen: dict[int, int] = {}
    for key, spec in API_SPECS.items():
        if key not in theirs:
            continue
        lo, hi = theirs[key]
        ours_lo = max(spec.min_version, CLIENT_MIN_VERSIONS.get(key, spec.min_version))
        version = min(hi, spec.max_version)
        if version >= max(lo, ours_lo):
            chosen[int(key)] = version
    return chosen
