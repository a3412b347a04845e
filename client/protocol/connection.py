"""Sans-I/O Kafka connections, one per role (h11 style): bytes in, events out.

Neither class touches a socket or a clock. The I/O shell feeds `receive_data(chunk)` with
whatever it read and writes the bytes the `send_*` methods return.

Framing. Every Kafka message is an int32 size and that many bytes. The size is checked as
soon as its 4 bytes arrive: a negative size, or one above `frame_bytes_max` (default
100 MiB, Kafka's socket.request.max.bytes), raises RemoteProtocolError before the frame is
buffered (bad-input.md B1/B2/B4/B5: an HTTP request or a TLS ClientHello on the Kafka port
looks like a 1 GB frame). Each complete frame is copied once out of the receive buffer
into its own `bytes`, so zero-copy record slices of a decoded Produce request stay valid
after the buffer moves on.

Errors. RemoteProtocolError means the peer's bytes are bad: close the connection.
LocalProtocolError means we asked for something invalid. When a bad frame follows good
ones in the same chunk, the good ones are returned first and the error is raised by the
next call, so pipelined requests before the bad one are still answered in order.

Ordering. Kafka answers requests on one connection in the order they were sent. The
server connection just encodes (the broker writes responses in request order); the
client connection matches each response with the oldest request awaiting one and treats a
different correlation id as the peer's error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from client.protocol.api_keys import ApiKey, api_spec, spec_for
from client.protocol.codec import (
    UnsupportedRequestError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from client.protocol.exceptions import LocalProtocolError, ProtocolError, RemoteProtocolError
from client.protocol.headers import RequestHeader
from client.protocol.primitives import INT32

FRAME_BYTES_MAX_DEFAULT = 100 * 1024 * 1024
INFLIGHT_REQUESTS_MAX_DEFAULT = 1024
_CORRELATION_ID_MAX = 0x7FFFFFFF


class FrameBuffer:
    """Splits a byte stream into size-prefixed frames, bounded by `frame_bytes_max`."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        assert frame_bytes_max > 0
        self.frame_bytes_max = frame_bytes_max
        self._buf = bytearray()
        self._error: RemoteProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append `data`; return every complete frame payload (without its size prefix).

        A bad size prefix after complete frames in the same chunk does not lose them:
        they are returned, and the error is raised by the next call.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos, end = 0, len(buf)
        try:
            while end - pos >= 4:
                (size,) = INT32.unpack_from(buf, pos)
                if size < 0:
                    raise RemoteProtocolError(f"negative frame size {size}")
                if size > self.frame_bytes_max:
                    raise RemoteProtocolError(
                        f"frame of {size} bytes exceeds frame_bytes_max {self.frame_bytes_max}"
                    )
                if end - pos - 4 < size:
                    break
                with memoryview(buf) as view:
                    frames.append(bytes(view[pos + 4 : pos + 4 + size]))
                pos += 4 + size
        except RemoteProtocolError as error:
            if not frames:
                raise
            self._error = error
        finally:
            if pos:
                del buf[:pos]
        return frames


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request the broker serves: its header and decoded body."""

    header: RequestHeader
    body: Any
    frame_bytes: int


@dataclass(frozen=True, slots=True)
class UnsupportedRequest:
    """A request for an api key or version the broker does not serve.

    Kafka closes the connection, except for ApiVersions (`answerable`): answer it with
    `send_response(event.header, api_versions_unsupported_response())`, which encodes v0.
    """

    header: RequestHeader
    reason: str
    answerable: bool


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response matched to its request; unpacks as (correlation_id, response)."""

    correlation_id: int
    response: Any
    api_key: ApiKey
    api_version: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.correlation_id, self.response))


class _Connection:
    def __init__(self, frame_bytes_max: int) -> None:
        self._frames = FrameBuffer(frame_bytes_max)
        self._error: ProtocolError | None = None

    @property
    def frame_bytes_max(self) -> int:
        return self._frames.frame_bytes_max

    @property
    def failed(self) -> bool:
        """True once the peer sent bad bytes: answer what came before, then close."""
        return self._error is not None or self._frames._error is not None

    def _feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self._error is not None:
            raise self._error
        try:
            return self._frames.feed(data)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _fail_later(self, exc: ProtocolError, events: list[Any]) -> None:
        """Keep `exc` for the next call when earlier events must still be delivered."""
        self._error = exc
        if not events:
            raise exc


