"""The broker's Prometheus metrics, in one registry owned by the node.

A node owns its own `CollectorRegistry` (not prometheus_client's global one), so several
nodes can live in one test process without clashing and `/metrics` shows exactly this
node. Names follow Prometheus conventions: a `raftka_` prefix, base units in the name
(`_seconds`, `_bytes`), `_total` for counters.

Label cardinality is kept bounded on purpose: `api` and `error` come from fixed enums,
`version` is a small integer, `group` / `topic` / `partition` grow with the number of
partitions this node hosts (and are removed with `remove_partition` / `remove_group`), and
nothing is labelled by client, connection or producer id.

Raft roles are exported as a number (`raftka_raft_role`): see `RAFT_ROLE_VALUES`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

RAFT_ROLE_VALUES: Mapping[str, int] = {
    "follower": 0,
    "pre_candidate": 1,
    "candidate": 2,
    "leader": 3,
}

# Request latency from 0.5 ms to 30 s: produce with acks=all sits around a few ms, long
# polls reach the fetch wait bound.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_FSYNC_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class BrokerMetrics:
    """Every metric of one node. Attributes are prometheus_client metric objects."""

    def __init__(self, node_id: int) -> None:
        # `*_created` series double the output and no dashboard uses them (process-wide).
        disable_created_metrics()
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "raftka_requests", "Kafka requests answered, by API, version and error code name.",
            ["api", "version", "error"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "raftka_request_duration_seconds", "Time from reading a request to answering it.",
            ["api"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.bytes_in = Counter(
            "raftka_bytes_in", "Kafka request bytes read from clients.", registry=r
        )
        self.bytes_out = Counter(
            "raftka_bytes_out", "Kafka response bytes written to clients.", registry=r
        )
        self.connections = Gauge(
            "raftka_connections", "Open Kafka client connections.", ["listener"], registry=r
        )
        self.log_end_offset = Gauge(
            "raftka_partition_log_end_offset", "Next offset to be appended to the partition.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.high_watermark = Gauge(
            "raftka_partition_high_watermark", "Offset below which records are committed.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.log_start_offset = Gauge(
            "raftka_partition_log_start_offset", "First offset still in the partition log.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.raft_term = Gauge(
            "raftka_raft_term", "Current Raft term of the group.", ["group"], registry=r
        )
        self.raft_role = Gauge(
            "raftka_raft_role",
            "Raft role of this node in the group: 0 follower, 1 pre-candidate, 2 candidate, "
            "3 leader.",
            ["group"],
            registry=r,
        )
        self.raft_elections = Counter(
            "raftka_raft_elections", "Elections this node started (all groups).", registry=r
        )
        self.fsync_duration = Histogram(
            "raftka_fsync_duration_seconds", "Duration of one fsync of a log or state file.",
            buckets=_FSYNC_BUCKETS, registry=r,
        )  # fmt: skip
        self.event_loop_lag = Gauge(
            "raftka_event_loop_lag_seconds",
            "How late the last event-loop probe callback ran (max over the last second).",
            registry=r,
        )
        self.event_loop_lag_samples = Histogram(
            "raftka_event_loop_probe_lag_seconds", "Every event-loop lag probe.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.under_replicated_partitions = Gauge(
            "raftka_under_replicated_partitions",
            "Partitions led here with a follower too far behind.",
            registry=r,
        )
        self.leaderless_partitions = Gauge(
            "raftka_leaderless_partitions", "Partitions with no known leader.", registry=r
        )

    # Helpers for the common call sites --------------------------------------------------

    def observe_request(self, api: str, version: int, error: str, duration_s: float) -> None:
        self.requests.labels(api, str(version), error).inc()
        self.request_duration.labels(api).observe(duration_s)

    def set_partition_offsets(
        self,
        topic: str,
        partition: int,
        *,
        log_start_offset: int,
        high_watermark: int,
        log_end_offset: int,
    ) -> None:
        p = str(partition)
        self.log_start_offset.labels(topic, p).set(log_start_offset)
        self.high_watermark.labels(topic, p).set(high_watermark)
        self.log_end_offset.labels(topic, p).set(log_end_offset)

    def remove_partition(self, topic: str, partition: int) -> None:
        """Drops a partition's series (topic deleted or replica moved away)."""
        p = str(partition)
        for gauge in (self.log_start_offset, self.high_watermark, self.log_end_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, p)

    def set_raft_state(self, group: int, term: int, role: str) -> None:
        self.raft_term.labels(str(group)).set(term)
        self.raft_role.labels(str(group)).set(RAFT_ROLE_VALUES[role])

    def remove_group(self, group: int) -> None:
        for gauge in (self.raft_term, self.raft_role):
            with contextlib.suppress(KeyError):
                gauge.remove(str(group))

    def add_collector(self, collector: Collector) -> None:
        """Registers a scrape-time collector (e.g. `PeerTransportCollector`)."""
        self.registry.register(collector)

    def start_loop_lag_monitor(self, interval_ms: int = 100) -> LoopLagMonitor:
        """Starts probing the running loop; the caller stops it with `.stop()`."""
        monitor = LoopLagMonitor(
            asyncio.get_running_loop(),
            interval_ms,
            self.event_loop_lag,
            self.event_loop_lag_samples,
        )
        monitor.start()
        return monitor


