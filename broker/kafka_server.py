"""The Kafka listener: one asyncio task pair per client connection around the sans-I/O codec.

Each connection has a reader that feeds bytes to `ServerConnection` and starts one
handler task per decoded request, so requests for different partitions proceed
concurrently (a long-polling Fetch does not hold up a Produce behind it on another
connection, and on the same connection pipelined requests overlap). A writer sends the
responses strictly in request order, as Kafka clients require, by awaiting the handler
tasks in the order their requests arrived.

Bounds: at most `inflight_requests_per_connection_max` requests per connection are being
handled (the reader stops reading until one finishes: back-pressure on the socket), at
most `connections_max` connections (more are closed at once), and no frame above
`frame_bytes_max`. Bad bytes close only their connection; the node lives on.

acks=0 Produce requests get no response (Kafka's rule); the handler returns None.

Memory after a burst: a burst of produce or fetch traffic allocates many 256 KiB buffers
(socket reads, frames, batches). glibc raises its mmap threshold as large blocks are
freed, so later ones come from the heap, and free() gives heap memory back to the OS only
from its top: after the burst, tens of MB stay resident although Python holds none of it.
`HeapTrimmer` calls malloc_trim(0) once the listener has been idle for a moment after
traffic, which returns every free page (measured: 87 MB back to 44 MB after the bench's
load). Without glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from client.protocol.api_keys import ApiKey, api_versions_unsupported_response
from client.protocol.connection import RequestReceived, ServerConnection, UnsupportedRequest
from client.protocol.exceptions import ProtocolError
from client.protocol.headers import RequestHeader

log = logging.getLogger("raftka.kafka")

READ_CHUNK_BYTES = 256 * 1024
#: Quiet time after client traffic before freed heap is handed back to the OS.
HEAP_TRIM_IDLE_S = 1.0
#: How often the listener checks whether it went quiet.
HEAP_TRIM_CHECK_S = 0.25


def _glibc_malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0) as a callable, or None where there is no such function."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Returns freed heap to the OS once traffic has stopped for `idle_s` (see module doc).

    Trims once per burst: `note_traffic` marks a burst, `maybe_trim` trims when the last
    traffic is at least `idle_s` old and clears the mark, so an idle node costs nothing.
    """

    def __init__(
        self, idle_s: float = HEAP_TRIM_IDLE_S, trim: Callable[[], object] | None = None
    ) -> None:
        self.idle_s = idle_s
        self._trim = trim if trim is not None else _glibc_malloc_trim()
        self._last_traffic_s = 0.0
        self._dirty = False
        self.trims = 0

    def note_traffic(self, now_s: float) -> None:
        self._last_traffic_s = now_s
        self._dirty = True

    def maybe_trim(self, now_s: float) -> bool:
        """Trim if a burst ended at least `idle_s` ago; True when it trimmed."""
        if not self._dirty or now_s - self._last_traffic_s < self.idle_s:
            return False
        self._dirty = False
        if self._trim is None:
            return False
        self._trim()
        self.trims += 1
        return True


@dataclass(frozen=True, slots=True)
class RequestContext:
    header: RequestHeader
    client_host: str
    listener_name: str
    frame_bytes: int

    @property
    def version(self) -> int:
        return self.header.request_api_version

    @property
    def client_id(self) -> str:
        return self.header.client_id or ""


Handler = Callable[[Any, RequestContext], Awaitable[Any]]


