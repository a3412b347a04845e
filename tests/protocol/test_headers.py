"""Header versions: flexible rule, ApiVersions' v0 response header, known bytes."""

from __future__ import annotations

from client.protocol import (
    API_SPECS,
    ApiKey,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from client.protocol.messages import api_versions, metadata


def test_header_version_rule() -> None:
    md = API_SPECS[ApiKey.METADATA]
    assert [md.request_header_version(v) for v in (0, 8, 9, 12)] == [1, 1, 2, 2]
    assert [md.response_header_version(v) for v in (0, 8, 9, 12)] == [0, 0, 1, 1]
    av = API_SPECS[ApiKey.API_VERSIONS]
    assert av.request_header_version(3) == 2
    assert av.response_header_version(3) == 0  # always v0 (KIP-511)
    assert API_SPECS[ApiKey.DESCRIBE_CLUSTER].request_header_version(0) == 2


def test_request_header_known_bytes() -> None:
    header = RequestHeader(
        request_api_key=3, request_api_version=1, correlation_id=7, client_id="ab"
    )
    frame = encode_request(header, metadata.MetadataRequest(topics=()), 1)
    assert frame.hex() == "00000010" + "000300010000000700026162" + "00000000"
    flexible = RequestHeader(
        request_api_key=3, request_api_version=9, correlation_id=7, client_id=None
    )
    frame = encode_request(flexible, metadata.MetadataRequest(topics=()), 9)
    # client id stays a classic int16 string even in header v2, then empty tags
    assert frame[4:].hex().startswith("0003000900000007ffff00")
    assert decode_request(frame[4:])[0] == flexible


def test_response_header_v1_has_tags_but_api_versions_never() -> None:
    frame = encode_response(5, ApiKey.METADATA, 9, metadata.MetadataResponse())
    assert frame[4:9].hex() == "0000000500"
    frame = encode_response(5, ApiKey.API_VERSIONS, 3, api_versions.ApiVersionsResponse())
    assert frame[4:].hex() == "00000005" + "0000010000000000"
    header, body = decode_response(ApiKey.API_VERSIONS, 3, frame[4:])
    assert header.correlation_id == 5 and body == api_versions.ApiVersionsResponse()


def test_api_versions_unsupported_is_answered_at_v0_and_client_falls_back() -> None:
    from client.protocol import api_versions_unsupported_response

    body = api_versions_unsupported_response()
    assert body.error_code == 35 and len(body.api_keys) == len(API_SPECS)
    frame = encode_response(9, ApiKey.API_VERSIONS, 4, body)  # v4: we cannot speak it
    assert frame[4:].hex().startswith("00000009" + "0023" + f"{len(API_SPECS):08x}")
    # A client that asked at v3 still reads the v0 answer, as Kafka's client does.
    _header, decoded = decode_response(ApiKey.API_VERSIONS, 3, frame[4:])
    assert decoded.error_code == 35 and decoded.api_keys == body.api_keys
