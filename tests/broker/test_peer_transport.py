"""Peer transport between real transports on loopback, in one event loop."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from broker.config import HostPort
from broker.peer_transport import (
    MAGIC,
    PROTOCOL_VERSION,
    LinkFilter,
    PeerTransport,
    TransportConfig,
    encode_frame,
)
from tests.harness import Cluster

FAST = TransportConfig(connect_timeout_ms=1000, backoff_ms_min=5, backoff_ms_max=50)
LOOPBACK = HostPort("127.0.0.1", 0)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Polls a condition each few milliseconds until it holds or the deadline passes."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.005)


class Node:
    """A transport plus everything it received, for assertions."""

    def __init__(self, node_id: int, config: TransportConfig = FAST, **kwargs: Any) -> None:
        self.t = PeerTransport(node_id, "test", LOOPBACK, config, rng=random.Random(1), **kwargs)
        self.received: list[tuple[int, int, Any]] = []
        self.unreachable: list[int] = []
        self.t.on_message(lambda f, g, p: self.received.append((f, g, p)))
        self.t.on_unreachable(self.unreachable.append)

    @property
    def address(self) -> HostPort:
        return self.t.address


async def make_nodes(*ids: int, config: TransportConfig = FAST) -> list[Node]:
    nodes = [Node(i, config) for i in ids]
    for n in nodes:
        await n.t.start()
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.t.add_peer(b.t.node_id, b.address)
    return nodes


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    n1, n2 = await make_nodes(1, 2)
    await wait_until(lambda: n1.t.is_connected(2) and n2.t.is_connected(1))
    yield n1, n2
    await n1.t.stop()
    await n2.t.stop()


async def test_messages_sent_in_one_turn_leave_as_one_frame(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    before = n2.t.stats_for(1).frames_received
    for i in range(50):
        n1.t.send(2, i % 3, {"seq": i, "data": b"x" * i})
    await wait_until(lambda: len(n2.received) == 50)
    assert n2.t.stats_for(1).frames_received - before == 1
    assert n1.t.stats_for(2).frames_sent == 1
    assert [p["seq"] for _, _, p in n2.received] == list(range(50))
    assert n2.received[7] == (1, 7 % 3, {"seq": 7, "data": b"x" * 7})


async def test_sends_in_separate_turns_make_separate_frames(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    for i in range(3):
        n1.t.send(2, 0, i)
        await wait_until(lambda i=i: len(n2.received) == i + 1)
    assert n2.t.stats_for(1).frames_received == 3


async def test_three_nodes_route_by_peer_and_group() -> None:
    nodes = await make_nodes(1, 2, 3)
    try:
        n1, n2, n3 = nodes
        n1.t.send(2, 5, "to-2")
        n1.t.send(3, 6, "to-3")
        n3.t.send(2, 7, ["from-3", 1])
        await wait_until(lambda: len(n2.received) == 2 and len(n3.received) == 1)
        assert sorted(n2.received) == [(1, 5, "to-2"), (3, 7, ["from-3", 1])]
        assert n3.received == [(1, 6, "to-3")]
    finally:
        for n in nodes:
            await n.t.stop()


async def test_full_queue_drops_and_counts() -> None:
    small = TransportConfig(
        queue_messages_max=5, connect_timeout_ms=1000, backoff_ms_min=5, backoff_ms_max=50
    )
    n1, n2 = await make_nodes(1, 2, config=small)
    try:
        await wait_until(lambda: n1.t.is_connected(2))
        for i in range(20):
            n1.t.send(2, 0, i)
        await wait_until(lambda: len(n2.received) == 5)
        assert [p for _, _, p in n2.received] == [0, 1, 2, 3, 4]
        assert n1.t.stats_for(2).messages_dropped_queue_full == 15
    finally:
        await n1.t.stop()
        await n2.t.stop()


async def test_oversize_batch_splits_and_oversize_message_drops() -> None:
    cfg = TransportConfig(frame_bytes_max=4096, connect_timeout_ms=1000, backoff_ms_min=5)
    n1, n2 = await make_nodes(1, 2, config=cfg)
    try:
        await wait_until(lambda: n1.t.is_connected(2))
        for i in range(8):
            n1.t.send(2, 0, bytes([i]) * 1000)  # 8 KB in all: two or more frames
        n1.t.send(2, 0, b"y" * 5000)  # alone bigger than a frame: dropped
        await wait_until(lambda: len(n2.received) == 8)
        assert [p[0] for _, _, p in n2.received] == list(range(8))
        assert n2.t.stats_for(1).frames_received >= 2
        assert n1.t.stats_for(2).messages_dropped_oversize == 1
    finally:
        await n1.t.stop()
        await n2.t.stop()


async def test_reconnects_after_peer_restarts(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    port = n2.address.port
    await n2.t.stop()
    await wait_until(lambda: 2 in n1.unreachable and not n1.t.is_connected(2))
    restarted = Node(2)
    restarted.t.listen = HostPort("127.0.0.1", port)
    await restarted.t.start()
    restarted.t.add_peer(1, n1.address)
    try:
        await wait_until(lambda: n1.t.is_connected(2))
        n1.t.send(2, 9, "after restart")
        await wait_until(lambda: restarted.received == [(1, 9, "after restart")])
        assert n1.t.stats_for(2).connects == 2
    finally:
        await restarted.t.stop()


async def test_unreachable_fires_for_a_dead_address() -> None:
    n1 = Node(1)
    await n1.t.start()
    with socket.socket() as s:  # a port nobody listens on after this block
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    n1.t.add_peer(7, HostPort("127.0.0.1", dead_port))
    try:
        await wait_until(lambda: n1.unreachable.count(7) >= 2)  # it keeps retrying
        assert not n1.t.is_connected(7)
        n1.t.send(7, 0, "lost")  # backing off: dropped at once, counted
        assert n1.t.stats_for(7).messages_dropped_unreachable >= 1
    finally:
        await n1.t.stop()


async def test_peer_closing_during_handshake_is_retried() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)  # read the preamble, then vanish mid-handshake
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    n1 = Node(1)
    await n1.t.start()
    n1.t.add_peer(2, HostPort("127.0.0.1", port))
    try:
        await wait_until(lambda: n1.unreachable.count(2) >= 3)  # the link task lives on
        assert n1.t.stats_for(2).connect_failures >= 3
    finally:
        await n1.t.stop()
        server.close()


async def test_handshake_refused_on_protocol_version_mismatch() -> None:
    n2 = Node(2)
    future = Node(1, protocol_version=PROTOCOL_VERSION + 1)
    await n2.t.start()
    await future.t.start()
    future.t.add_peer(2, n2.address)
    try:
        await wait_until(lambda: n2.t.handshakes_refused >= 1 and 2 in future.unreachable)
        future.t.send(2, 0, "never")
        assert not future.t.is_connected(2)
        assert n2.received == []
    finally:
        await future.t.stop()
        await n2.t.stop()


async def test_handshake_refused_on_cluster_mismatch() -> None:
    n2 = Node(2)
    other = Node(1)
    other.t.cluster_id = "another-cluster"
    await n2.t.start()
    await other.t.start()
    other.t.add_peer(2, n2.address)
    try:
        await wait_until(lambda: n2.t.handshakes_refused >= 1 and 2 in other.unreachable)
        assert not other.t.is_connected(2)
    finally:
        await other.t.stop()
        await n2.t.stop()


async def _raw_peer(target: HostPort, from_id: int) -> tuple[Any, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    hello = {"cluster": "test", "from": from_id, "to": 2}
    writer.write(MAGIC + bytes([PROTOCOL_VERSION]) + encode_frame(hello))
    preamble = await reader.readexactly(5)
    assert preamble == MAGIC + bytes([PROTOCOL_VERSION])
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    reply = msgpack.unpackb(await reader.readexactly(length))
    assert reply["ok"] is True, reply
    return reader, writer


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # 0xc1 is never valid msgpack
        struct.pack(">I", 2**31),  # longer than frame_bytes_max
        encode_frame({"not": "a list"}),
        encode_frame([[1]]),  # item is not a pair
    ],
)
async def test_malformed_frame_closes_only_that_connection(
    pair: tuple[Node, Node], garbage: bytes
) -> None:
    n1, n2 = pair
    reader, writer = await _raw_peer(n2.address, from_id=3)
    writer.write(encode_frame([[4, "valid first"]]) + garbage)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # n2 closed this connection
    writer.close()
    assert (3, 4, "valid first") in n2.received
    assert n2.t.stats_for(3).malformed_frames == 1
    n1.t.send(2, 1, "still fine")
    await wait_until(lambda: (1, 1, "still fine") in n2.received)
    assert n1.t.is_connected(2)


async def test_link_filter_drops_outbound_and_inbound(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    n1.t.link_filter = LinkFilter(rng=random.Random(3))
    n1.t.link_filter.cut(2)
    n1.t.send(2, 0, "dropped out")
    n2.t.send(1, 0, "dropped in")
    await wait_until(lambda: n1.t.stats_for(2).messages_filtered_in == 1)
    assert n1.t.stats_for(2).messages_filtered_out == 1
    assert n1.received == [] and n2.received == []
    n1.t.link_filter.heal(2)
    n1.t.send(2, 0, "through")
    n2.t.send(1, 0, "back")
    await wait_until(lambda: n1.received == [(2, 0, "back")] and n2.received == [(1, 0, "through")])


async def test_link_filter_delay_still_delivers(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    n1.t.link_filter = LinkFilter()
    n1.t.link_filter.set_rule(2, "out", delay_ms=20)
    n1.t.send(2, 0, "late")
    n1.t.send(2, 0, "later")
    assert n1.t.stats_for(2).frames_sent == 0  # held back, not queued yet
    await wait_until(lambda: [p for *_, p in n2.received] == ["late", "later"])


async def test_partial_loss_is_reproducible_with_a_seed() -> None:
    def outcomes(seed: int) -> list[bool]:
        f = LinkFilter(rng=random.Random(seed))
        f.set_rule(2, "out", loss_ratio=0.5)
        return [f.decide(2, 0, "out") is None for _ in range(100)]

    assert outcomes(42) == outcomes(42)
    assert 20 < sum(outcomes(42)) < 80


async def test_real_processes_link_up_and_relink_after_restart(tmp_path: Path) -> None:
    """Three `python -m broker serve` processes (through tests/harness.py) connect their
    Raft links; a killed node's link goes down and comes back when it restarts."""
    cluster = Cluster(3, tmp_path, ready_path="/healthz",
                      settings={"peer_backoff_ms_max": "200"})  # fmt: skip

    async def links_of(node_id: int) -> dict[str, dict[str, int]]:
        status, body = await asyncio.to_thread(cluster.node(node_id).http_get, "/v1/cluster")
        assert status == 200
        links: dict[str, dict[str, int]] = json.loads(body)["peer_links"]
        return links

    async def wait_links(node_id: int, expected: dict[str, int]) -> None:
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            links = await links_of(node_id)
            if {p: links.get(p, {}).get("connected", 0) for p in expected} == expected:
                return
            assert asyncio.get_running_loop().time() < deadline, (links, cluster.logs())
            await asyncio.sleep(0.05)

    try:
        await cluster.astart(timeout_s=20)
        assert len(cluster.bootstrap.split(",")) == 3
        await wait_links(1, {"2": 1, "3": 1})
        cluster.kill(3)
        await wait_links(1, {"2": 1, "3": 0})
        cluster.pause(2)
        cluster.resume(2)
        await cluster.arestart(3)
        await wait_links(1, {"2": 1, "3": 1})
        await wait_links(3, {"1": 1, "2": 1})
    finally:
        codes = await cluster.astop_all()
    assert codes == {1: 0, 2: 0, 3: 0}, cluster.logs()