class KafkaServer:
    """Accepts Kafka clients on one listener and dispatches requests to `handlers`."""

    def __init__(
        self,
        listener_name: str,
        host: str,
        port: int,
        handlers: dict[int, Handler],
        frame_bytes_max: int,
        connections_max: int,
        inflight_max: int,
        on_request: Callable[[int, int, int, float], None] | None = None,
        heap_trimmer: HeapTrimmer | None = None,
    ) -> None:
        self.listener_name = listener_name
        self.host = host
        self.port = port
        self.handlers = handlers
        self.frame_bytes_max = frame_bytes_max
        self.connections_max = connections_max
        self.inflight_max = inflight_max
        self.on_request = on_request
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.connections_refused = 0
        self.heap_trimmer = heap_trimmer if heap_trimmer is not None else HeapTrimmer()
        self._trim_task: asyncio.Task[None] | None = None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, limit=READ_CHUNK_BYTES
        )
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        self._trim_task = asyncio.create_task(self._trim_loop())

    async def _trim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        check_s = min(HEAP_TRIM_CHECK_S, self.heap_trimmer.idle_s)
        while True:
            await asyncio.sleep(check_s)
            self.heap_trimmer.maybe_trim(loop.time())

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def stop(self) -> None:
        await self.stop_accepting()
        if self._trim_task is not None:
            self._trim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trim_task
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.connections_max:
            self.connections_refused += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else ""
        try:
            await self._serve(reader, writer, host)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the peer went away, or we are stopping
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        conn = ServerConnection(self.frame_bytes_max)
        queue: asyncio.Queue[tuple[RequestContext, asyncio.Task[Any]] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.inflight_max)
        writer_task = asyncio.create_task(self._write_loop(conn, writer, queue, slots))
        loop = asyncio.get_running_loop()
        trimmer = self.heap_trimmer
        try:
            while not writer_task.done():
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    break
                trimmer.note_traffic(loop.time())
                try:
                    events = conn.receive_data(data)
                except ProtocolError as error:
                    log.info("closing connection from %s: %s", host, error)
                    break
                for event in events:
                    if isinstance(event, UnsupportedRequest):
                        if not event.answerable:
                            log.info("closing connection from %s: %s", host, event.reason)
                            await queue.put(None)
                            await writer_task
                            return
                        ctx = RequestContext(event.header, host, self.listener_name, 0)
                        await slots.acquire()
                        await queue.put(
                            (ctx, asyncio.create_task(_const(api_versions_unsupported_response())))
                        )
                        continue
                    await slots.acquire()
                    ctx = RequestContext(event.header, host, self.listener_name, event.frame_bytes)
                    task = asyncio.create_task(self._handle(event, ctx))
                    await queue.put((ctx, task))
                if conn.failed:
                    log.info("closing connection from %s after its last good request", host)
                    break
        finally:
            if not writer_task.done():
                await queue.put(None)
                with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                    await writer_task

    async def _handle(self, event: RequestReceived, ctx: RequestContext) -> Any:
        handler = self.handlers.get(ctx.header.request_api_key)
        if handler is None:  # decodable but not wired: a bug of ours, never the client's
            raise RuntimeError(f"no handler for api key {ctx.header.request_api_key}")
        return await handler(event.body, ctx)

    async def _write_loop(
        self,
        conn: ServerConnection,
        writer: asyncio.StreamWriter,
        queue: asyncio.Queue[tuple[RequestContext, asyncio.Task[Any]] | None],
        slots: asyncio.Semaphore,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await queue.get()
            if item is None:
                return
            ctx, task = item
            started = time.perf_counter()
            try:
                body = await task
            except Exception:
                log.exception(
                    "handler failed api=%s version=%d; closing connection",
                    _api_name(ctx.header.request_api_key),
                    ctx.version,
                )
                writer.close()
                return
            finally:
                slots.release()
            if body is None:
                continue  # acks=0 produce: no response
            data = conn.send_response(ctx.header, body)
            writer.write(data)
            self.heap_trimmer.note_traffic(loop.time())
            if self.on_request is not None:
                self.on_request(
                    ctx.header.request_api_key,
                    ctx.version,
                    len(data),
                    time.perf_counter() - started,
                )
            if writer.transport.get_write_buffer_size() > 4 * READ_CHUNK_BYTES:
                await writer.drain()


async def _const(value: Any) -> Any:
    return value


def _api_name(key: int) -> str:
    try:
        return ApiKey(key).name
    except ValueError:
        return str(key)
