"""Request header v0-v2 and response header v0-v1 (RequestHeader.json, ResponseHeader.json).

Request header: api key, api version, correlation id (v0); client id as a classic int16
nullable string (v1+, never compact, so any broker can read the header of any
ApiVersions request); an empty tagged-field section (v2, used by flexible API versions).
Response header: correlation id (v0); plus a tagged-field section (v1, flexible versions,
except ApiVersions responses which always use v0). Which version applies is decided by
`client.protocol.api_keys.ApiSpec.{request,response}_header_version`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from client.protocol.primitives import (
    INT32,
    read_nullable_string,
    skip_tagged_fields,
    write_nullable_string,
)

_REQUEST_PREFIX = struct.Struct(">hhi")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHeader:
    """The header of every request; field names follow RequestHeader.json."""

    request_api_key: int
    request_api_version: int
    correlation_id: int
    client_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHeader:
    """The header of every response: the correlation id the request carried."""

    correlation_id: int


def write_request_header(out: bytearray, header: RequestHeader, header_version: int) -> None:
    out += _REQUEST_PREFIX.pack(
        header.request_api_key, header.request_api_version, header.correlation_id
    )
    if header_version >= 1:
        write_nullable_string(out, header.client_id)
    if header_version >= 2:
        out.append(0)  # no tagged fields


def read_request_prefix(buf: memoryview) -> tuple[int, int, int]:
    """(api key, api version, correlation id): readable before the header version is known."""
    key, version, correlation_id = _REQUEST_PREFIX.unpack_from(buf, 0)
    return key, version, correlation_id


def read_request_header(buf: memoryview, header_version: int) -> tuple[RequestHeader, int]:
    key, version, correlation_id = _REQUEST_PREFIX.unpack_from(buf, 0)
    pos = 8
    client_id = None
    if header_version >= 1:
        client_id, pos = read_nullable_string(buf, pos)
    if header_version >= 2:
        pos = skip_tagged_fields(buf, pos)
    header = RequestHeader(
        request_api_key=key,
        request_api_version=version,
        correlation_id=correlation_id,
        client_id=client_id,
    )
    return header, pos


def write_response_header(out: bytearray, correlation_id: int, header_version: int) -> None:
    out += INT32.pack(correlation_id)
    if header_version >= 1:
        out.append(0)  # no tagged fields


def read_response_header(buf: memoryview, header_version: int) -> tuple[ResponseHeader, int]:
    (correlation_id,) = INT32.unpack_from(buf, 0)
    pos = 4
    if header_version >= 1:
        pos = skip_tagged_fields(buf, pos)
    return ResponseHeader(correlation_id=correlation_id), pos