@pytest.mark.parametrize("error", [RuntimeError("handler is closed"), ValueError("a bug")])
async def test_a_failing_connection_never_ends_the_link(
    pair: tuple[Node, Node], error: Exception
) -> None:
    """uvloop raises RuntimeError when a reset closed the transport under a write; that,
    or any bug, must cost one connection and a reconnect, not the link for good."""
    n1, n2 = pair
    link = n1.t._links[2]
    pump = link._pump
    failed: list[int] = []

    async def fails_once(writer: asyncio.StreamWriter) -> None:
        if not failed:
            failed.append(1)
            raise error
        await pump(writer)

    link._pump = fails_once  # type: ignore[method-assign]
    n2.t._inbound[1].close()  # the next connection runs the failing pump
    await wait_until(lambda: failed == [1] and n1.t.stats_for(2).connects == 3)
    n1.t.send(2, 1, "after")
    await wait_until(lambda: (1, 1, "after") in n2.received)


async def test_peer_lost_fires_when_the_peer_closes_its_connection(
    pair: tuple[Node, Node],
) -> None:
    n1, n2 = pair
    lost: list[int] = []
    n1.t.on_peer_lost(lost.append)
    await n2.t.stop()
    await wait_until(lambda: lost == [2])
    lost_by_2: list[int] = []
    n2.t.on_peer_lost(lost_by_2.append)
    await n1.t.stop()  # a stopping transport reports nobody lost
    assert lost_by_2 == []
