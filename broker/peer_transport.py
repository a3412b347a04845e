"""Broker-to-broker transport for Raft messages: batched msgpack frames over TCP.

Theory of operation
-------------------
Connections. Every node dials every peer and uses that outbound connection only to send;
it accepts inbound connections from its peers only to receive. So each ordered pair
(sender -> receiver) has exactly one TCP connection, owned by the sender:

    node 1 --(1's link to 2)--> node 2        node 1 <--(2's link to 1)-- node 2

This removes the "who dials whom" race of a shared bidirectional connection (both sides
dialling at once after a partition heals), makes each direction fail and recover on its
own (an asymmetric partition is exactly one broken link), and keeps the sender in charge
of its queue, reconnects and `on_unreachable` reports. Raft needs nothing more: every
message is one-way, and responses travel on the other direction's link.

Wire format. Both directions of a connection start with a preamble, `b"RFTK"` plus one
protocol-version byte, then length-prefixed frames: a 4-byte big-endian body length and a
msgpack body. The dialler's first frame is a hello `{cluster, from, to}`; the acceptor
answers with its own preamble and `{ok, reason, node}`. A peer with another protocol
version or cluster id, or that thinks it dialled a different node, is refused with a
reason that both sides log. After the handshake the acceptor never writes again; every
frame from the dialler is a batch, a msgpack array of `[group_id, payload]` pairs.
Payloads are opaque msgpack-serialisable values (tuples come back as lists).

Batching. `send()` never blocks and never awaits: it appends to the peer's bounded queue
and wakes that peer's writer task. The writer runs on a later loop turn, so everything
sent to a peer during one turn leaves in one frame (split only at `batch_messages_max`
messages or `frame_bytes_max` bytes). When the queue is full the message is dropped and
counted: Raft retransmits, and an unbounded queue would turn a slow peer into unbounded
memory. Messages to a peer that is known to be down (backing off) are dropped at once, and
a link that fails discards what it had queued: those messages would be stale by the time
the peer is back.

Failures. A failed connect, handshake or established link fires
`on_unreachable(peer_id)` (the driver calls `RawNode.report_unreachable`) and the link
retries after an exponential backoff with jitter. An inbound frame that is too big, or
does not decode to a list of `[int, payload]` pairs, closes that one connection and
nothing else; the sender reconnects.

A peer that closes its own connection to us (end of file, reset) has exited or
restarted: that fires `on_peer_lost(peer_id)`, which lets followers of that peer's
groups elect a new leader without waiting out an election timeout. A connection we
close ourselves (a newer one from the same peer replaced it, or we are stopping) does
not fire it.

Fault injection. An optional `LinkFilter` is consulted for every message sent or
received and may drop or delay it; it is `None` (no cost) unless fault injection is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from broker.config import BrokerConfig, HostPort

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAGIC = b"RFTK"
_PREAMBLE_BYTES = len(MAGIC) + 1
_HEADER = struct.Struct(">I")
_HELLO_BYTES_MAX = 64 * 1024

MessageCallback = Callable[[int, int, Any], None]
UnreachableCallback = Callable[[int], None]
Direction = Literal["out", "in"]


class HandshakeRefused(Exception):
    """The other side, or this side, refused the connection; the reason says why."""


class MalformedFrame(Exception):
    """An inbound frame broke the wire format; its connection is closed."""


@dataclass(frozen=True, slots=True)
class TransportConfig:
    queue_messages_max: int = 10_000
    frame_bytes_max: int = 64 * 1024 * 1024
    batch_messages_max: int = 4096
    connect_timeout_ms: int = 2000
    backoff_ms_min: int = 50
    backoff_ms_max: int = 2000
    delayed_messages_max: int = 10_000  # bound on messages held back by a LinkFilter delay

    @classmethod
    def from_broker_config(cls, cfg: BrokerConfig) -> TransportConfig:
        return cls(
            queue_messages_max=cfg.peer_queue_messages_max,
            frame_bytes_max=cfg.peer_frame_bytes_max,
            connect_timeout_ms=cfg.peer_connect_timeout_ms,
            backoff_ms_min=cfg.peer_backoff_ms_min,
            backoff_ms_max=cfg.peer_backoff_ms_max,
        )


@dataclass(slots=True)
class PeerStats:
    """Counters for one peer; outbound ones count this node's link to it, inbound ones the
    peer's link to this node. Read by metrics at scrape time."""

    connected: int = 0
    connects: int = 0
    connect_failures: int = 0
    frames_sent: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_dropped_queue_full: int = 0
    messages_dropped_unreachable: int = 0
    messages_dropped_oversize: int = 0
    messages_filtered_out: int = 0
    frames_received: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    messages_filtered_in: int = 0
    malformed_frames: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class LinkRule:
    loss_ratio: float = 0.0  # 1.0 drops everything
    delay_ms: int = 0


