"""Whole frames: header + body, both directions, with Kafka's header-version rules.

`encode_request` / `encode_response` return the bytes to write on the socket, *including*
the 4-byte size prefix (they reserve it and fill it in, so the body is not copied again to
prepend it). `decode_request` /
`decode_response` take one frame's payload, the bytes *after* the size prefix (the
sans-I/O connections in connection.py do the framing).

Decoding never trusts the peer: unknown api keys and versions raise
`UnsupportedRequestError` (carrying the parsed header, so the broker can answer
ApiVersions at v0 and close otherwise), malformed bytes raise `RemoteProtocolError`,
and nothing else escapes.
"""

from __future__ import annotations

from typing import Any

from client.protocol.api_keys import ApiKey, ApiSpec, api_spec, spec_for
from client.protocol.exceptions import LocalProtocolError, RemoteProtocolError
from client.protocol.headers import (
    RequestHeader,
    ResponseHeader,
    read_request_header,
    read_request_prefix,
    read_response_header,
    write_request_header,
    write_response_header,
)
from client.protocol.primitives import INT16, INT32, decode_with, encode_with

_UNSUPPORTED_VERSION = 35


class UnsupportedRequestError(RemoteProtocolError):
    """A well-formed request header naming an api key or version this broker does not serve.

    `answerable` is True only for ApiVersions: Kafka answers those at v0 with
    UNSUPPORTED_VERSION (see api_keys.api_versions_unsupported_response); for every other
    API it closes the connection.
    """

    def __init__(self, header: RequestHeader, reason: str, answerable: bool) -> None:
        super().__init__(reason)
        self.header = header
        self.answerable = answerable


def _frame(out: bytearray) -> bytes:
    INT32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def encode_request(header: RequestHeader, body: Any, version: int | None = None) -> bytes:
    """A size-prefixed request frame; `version` defaults to header.request_api_version."""
    try:
        spec = spec_for(body)
    except KeyError:
        raise LocalProtocolError(f"{type(body).__name__} is not a generated request") from None
    if version is None:
        version = header.request_api_version
    if (
        type(body) is not spec.request_type
        or header.request_api_key != spec.api_key
        or header.request_api_version != version
    ):
        raise LocalProtocolError(f"header {header} does not match {type(body).__name__} v{version}")
    if not spec.has_version(version):
        raise LocalProtocolError(f"{type(body).__name__} has no version {version}")
    out = bytearray(4)
    write_request_header(out, header, spec.request_header_version(version))
    encode_with(spec.request_encoders[version], body, out)
    return _frame(out)


def decode_request_header(buf: bytes | bytearray | memoryview) -> tuple[RequestHeader, int]:
    """The request header and where the body starts.

    Raises UnsupportedRequestError for api keys and versions not served (the header is
    still parsed, as header v1, so the caller can log it and echo the correlation id).
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    (key, version, _), _ = decode_with(lambda b, p: (read_request_prefix(b), p), view)
    spec = api_spec(key)
    if spec is None or not spec.serves(version):
        header, _pos = decode_with(lambda b, p: read_request_header(b, 1), view)
        is_api_versions = key == ApiKey.API_VERSIONS
        what = "unknown api key" if spec is None else "unsupported version"
        raise UnsupportedRequestError(header, f"{what}: {key} v{version}", is_api_versions)
    return decode_with(
        lambda b, p: read_request_header(b, spec.request_header_version(version)), view
    )


def decode_request(buf: bytes | bytearray | memoryview) -> tuple[RequestHeader, Any]:
    """Server side: one frame payload -> (header, request body). Records stay zero-copy."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    header, pos = decode_request_header(view)
    spec = api_spec(header.request_api_key)
    assert spec is not None
    decoder = spec.request_decoders[header.request_api_version]
    body, _end = decode_with(decoder, view, pos)
    # Bytes after a complete body are ignored, as Kafka's request parser does
    # (bad-input.md H9): librdkafka 2.x sends a few with some Metadata versions.
    return header, body


def encode_response(correlation_id: int, api_key: int, version: int, body: Any) -> bytes:
    """A size-prefixed response frame with the header version Kafka uses for this API.

    An ApiVersions response at a version ApiVersions does not have (the reply to a request
    the broker could not parse) is encoded at v0, as Kafka does (KIP-511).
    """
    spec = _spec_or_local_error(api_key)
    if type(body) is not spec.response_type:
        raise LocalProtocolError(f"{type(body).__name__} is not a response of api {api_key}")
    if spec.api_key is ApiKey.API_VERSIONS and not spec.has_version(version):
        version = 0
    if not spec.has_version(version):
        raise LocalProtocolError(f"{type(body).__name__} has no version {version}")
    out = bytearray(4)
    write_response_header(out, correlation_id, spec.response_header_version(version))
    encode_with(spec.response_encoders[version], body, out)
    return _frame(out)


def decode_response(
    api_key: int, version: int, buf: bytes | bytearray | memoryview
) -> tuple[ResponseHeader, Any]:
    """Client side: one frame payload -> (header, response body).

    Bytes after the body are ignored (a newer broker may know more than we asked for).
    ApiVersions falls back to v0 when the broker answered UNSUPPORTED_VERSION at v0, as
    Kafka's own client does.
    """
    spec = _spec_or_local_error(api_key)
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    header, pos = decode_with(
        lambda b, p: read_response_header(b, spec.response_header_version(version)), view
    )
    if spec.api_key is ApiKey.API_VERSIONS and version > 0:
        return header, _decode_api_versions(spec, version, view, pos)
    if not spec.has_version(version):
        raise LocalProtocolError(f"api {api_key} has no version {version}")
    body, _end = decode_with(spec.response_decoders[version], view, pos)
    return header, body


def _decode_api_versions(spec: ApiSpec, version: int, view: memoryview, pos: int) -> Any:
    (error_code,) = decode_with(lambda b, p: (INT16.unpack_from(b, p), p), view, pos)[0]
    if error_code != _UNSUPPORTED_VERSION and spec.has_version(version):
        try:
            return decode_with(spec.response_decoders[version], view, pos)[0]
        except RemoteProtocolError:
            pass  # an older broker answered at v0; fall through
    return decode_with(spec.response_decoders[0], view, pos)[0]


def _spec_or_local_error(api_key: int) -> ApiSpec:
    spec = api_spec(api_key)
    if spec is None:
        raise LocalProtocolError(f"api key {api_key} is not supported by this wire layer")
    return spec
