"""A small HTTP/1.1 server on asyncio streams for metrics, health and operator pages.

Why not a framework: the broker needs five GET routes and a few fault-injection POSTs,
and every dependency is one more thing to install in the image and to trust with a
socket. This server does only what those routes need, and bounds everything a client
controls: request-line and header bytes, header count, body size, the time to send a
request, the requests per connection and the number of connections.

Routes are a table `(method, path) -> async handler(HttpRequest) -> HttpResponse`; the
node adds its own (`/`, fault injection) with `add_route`. `install_standard_routes`
adds `/metrics`, `/healthz`, `/readyz` and `/v1/cluster`. A GET route also answers HEAD.
Bodies are written in chunks with `drain()` so a slow reader never makes the loop buffer
a whole large body at once, and Prometheus text is rendered off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from broker.config import HostPort

log = logging.getLogger(__name__)

_WRITE_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, obj: object, status: int = 200) -> HttpResponse:
        body = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
        return cls(status, body + b"\n", "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> HttpResponse:
        return cls(status, text.encode())


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the node can serve clients now, and if not, why (shown by /readyz)."""

    ready: bool
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    request_line_bytes_max: int = 8 * 1024
    header_bytes_max: int = 16 * 1024
    headers_count_max: int = 64
    body_bytes_max: int = 1024 * 1024
    connections_max: int = 64
    requests_per_connection_max: int = 1000
    request_timeout_s: float = 10.0  # to receive one whole request, and idle keep-alive


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class HttpServer:
    """Serves the route table on one address until `stop()`."""

    def __init__(self, listen: HostPort, limits: HttpLimits | None = None) -> None:
        self.listen = listen
        self.limits = limits or HttpLimits()
        self.requests_served = 0
        self._routes: dict[tuple[str, str], Handler] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        assert key not in self._routes, f"route {key} already registered"
        self._routes[key] = handler

    @property
    def address(self) -> HostPort:
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return HostPort(host, port)

    async def start(self) -> None:
        assert self._server is None
        # `limit` bounds what readuntil() buffers: a request line or header line longer
        # than this raises instead of growing memory.
        self._server = await asyncio.start_server(
            self._serve_connection,
            self.listen.host,
            self.listen.port,
            limit=self.limits.request_line_bytes_max,
            reuse_address=True,
        )
        log.info("http listening", extra={"addr": str(self.address)})

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(self._connections) >= self.limits.connections_max:
            await self._write(writer, HttpResponse.text("too many connections\n", 503), False)
            writer.close()
            return
        self._connections.add(writer)
        try:
            for _ in range(self.limits.requests_per_connection_max):
                keep_alive = await self._serve_one(reader, writer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads and answers one request; returns whether to keep the connection."""
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                request, keep_alive = await self._read_request(reader)
        except _BadRequest as exc:
            await self._write(writer, HttpResponse.text(f"{exc}\n", exc.status), False)
            return False
        if request is None:
            return False  # clean EOF between requests
        response = await self._dispatch(request)
        self.requests_served += 1
        await self._write(writer, response, keep_alive, head=request.method == "HEAD")
        return keep_alive

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[HttpRequest | None, bool]:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None, False
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "incomplete request line") from None
        except asyncio.LimitOverrunError:
            raise _BadRequest(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long") from None
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
        method, target, version = parts
        headers = await self._read_headers(reader)
        body = await self._read_body(reader, headers)
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return HttpRequest(method.upper(), split.path, query, headers, body), keep_alive

    async def _read_headers(self, reader: asyncio.StreamReader) -> dict[str, str]:
        headers: dict[str, str] = {}
        total = 0
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise _BadRequest(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header line too long"
                ) from None
            if line == b"\r\n":
                return headers
            total += len(line)
            if (
                total > self.limits.header_bytes_max
                or len(headers) >= self.limits.headers_count_max
            ):
                raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed header")
            headers[name.lower()] = value.strip()

    async def _read_body(self, reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
        if "transfer-encoding" in headers:
            raise _BadRequest(HTTPStatus.NOT_IMPLEMENTED, "transfer-encoding is not supported")
        text = headers.get("content-length", "0")
        if not text.isdigit():
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "bad content-length")
        length = int(text)
        if length > self.limits.body_bytes_max:
            raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        return await reader.readexactly(length) if length else b""

    async def _dispatch(self, request: HttpRequest) -> HttpResponse:
        method = "GET" if request.method == "HEAD" else request.method
        handler = self._routes.get((method, request.path))
        if handler is None:
            allowed = sorted(m for (m, p) in self._routes if p == request.path)
            if not allowed:
                return HttpResponse.text("not found\n", 404)
            allow = ", ".join(allowed + (["HEAD"] if "GET" in allowed else []))
            return HttpResponse(405, b"method not allowed\n", headers=(("Allow", allow),))
        try:
            return await handler(request)
        except Exception:
            log.exception("http handler failed", extra={"path": request.path})
            return HttpResponse.text("internal error\n", 500)

    async def _write(
        self, writer: asyncio.StreamWriter, response: HttpResponse, keep_alive: bool,
        head: bool = False,
    ) -> None:  # fmt: skip
        phrase = HTTPStatus(response.status).phrase
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head:
            view = memoryview(response.body)
            for start in range(0, len(view), _WRITE_CHUNK_BYTES):
                writer.write(view[start : start + _WRITE_CHUNK_BYTES])
                await writer.drain()
        await writer.drain()


def install_standard_routes(
    server: HttpServer,
    registry: CollectorRegistry,
    readiness: Callable[[], Readiness],
    cluster_info: Callable[[], Mapping[str, Any]],
) -> None:
    """Adds /metrics, /healthz, /readyz and /v1/cluster."""

    async def metrics(_: HttpRequest) -> HttpResponse:
        # Rendering walks every series; with thousands of partitions that is milliseconds
        # of CPU, so it runs on a worker thread (prometheus_client metrics are thread-safe).
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return HttpResponse(200, body, CONTENT_TYPE_LATEST)

    async def healthz(_: HttpRequest) -> HttpResponse:
        return HttpResponse.text("ok\n")

    async def readyz(_: HttpRequest) -> HttpResponse:
        state = readiness()
        doc = {"ready": state.ready, "reason": state.reason, **state.details}
        return HttpResponse.json(doc, 200 if state.ready else 503)

    async def cluster(_: HttpRequest) -> HttpResponse:
        return HttpResponse.json(cluster_info())

    server.add_route("GET", "/metrics", metrics)
    server.add_route("GET", "/healthz", healthz)
    server.add_route("GET", "/readyz", readyz)
    server.add_route("GET", "/v1/cluster", cluster)