@dataclass
class LinkFilter:
    """Fault injection: per-peer, per-direction loss and delay. Off unless installed.

    `decide()` returns None to drop the message, or the delay in milliseconds (0: now).
    The RNG is injected so a test's losses are reproducible.
    """

    rng: random.Random = field(default_factory=random.Random)
    _rules: dict[tuple[int, Direction], LinkRule] = field(default_factory=dict)

    def set_rule(
        self, peer_id: int, direction: Direction, *, loss_ratio: float = 0.0, delay_ms: int = 0
    ) -> None:
        assert 0.0 <= loss_ratio <= 1.0 and delay_ms >= 0
        self._rules[(peer_id, direction)] = LinkRule(loss_ratio, delay_ms)

    def cut(self, peer_id: int) -> None:
        """Drops all traffic both ways with `peer_id` (a symmetric partition)."""
        self.set_rule(peer_id, "out", loss_ratio=1.0)
        self.set_rule(peer_id, "in", loss_ratio=1.0)

    def heal(self, peer_id: int | None = None) -> None:
        if peer_id is None:
            self._rules.clear()
            return
        self._rules.pop((peer_id, "out"), None)
        self._rules.pop((peer_id, "in"), None)

    def rules(self) -> dict[str, dict[str, float]]:
        return {
            f"{peer}/{direction}": {"loss_ratio": r.loss_ratio, "delay_ms": r.delay_ms}
            for (peer, direction), r in sorted(self._rules.items())
        }

    def decide(self, peer_id: int, group_id: int, direction: Direction) -> int | None:
        rule = self._rules.get((peer_id, direction))
        if rule is None:
            return 0
        if rule.loss_ratio >= 1.0 or (
            rule.loss_ratio > 0.0 and self.rng.random() < rule.loss_ratio
        ):
            return None
        return rule.delay_ms


def encode_frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, frame_bytes_max: int) -> tuple[Any, int]:
    """Reads one frame; returns (decoded body, body length). EOF raises IncompleteReadError."""
    (length,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if length == 0 or length > frame_bytes_max:
        raise MalformedFrame(f"frame length {length} outside 1..{frame_bytes_max}")
    body = await reader.readexactly(length)
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False), length
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise MalformedFrame(f"undecodable msgpack body: {exc!r}") from None


