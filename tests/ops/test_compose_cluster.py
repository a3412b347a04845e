"""The compose cluster, replayed on loopback: both listeners work, metrics move, status renders.

Three brokers start exactly as docker-compose.yml configures them (same RAFTKA_*
variables over the image's defaults, same listener names and layout; only hostnames,
port numbers and the data directory become loopback equivalents: see tests/ops/compose.py).
A client on the EXTERNAL listener (the host's view, localhost:1909x) and one on the
INTERNAL listener (the compose network's view, raftka-N:9092) each produce, and each
consumes what both produced. Each listener's Metadata must name that listener's
addresses only. /metrics is scraped during the produce run, the status page of every node
is checked for every partition, and the compose healthcheck command is run for real.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import PORTS, ROOT
from tests.ops.compose import ComposeBroker, LoopbackCompose

TOPIC = "ops-both-listeners"
PARTITIONS = 3
PER_CLIENT = 200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCompose]:
    compose = LoopbackCompose(ROOT / "docker-compose.yml", tmp_path_factory.mktemp("compose3"))
    try:
        compose.start()
        yield compose
    finally:
        codes = compose.stop()
        assert all(code == 0 for code in codes.values()), f"{codes}\n{compose.logs()}"


def _brokers_seen_through(bootstrap: str) -> dict[int, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=10)
    return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}


def test_each_listener_advertises_its_own_addresses(cluster: LoopbackCompose) -> None:
    for listener in ("EXTERNAL", "INTERNAL"):
        expected = {b.node_id: b.advertised(listener) for b in cluster}
        assert _brokers_seen_through(cluster.bootstrap(listener)) == expected, listener
    # The layout itself: INTERNAL on each broker's own address, EXTERNAL on the host's.
    internal = {b.advertised("INTERNAL").split(":")[0] for b in cluster}
    external = {b.advertised("EXTERNAL").split(":")[0] for b in cluster}
    assert internal == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    assert external == {"127.0.0.1"}


def _scrape(broker: ComposeBroker) -> dict[str, float]:
    with urllib.request.urlopen(broker.http_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            if sample.name == "raftka_requests_total":
                key = f"requests:{sample.labels['api']}"
                totals["requests"] = totals.get("requests", 0.0) + sample.value
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _scrape_all(cluster: LoopbackCompose) -> dict[str, float]:
    out: dict[str, float] = {}
    for broker in cluster:
        for key, value in _scrape(broker).items():
            out[key] = out.get(key, 0.0) + value
    return out


def _produce(bootstrap: str, prefix: str, count: int, on_half: object = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors: list[object] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    for i in range(count):
        producer.produce(TOPIC, key=f"{prefix}-{i}", value=f"{prefix}-{i}", on_delivery=report)
        if i == count // 2:
            assert producer.flush(15) == 0
            if callable(on_half):
                on_half()
    assert producer.flush(15) == 0
    assert not errors, errors[:3]


def _consume_all(bootstrap: str, group: str, expected: int) -> set[str]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([TOPIC])
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                seen.add(msg.value().decode())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen


@dataclass(frozen=True)
class Traffic:
    """What the produce/consume run saw: /metrics sums before, mid-run, after; records."""

    scrapes: list[dict[str, float]]
    sent: set[str]
    consumed: dict[str, set[str]]


@pytest.fixture(scope="module")
def traffic(cluster: LoopbackCompose) -> Traffic:
    """Producers on both listeners, then a consumer group on each, reading everything."""
    ext, internal = cluster.bootstrap("EXTERNAL"), cluster.bootstrap("INTERNAL")
    admin = AdminClient({"bootstrap.servers": ext})
    futures = admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)], operation_timeout=10)
    futures[TOPIC].result(15)
    scrapes = [_scrape_all(cluster)]
    _produce(ext, "ext", PER_CLIENT, on_half=lambda: scrapes.append(_scrape_all(cluster)))
    scrapes.append(_scrape_all(cluster))
    _produce(internal, "int", PER_CLIENT)
    sent = {f"ext-{i}" for i in range(PER_CLIENT)} | {f"int-{i}" for i in range(PER_CLIENT)}
    consumed = {
        "EXTERNAL": _consume_all(ext, "ops-ext", len(sent)),
        "INTERNAL": _consume_all(internal, "ops-int", len(sent)),
    }
    return Traffic(scrapes, sent, consumed)


def test_produce_and_consume_through_both_listeners(traffic: Traffic) -> None:
    assert traffic.consumed["EXTERNAL"] == traffic.sent
    assert traffic.consumed["INTERNAL"] == traffic.sent


def test_metrics_move_during_a_produce_run(traffic: Traffic) -> None:
    before, mid, after = traffic.scrapes
    for key in ("requests", "requests:PRODUCE", "raftka_bytes_out_total"):
        assert before.get(key, 0) < mid[key] < after[key], (key, before.get(key), mid, after)
    fsyncs = "raftka_fsync_duration_seconds_count"
    assert before[fsyncs] < mid[fsyncs] < after[fsyncs]


_ROW = re.compile(r'<tr><td class="l">([^<]+)</td><td>(\d+)</td><td(?: class="bad")?>([^<]+)</td>')


def _status_page(broker: ComposeBroker) -> str:
    with urllib.request.urlopen(broker.http_url + "/", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


def test_status_page_shows_every_partition_lag_and_groups(
    cluster: LoopbackCompose, traffic: Traffic
) -> None:
    pages = {b.node_id: _status_page(b) for b in cluster}
    for node_id, page in pages.items():
        rows = {(t, int(p)): leader for t, p, leader in _ROW.findall(page)}
        for p in range(PARTITIONS):
            assert (TOPIC, p) in rows, f"node {node_id} page lacks {TOPIC}-{p}"
            assert rows[(TOPIC, p)].isdigit(), f"node {node_id}: {TOPIC}-{p} has no leader"
        offsets = [k for k in rows if k[0] == "__consumer_offsets"]
        assert len(offsets) == 10, f"node {node_id}: {len(offsets)} offsets partitions"
    # Follower lag is shown by each partition's leader: "follower: lag" for both followers.
    lag_cells = re.findall(
        rf'<tr><td class="l">{TOPIC}</td>.*?<td class="l">([^<]*)</td></tr>',
        "".join(pages.values()),
    )
    with_followers = [
        c for c in lag_cells if re.fullmatch(r"\d: \d+( \(\w+\))?, \d: \d+( \(\w+\))?", c)
    ]
    assert len(with_followers) == PARTITIONS, lag_cells
    # Each group appears on its coordinator's page with its committed partitions, lag 0.
    groups = re.findall(
        r'<tr><td class="l">(ops-\w+)</td><td class="l">(\w+)</td><td>\d+</td><td>\d+</td>'
        r"<td>(\d+)</td><td>([^<]+)</td></tr>",
        "".join(pages.values()),
    )
    assert sorted((g, int(n), lag) for g, _, n, lag in groups) == [
        ("ops-ext", PARTITIONS, "0"), ("ops-int", PARTITIONS, "0"),
    ]  # fmt: skip


def test_compose_healthcheck_command(cluster: LoopbackCompose) -> None:
    """The compose file's healthcheck, run as is: 0 on a ready node, not 0 without one."""
    test = cluster.services["raftka-1"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    argv = [sys.executable, *test[2:]]
    node1 = cluster.brokers["raftka-1"]
    assert node1.http_host == "127.0.0.1"  # the check dials 127.0.0.1, as in the container
    env = {"RAFTKA_HTTP_LISTEN": node1.env["RAFTKA_HTTP_LISTEN"], "PATH": "/usr/bin:/bin"}
    assert subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode == 0
    (dead,) = PORTS.allocate(1)
    env["RAFTKA_HTTP_LISTEN"] = f"0.0.0.0:{dead}"
    assert subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode != 0


def test_single_node_file_serves_both_listeners(tmp_path: Path) -> None:
    compose = LoopbackCompose(ROOT / "docker-compose.single.yml", tmp_path)
    try:
        compose.start()
        for listener in ("EXTERNAL", "INTERNAL"):
            (broker,) = compose
            assert _brokers_seen_through(compose.bootstrap(listener)) == {
                1: broker.advertised(listener)
            }
        producer = Producer({"bootstrap.servers": compose.bootstrap("EXTERNAL")})
        producer.produce("single", value=b"hello")
        assert producer.flush(15) == 0
        consumer = Consumer({
            "bootstrap.servers": compose.bootstrap("INTERNAL"), "group.id": "single",
            "auto.offset.reset": "earliest",
        })  # fmt: skip
        consumer.subscribe(["single"])
        got, deadline = None, time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got = msg.value()
                break
        consumer.close()
        assert got == b"hello"
    finally:
        codes = compose.stop()
        assert all(code == 0 for code in codes.values()), f"{codes}\n{compose.logs()}"