class ServerConnection(_Connection):
    """The broker's side: request frames in, events out; response bodies in, bytes out."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        super().__init__(frame_bytes_max)

    def receive_data(
        self, data: bytes | bytearray | memoryview
    ) -> list[RequestReceived | UnsupportedRequest]:
        events: list[RequestReceived | UnsupportedRequest] = []
        for frame in self._feed(data):
            try:
                header, body = decode_request(frame)
            except UnsupportedRequestError as exc:
                events.append(UnsupportedRequest(exc.header, str(exc), exc.answerable))
                if not exc.answerable:
                    self._fail_later(exc, events)
                    return events
                continue
            except RemoteProtocolError as exc:
                self._fail_later(exc, events)
                return events
            events.append(RequestReceived(header, body, len(frame)))
        return events

    def send_response(self, header: RequestHeader, body: Any) -> bytes:
        """Encode the response to the request that carried `header` (size-prefixed)."""
        return encode_response(
            header.correlation_id, header.request_api_key, header.request_api_version, body
        )


@dataclass(frozen=True, slots=True)
class _Pending:
    correlation_id: int
    api_key: ApiKey
    api_version: int


class ClientConnection(_Connection):
    """The client's side: request bodies in, bytes out; response frames in, events out."""

    def __init__(
        self,
        client_id: str | None = "raftka",
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
        inflight_requests_max: int = INFLIGHT_REQUESTS_MAX_DEFAULT,
    ) -> None:
        super().__init__(frame_bytes_max)
        self.client_id = client_id
        self.inflight_requests_max = inflight_requests_max
        self._next_correlation_id = 0
        self._pending: deque[_Pending] = deque()

    @property
    def inflight_requests(self) -> int:
        return len(self._pending)

    def send_request(
        self,
        body: Any,
        api_key: int | None = None,
        version: int = 0,
        client_id: str | None = None,
        *,
        expect_response: bool | None = None,
    ) -> tuple[int, bytes]:
        """Encode `body` at `version`; returns (correlation id, size-prefixed bytes).

        `api_key` defaults to the body's; `client_id` to the connection's. A Produce
        request with acks=0 gets no response from Kafka, so it is not awaited unless
        `expect_response` says otherwise.
        """
        spec = _request_spec(body)
        if api_key is not None and api_key != spec.api_key:
            raise LocalProtocolError(f"{type(body).__name__} is not api key {api_key}")
        if len(self._pending) >= self.inflight_requests_max:
            raise LocalProtocolError(f"{self.inflight_requests_max} requests already in flight")
        if expect_response is None:
            expect_response = not (spec.api_key is ApiKey.PRODUCE and body.acks == 0)
        correlation_id = self._next_correlation_id
        header = RequestHeader(
            request_api_key=spec.api_key,
            request_api_version=version,
            correlation_id=correlation_id,
            client_id=self.client_id if client_id is None else client_id,
        )
        frame = encode_request(header, body, version)
        self._next_correlation_id = (correlation_id + 1) & _CORRELATION_ID_MAX
        if expect_response:
            self._pending.append(_Pending(correlation_id, spec.api_key, version))
        return correlation_id, frame

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ResponseReceived]:
        events: list[ResponseReceived] = []
        for frame in self._feed(data):
            try:
                events.append(self._decode(frame))
            except RemoteProtocolError as exc:
                self._fail_later(exc, events)
                return events
        return events

    def _decode(self, frame: bytes) -> ResponseReceived:
        if len(frame) < 4:
            raise RemoteProtocolError(f"response frame of {len(frame)} bytes has no header")
        (correlation_id,) = INT32.unpack_from(frame, 0)
        if not self._pending:
            raise RemoteProtocolError(f"response {correlation_id} to no request")
        expected = self._pending[0]
        if correlation_id != expected.correlation_id:
            raise RemoteProtocolError(
                f"response {correlation_id} out of order, expected {expected.correlation_id}"
            )
        self._pending.popleft()
        _header, body = decode_response(expected.api_key, expected.api_version, frame)
        return ResponseReceived(correlation_id, body, expected.api_key, expected.api_version)


def _request_spec(body: Any) -> Any:
    try:
        spec = spec_for(body)
    except KeyError:
        raise LocalProtocolError(f"{type(body).__name__} is not a generated request") from None
    if type(body) is not spec.request_type:
        raise LocalProtocolError(f"{type(body).__name__} is a response, not a request")
    assert api_spec(spec.api_key) is spec
    return spec