class _Link:
    """This node's outbound connection to one peer: queue, writer task, reconnects."""

    def __init__(self, transport: PeerTransport, peer_id: int, address: HostPort) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.address = address
        self.stats = transport.stats_for(peer_id)
        self.queue: deque[tuple[int, Any]] = deque()
        self.state: Literal["connecting", "connected", "backoff", "stopped"] = "connecting"
        self.wake = asyncio.Event()
        self.broken = False
        self.last_error = ""
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"peer-link-{peer_id}")
        self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # The link loop only ends by cancellation; anything else is a bug worth a loud log.
        if not task.cancelled() and task.exception() is not None:
            self.state = "stopped"
            log.error("peer link task died", exc_info=task.exception(),
                      extra={"peer": self.peer_id})  # fmt: skip

    def enqueue(self, group_id: int, payload: Any) -> None:
        if self.state in ("backoff", "stopped"):
            self.stats.messages_dropped_unreachable += 1
            return
        if len(self.queue) >= self.transport.config.queue_messages_max:
            self.stats.messages_dropped_queue_full += 1
            return
        self.queue.append((group_id, payload))
        if not self.wake.is_set():
            self.wake.set()

    async def _run(self) -> None:
        cfg = self.transport.config
        attempt = 0
        while True:
            self.state = "connecting"
            try:
                reader, writer = await asyncio.wait_for(
                    self._connect(), cfg.connect_timeout_ms / 1000
                )
            except (
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                HandshakeRefused,
                MalformedFrame,
                RuntimeError,
            ) as exc:
                refused = isinstance(exc, HandshakeRefused)
                self._failed(f"connect to {self.address} failed: {exc!r}", refused)
                attempt += 1
                await asyncio.sleep(self._backoff_s(attempt, refused))
                continue
            attempt = 0
            try:
                await self._serve(reader, writer)
            except Exception as exc:
                # A bug must cost one connection, never the link for good: a dead link
                # task would leave the peer unreachable until this process restarts.
                log.exception("peer link failed unexpectedly", extra={"peer": self.peer_id})
                self._failed(f"link to {self.address} failed: {exc!r}", refused=False)
            await asyncio.sleep(self._backoff_s(0))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.state = "connected"
        self.broken = False
        self.stats.connected = 1
        self.stats.connects += 1
        if self.last_error:
            log.info("peer link up", extra={"peer": self.peer_id, "addr": str(self.address)})
        self.last_error = ""
        watcher = asyncio.get_running_loop().create_task(self._watch_eof(reader))
        try:
            await self._pump(writer)
        except (OSError, ConnectionError, RuntimeError) as exc:
            # RuntimeError: uvloop's "handler is closed" when the peer's reset closed the
            # transport under a write. Any of these ends this connection, never the link.
            self._failed(f"link to {self.address} broke: {exc!r}", refused=False)
        finally:
            self.stats.connected = 0
            watcher.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.transport
        reader, writer = await asyncio.open_connection(self.address.host, self.address.port)
        try:
            hello = {"cluster": t.cluster_id, "from": t.node_id, "to": self.peer_id}
            writer.write(MAGIC + bytes([t.protocol_version]) + encode_frame(hello))
            preamble = await reader.readexactly(_PREAMBLE_BYTES)
            if preamble[:4] != MAGIC:
                raise HandshakeRefused(f"peer is not a Raftka raft listener ({preamble!r})")
            reply, _ = await read_frame(reader, _HELLO_BYTES_MAX)
            if preamble[4] != t.protocol_version:
                raise HandshakeRefused(
                    f"peer speaks protocol version {preamble[4]}, this node "
                    f"{t.protocol_version}: {reply.get('reason', '') if isinstance(reply, dict) else ''}"
                )
            if not isinstance(reply, dict) or reply.get("ok") is not True:
                reason = reply.get("reason") if isinstance(reply, dict) else reply
                raise HandshakeRefused(f"peer refused: {reason}")
            return reader, writer
        except BaseException:
            writer.close()
            raise

    async def _watch_eof(self, reader: asyncio.StreamReader) -> None:
        # The acceptor never writes after the handshake: any read result means the
        # connection is finished (EOF) or the peer misbehaves. Either way, reconnect.
        with contextlib.suppress(OSError):
            await reader.read(1)
        self.broken = True
        self.wake.set()

    async def _pump(self, writer: asyncio.StreamWriter) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
            if self.broken:
                raise ConnectionResetError("peer closed the connection")
            batch = self._take_batch()
            for body in self._encode(batch):
                writer.write(_HEADER.pack(len(body)))
                writer.write(body)
                self.stats.frames_sent += 1
                self.stats.bytes_sent += len(body) + _HEADER.size
            await writer.drain()

    def _take_batch(self) -> list[tuple[int, Any]]:
        limit = self.transport.config.batch_messages_max
        if len(self.queue) <= limit:
            batch = list(self.queue)
            self.queue.clear()
            return batch
        return [self.queue.popleft() for _ in range(limit)]

    def _encode(self, batch: list[tuple[int, Any]]) -> list[bytes]:
        """Packs a batch into as few frames as fit `frame_bytes_max` (usually one)."""
        try:
            body = msgpack.packb(batch, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            log.exception("peer message not msgpack-serialisable; batch dropped",
                          extra={"peer": self.peer_id, "messages": len(batch)})  # fmt: skip
            self.stats.messages_dropped_oversize += len(batch)
            return []
        if len(body) <= self.transport.config.frame_bytes_max:
            self.stats.messages_sent += len(batch)
            return [body]
        if len(batch) == 1:
            log.warning("peer message larger than the frame bound; dropped",
                        extra={"peer": self.peer_id, "group": batch[0][0], "bytes": len(body)})  # fmt: skip
            self.stats.messages_dropped_oversize += 1
            return []
        half = len(batch) // 2
        return self._encode(batch[:half]) + self._encode(batch[half:])

    def _failed(self, error: str, refused: bool) -> None:
        self.state = "backoff"
        self.stats.connect_failures += 1
        self.stats.messages_dropped_unreachable += len(self.queue)
        self.queue.clear()
        level = logging.ERROR if refused else logging.WARNING
        # Log a failure once when it starts or changes, not on every retry.
        if error != self.last_error:
            log.log(level, "peer unreachable", extra={"peer": self.peer_id, "error": error})
        self.last_error = error
        self.transport._report_unreachable(self.peer_id)

    def _backoff_s(self, attempt: int, refused: bool = False) -> float:
        """Exponential in the attempt number; a refusal (a config mismatch that will not
        heal by itself soon) waits the longest."""
        cfg = self.transport.config
        ceiling = float(cfg.backoff_ms_max)
        if not refused:
            ceiling = min(ceiling, cfg.backoff_ms_min * 2.0 ** min(attempt, 30))
        # Equal jitter: half fixed, half random, so peers that failed together spread out.
        return (ceiling / 2 + self.transport.rng.uniform(0, ceiling / 2)) / 1000

    async def stop(self) -> None:
        self.state = "stopped"
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.stats.connected = 0


class PeerTransport:
    """Sends and receives Raft messages tagged with a group id to and from peer nodes.

    Lifecycle: construct, register callbacks, `await start()` (binds the listener),
    `add_peer()` for each peer (at any time), `send()`, `await stop()`.
    """

    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        listen: HostPort,
        config: TransportConfig | None = None,
        *,
        rng: random.Random | None = None,
        protocol_version: int = PROTOCOL_VERSION,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.listen = listen
        self.config = config or TransportConfig()
        self.rng = rng or random.Random()
        self.protocol_version = protocol_version  # a parameter only so tests can mismatch it
        self.link_filter: LinkFilter | None = None
        self.handshakes_refused = 0
        self.messages_to_unknown_peer = 0
        self._links: dict[int, _Link] = {}
        self._stats: dict[int, PeerStats] = {}
        self._inbound: dict[int, asyncio.StreamWriter] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._delayed: set[asyncio.TimerHandle] = set()
        self._on_message: MessageCallback | None = None
        self._on_unreachable: UnreachableCallback | None = None
        self._on_peer_lost: UnreachableCallback | None = None
        self._stopping = False
        self._server: asyncio.Server | None = None

    # Wiring ------------------------------------------------------------------------------

    def on_message(self, callback: MessageCallback) -> None:
        """`callback(from_id, group_id, payload)` for every inbound message, in order."""
        self._on_message = callback

    def on_unreachable(self, callback: UnreachableCallback) -> None:
        """`callback(peer_id)` whenever a link to the peer fails to connect or breaks."""
        self._on_unreachable = callback

    def on_peer_lost(self, callback: UnreachableCallback) -> None:
        """`callback(peer_id)` when the peer closes its connection to us (it went away)."""
        self._on_peer_lost = callback

    @property
    def address(self) -> HostPort:
        """The bound listener address (the real port when `listen` asked for port 0)."""
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return HostPort(host, port)

    async def start(self) -> None:
        assert self._server is None
        self._server = await asyncio.start_server(
            self._accept, self.listen.host, self.listen.port, reuse_address=True
        )
        log.info("raft transport listening", extra={"addr": str(self.address)})

    def add_peer(self, peer_id: int, address: HostPort) -> None:
        """Starts (or re-targets) the link to `peer_id`. Needs a running loop."""
        assert peer_id != self.node_id, "a node does not dial itself"
        old = self._links.get(peer_id)
        if old is not None:
            if old.address == address:
                return
            asyncio.get_running_loop().create_task(old.stop())
        self._links[peer_id] = _Link(self, peer_id, address)

    async def remove_peer(self, peer_id: int) -> None:
        link = self._links.pop(peer_id, None)
        if link is not None:
            await link.stop()

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for handle in self._delayed:
            handle.cancel()
        self._delayed.clear()
        for link in list(self._links.values()):
            await link.stop()
        self._links.clear()
        for writer in list(self._inbound.values()):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # Sending ----------------------------------------------------------------------------

    def send(self, peer_id: int, group_id: int, payload: Any) -> None:
        """Queues one message for `peer_id`. Never blocks; may drop (and count) instead."""
        link = self._links.get(peer_id)
        if link is None:
            self.messages_to_unknown_peer += 1
            return
        if self.link_filter is not None:
            delay_ms = self.link_filter.decide(peer_id, group_id, "out")
            if delay_ms is None:
                link.stats.messages_filtered_out += 1
                return
            if delay_ms > 0:
                self._later(delay_ms, link.enqueue, group_id, payload)
                return
        link.enqueue(group_id, payload)

    def is_connected(self, peer_id: int) -> bool:
        link = self._links.get(peer_id)
        return link is not None and link.state == "connected"

    def stats_for(self, peer_id: int) -> PeerStats:
        stats = self._stats.get(peer_id)
        if stats is None:
            stats = self._stats[peer_id] = PeerStats()
        return stats

    def stats(self) -> dict[int, dict[str, int]]:
        """{peer_id: counters}, for metrics.PeerTransportCollector and /v1/cluster."""
        return {peer: s.as_dict() for peer, s in self._stats.items()}

    def _later(self, delay_ms: int, fn: Callable[..., None], *args: Any) -> None:
        if len(self._delayed) >= self.config.delayed_messages_max:
            return  # a delay rule is fault injection: losing the excess is in its spirit

        def fire() -> None:
            self._delayed.discard(handle)
            fn(*args)

        handle = asyncio.get_running_loop().call_later(delay_ms / 1000, fire)
        self._delayed.add(handle)

    def _report_unreachable(self, peer_id: int) -> None:
        if self._on_unreachable is not None:
            try:
                self._on_unreachable(peer_id)
            except Exception:
                log.exception("on_unreachable callback failed", extra={"peer": peer_id})

    def _report_peer_lost(self, peer_id: int) -> None:
        if self._on_peer_lost is not None and not self._stopping:
            try:
                self._on_peer_lost(peer_id)
            except Exception:
                log.exception("on_peer_lost callback failed", extra={"peer": peer_id})

    # Receiving --------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._handle_inbound(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        from_id = None
        try:
            from_id = await asyncio.wait_for(
                self._accept_handshake(reader, writer), self.config.connect_timeout_ms / 1000
            )
            old = self._inbound.get(from_id)
            if old is not None:
                old.close()  # the peer reconnected: its newest connection wins
            self._inbound[from_id] = writer
            await self._receive(from_id, reader)
        except HandshakeRefused as exc:
            self.handshakes_refused += 1
            log.error("refused peer connection", extra={"remote": str(peername), "error": str(exc)})
        except MalformedFrame as exc:
            if from_id is not None:
                self.stats_for(from_id).malformed_frames += 1
            log.warning("malformed frame from peer; closing its connection",
                        extra={"peer": from_id, "remote": str(peername), "error": str(exc)})  # fmt: skip
        except (asyncio.IncompleteReadError, OSError, TimeoutError):
            # The peer went away (its link will reconnect when it is back), unless this
            # connection was replaced by a newer one or we are the ones stopping.
            if from_id is not None and self._inbound.get(from_id) is writer:
                self._report_peer_lost(from_id)
        finally:
            if from_id is not None and self._inbound.get(from_id) is writer:
                del self._inbound[from_id]
            writer.close()

    async def _accept_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int:
        preamble = await reader.readexactly(_PREAMBLE_BYTES)
        if preamble[:4] != MAGIC:
            raise HandshakeRefused(f"not a Raftka peer (preamble {preamble!r})")
        hello, _ = await read_frame(reader, _HELLO_BYTES_MAX)
        reason = self._check_hello(preamble[4], hello)
        reply = {"ok": reason == "", "reason": reason, "node": self.node_id}
        writer.write(MAGIC + bytes([self.protocol_version]) + encode_frame(reply))
        await writer.drain()
        if reason:
            raise HandshakeRefused(reason)
        from_id: int = hello["from"]
        return from_id

    def _check_hello(self, version: int, hello: Any) -> str:
        """Returns why the hello is refused, or "" to accept it."""
        if version != self.protocol_version:
            return f"protocol version {version} not supported (this node speaks {self.protocol_version})"  # fmt: skip
        if not isinstance(hello, dict) or not all(k in hello for k in ("cluster", "from", "to")):
            return f"malformed hello {hello!r}"
        if hello["cluster"] != self.cluster_id:
            return f"cluster id {hello['cluster']!r} differs from this node's {self.cluster_id!r}"
        if hello["to"] != self.node_id:
            return f"dialled node {hello['to']!r} but this is node {self.node_id}"
        sender = hello["from"]
        if not isinstance(sender, int) or isinstance(sender, bool) or sender == self.node_id:
            return f"bad sender node id {sender!r}"
        return ""

    async def _receive(self, from_id: int, reader: asyncio.StreamReader) -> None:
        stats = self.stats_for(from_id)
        while True:
            batch, length = await read_frame(reader, self.config.frame_bytes_max)
            if not isinstance(batch, list):
                raise MalformedFrame(f"frame body is {type(batch).__name__}, not a list")
            for item in batch:
                if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int):
                    raise MalformedFrame(f"batch item {item!r:.80} is not [group_id, payload]")
            stats.frames_received += 1
            stats.bytes_received += length + _HEADER.size
            for group_id, payload in batch:
                stats.messages_received += 1
                self._deliver_inbound(from_id, group_id, payload, stats)

    def _deliver_inbound(self, from_id: int, group_id: int, payload: Any, stats: PeerStats) -> None:
        if self.link_filter is not None:
            delay_ms = self.link_filter.decide(from_id, group_id, "in")
            if delay_ms is None:
                stats.messages_filtered_in += 1
                return
            if delay_ms > 0:
                self._later(delay_ms, self._deliver, from_id, group_id, payload)
                return
        self._deliver(from_id, group_id, payload)

    def _deliver(self, from_id: int, group_id: int, payload: Any) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(from_id, group_id, payload)
        except Exception:
            log.exception("on_message callback failed", extra={"peer": from_id, "group": group_id})
