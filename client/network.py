"""One TCP connection to one broker: pipelined requests matched by correlation id.

Theory of operation. `BrokerConnection` is an asyncio.Protocol (not a stream
pair) around the wire layer's sans-I/O `ClientConnection`: bytes arrive in
`data_received`, the sans-I/O object turns them into decoded responses matched
to their requests, and each response's correlation id picks the waiting future
out of a dict. There is no reader task and no per-chunk await, which matters at
the rates the producer and fetcher push. Sending is synchronous
(`transport.write`), so any number of requests can be in flight on one
connection (pipelining); Kafka answers them in order, and the sans-I/O layer
treats anything else as the peer's protocol error.

Every
request has a deadline (`request_timeout_ms`); a timeout fails that request's
future and closes the connection, since a response still on its way would
otherwise be matched to nothing and the broker's view of the connection is
unknown. Closing (or losing) the connection fails every pending future with
KafkaConnectionError; callers retry through the client, which reconnects.

Writes respect transport flow control: when the kernel buffer is full,
`wait_writable()` blocks producers of requests until it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from client.errors import KafkaConnectionError, KafkaTimeoutError
from client.protocol.connection import ClientConnection
from client.protocol.exceptions import ProtocolError

log = logging.getLogger(__name__)

FRAME_BYTES_MAX_DEFAULT = 256 * 1024 * 1024


class _Pending:
    __slots__ = ("api_key", "future", "timer", "version")

    def __init__(
        self,
        api_key: int,
        version: int,
        future: asyncio.Future[Any],
        timer: asyncio.TimerHandle | None,
    ) -> None:
        self.api_key = api_key
        self.version = version
        self.future = future
        self.timer = timer


class BrokerConnection(asyncio.Protocol):
    """A connection to one broker. Create with `await BrokerConnection.open(...)`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        node_id: int,
        client_id: str | None,
        request_timeout_ms: int,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
    ) -> None:
        self.node_id = node_id
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.frame_bytes_max = frame_bytes_max
        self.api_versions: dict[int, int] = {}  # api key -> negotiated version
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._wire = ClientConnection(client_id, frame_bytes_max, inflight_requests_max=1 << 20)
        self._pending: dict[int, _Pending] = {}
        self._closed: asyncio.Future[None] = loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._close_callbacks: list[Callable[[BrokerConnection], None]] = []

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        node_id: int,
        client_id: str | None = "raftka",
        request_timeout_ms: int = 30000,
        connect_timeout_ms: int = 10000,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
    ) -> BrokerConnection:
        loop = asyncio.get_running_loop()
        conn = cls(
            loop,
            node_id=node_id,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            frame_bytes_max=frame_bytes_max,
        )
        try:
            async with asyncio.timeout(connect_timeout_ms / 1000):
                await loop.create_connection(lambda: conn, host, port)
        except (OSError, TimeoutError) as e:
            raise KafkaConnectionError(f"cannot connect to {host}:{port}: {e}") from e
        return conn

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._wire.receive_data(data)
        except ProtocolError as e:
            self._fail(KafkaConnectionError(f"node {self.node_id}: {e}"))
            return
        for event in events:
            pending = self._pending.pop(event.correlation_id, None)
            if pending is None:
                continue  # timed out already (the connection is closing)
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result(event.response)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(KafkaConnectionError(f"connection to node {self.node_id} lost: {exc}"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- requests ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.done()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def send(
        self,
        request: Any,
        version: int,
        *,
        expect_response: bool = True,
        timeout_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        """Write `request` now; the future resolves to the decoded response body."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._closed.done() or self._transport is None:
            future.set_exception(KafkaConnectionError(f"connection to {self.node_id} closed"))
            return future
        correlation_id, frame = self._wire.send_request(
            request, version=version, expect_response=expect_response
        )
        if expect_response:
            timeout = self.request_timeout_ms if timeout_ms is None else timeout_ms
            timer = self._loop.call_later(timeout / 1000, self._timed_out, correlation_id)
            self._pending[correlation_id] = _Pending(request.API_KEY, version, future, timer)
        else:
            future.set_result(None)
        self._transport.write(frame)
        return future

    async def request(self, request: Any, version: int, timeout_ms: int | None = None) -> Any:
        return await self.send(request, version, timeout_ms=timeout_ms)

    async def wait_writable(self) -> None:
        await self._writable.wait()

    def _timed_out(self, correlation_id: int) -> None:
        pending = self._pending.pop(correlation_id, None)
        if pending is None:
            return
        pending.timer = None
        if not pending.future.done():
            pending.future.set_exception(
                KafkaTimeoutError(f"request {pending.api_key} to node {self.node_id} timed out")
            )
        self._fail(KafkaConnectionError(f"node {self.node_id}: closed after a request timeout"))

    # ---- closing -------------------------------------------------------------------------

    def add_close_callback(self, callback: Callable[[BrokerConnection], None]) -> None:
        self._close_callbacks.append(callback)

    def _fail(self, exc: Exception) -> None:
        if self._closed.done():
            return
        self._closed.set_result(None)
        self._writable.set()
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.timer is not None:
                p.timer.cancel()
            if not p.future.done():
                p.future.set_exception(exc)
        if self._transport is not None:
            self._transport.close()
        for callback in self._close_callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("close callback failed")

    def close(self) -> None:
        """Close now; pending requests fail with KafkaConnectionError."""
        self._fail(KafkaConnectionError(f"connection to node {self.node_id} closed"))

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)