class LoopLagMonitor:
    """Measures event-loop lag: schedule a callback `interval_ms` ahead, see how late it runs.

    A callback scheduled for time T that runs at T + d means something held the loop for
    about d. The gauge shows the largest d of the current one-second window (a recent
    view); every sample also goes into a histogram, so a stall between two scrapes is
    never lost. Cheap: one timer per interval, no task.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval_ms: int,
        gauge: Gauge,
        histogram: Histogram | None = None,
    ) -> None:
        assert interval_ms > 0
        self._loop = loop
        self._interval_s = interval_ms / 1000.0
        self._gauge = gauge
        self._histogram = histogram
        self._handle: asyncio.TimerHandle | None = None
        self._window_max_s = 0.0
        self._window_start = 0.0
        self.last_lag_s = 0.0
        self.samples = 0

    def start(self) -> None:
        self._window_start = self._loop.time()
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        expected = self._loop.time() + self._interval_s
        self._handle = self._loop.call_at(expected, self._probe, expected)

    def _probe(self, expected: float) -> None:
        now = self._loop.time()
        lag = max(0.0, now - expected)
        self.last_lag_s = lag
        self.samples += 1
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._window_max_s = lag
        else:
            self._window_max_s = max(self._window_max_s, lag)
        self._gauge.set(self._window_max_s)
        if self._histogram is not None:
            self._histogram.observe(lag)
        self._schedule()


class PeerTransportCollector(Collector):
    """Exports per-peer transport counters at scrape time, so sends cost no metric calls.

    `read_stats` returns {peer_id: {counter_name: value}}; counters become
    `raftka_peer_<name>_total{peer}` and the `connected` entry a gauge.
    """

    def __init__(self, read_stats: Callable[[], Mapping[int, Mapping[str, int]]]) -> None:
        self._read_stats = read_stats

    def describe(self) -> Iterable[Metric]:
        return []  # unknown until the first scrape; skips registry name checks

    def collect(self) -> Iterable[Metric]:
        stats = self._read_stats()
        names = sorted({name for per_peer in stats.values() for name in per_peer})
        for name in names:
            if name == "connected":
                gauge = GaugeMetricFamily(
                    "raftka_peer_connected", "1 while the outbound peer link is up.",
                    labels=["peer"],
                )  # fmt: skip
                for peer_id, values in sorted(stats.items()):
                    gauge.add_metric([str(peer_id)], values.get(name, 0))
                yield gauge
                continue
            counter = CounterMetricFamily(
                f"raftka_peer_{name}", f"Peer transport: {name.replace('_', ' ')}.",
                labels=["peer"],
            )  # fmt: skip
            for peer_id, values in sorted(stats.items()):
                counter.add_metric([str(peer_id)], values.get(name, 0))
            yield counter
