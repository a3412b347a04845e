"""Hostile input (bad-input.md 6.1-6.3): decoders raise only RemoteProtocolError, allocate
little relative to the input, and stop."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.protocol import (
    API_SPECS,
    ApiKey,
    RemoteProtocolError,
    RequestHeader,
    ServerConnection,
    decode_request,
    encode_request,
)
from client.protocol.messages import fetch, metadata, produce

SERVED = [
    (s.api_key, v)
    for s in API_SPECS.values()
    for v in range(s.served_min_version, s.max_version + 1)
]


def _header(key: int, version: int) -> bytes:
    spec = API_SPECS[ApiKey(key)]
    body = spec.request_type()
    frame = encode_request(
        RequestHeader(
            request_api_key=key, request_api_version=version, correlation_id=1, client_id="h"
        ),
        body,
        version,
    )
    return frame[4:]


def _request(key: ApiKey, version: int) -> bytes:
    """A realistic frame payload: header + a non-trivial body."""
    return _header(key, version)


def test_truncated_frames_at_every_length() -> None:
    req = metadata.MetadataRequest(topics=(metadata.MetadataRequestTopic(name="topic"),) * 3)
    for version in range(0, 13):
        header = RequestHeader(
            request_api_key=3, request_api_version=version, correlation_id=1, client_id="c"
        )
        payload = encode_request(header, req, version)[4:]
        assert decode_request(payload)[1].topics[0].name == "topic"
        for cut in range(len(payload)):
            with pytest.raises(RemoteProtocolError):
                decode_request(payload[:cut])


def test_trailing_bytes_after_a_body_are_ignored_as_kafka_does() -> None:
    payload = _request(ApiKey.HEARTBEAT, 0)
    assert decode_request(payload + b"\x00\x00\x00") == decode_request(payload)


def _metadata_v1_with_count(count: bytes, rest: bytes) -> bytes:
    return bytes.fromhex("0003 0001 00000001 ffff") + count + rest


def test_array_count_2_pow_31_in_a_20_byte_body_does_not_allocate() -> None:
    payload = _metadata_v1_with_count(b"\x7f\xff\xff\xff", bytes(16))
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError):
            decode_request(payload)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    for count in (b"\xff\xff\xff\xfe", b"\x80\x00\x00\x00"):  # negative, not -1
        with pytest.raises(RemoteProtocolError):
            decode_request(_metadata_v1_with_count(count, b""))


def test_compact_array_count_and_bad_varints() -> None:
    prefix = bytes.fromhex("0003 0009 00000001 ffff 00")  # Metadata v9, header v2
    with pytest.raises(RemoteProtocolError):
        decode_request(prefix + bytes.fromhex("ffffffff07") + bytes(16))  # 2^31 topics
    with pytest.raises(RemoteProtocolError):
        decode_request(prefix + b"\xff" * 6 + b"\x01")  # varint of more than 5 bytes
    with pytest.raises(RemoteProtocolError):
        decode_request(bytes.fromhex("0003 0009 00000001 ffff") + b"\x05\x00")  # header tags


def test_string_lengths_and_utf8() -> None:
    with pytest.raises(RemoteProtocolError):  # client id longer than the frame
        decode_request(bytes.fromhex("0012 0000 00000001 0040 6162"))
    with pytest.raises(RemoteProtocolError):  # client id invalid UTF-8
        decode_request(bytes.fromhex("0012 0000 00000001 0002 c328"))
    with pytest.raises(RemoteProtocolError):  # topic name length -2
        decode_request(_metadata_v1_with_count(b"\x00\x00\x00\x01", b"\xff\xfe"))


def test_garbage_tagged_fields() -> None:
    body = fetch.FetchRequest(
        topics=(fetch.FetchTopic(topic="t", partitions=(fetch.FetchPartition(),)),)
    )
    header = RequestHeader(
        request_api_key=1, request_api_version=12, correlation_id=1, client_id=None
    )
    payload = encode_request(header, body, 12)[4:]
    assert payload.endswith(b"\x00")
    # Unknown but well-formed tagged fields are skipped (H6).
    good = payload[:-1] + bytes.fromhex("02 05 02 abcd 09 00")
    assert decode_request(good)[1] == body
    for garbage in ("05 05 02 ab", "01 05 ff ab", "01 ffffffffff01 00"):
        with pytest.raises(RemoteProtocolError):
            decode_request(payload[:-1] + bytes.fromhex(garbage))
    # The known tag 0 (ClusterId) with a size that lies about its content.
    with pytest.raises(RemoteProtocolError):
        decode_request(payload[:-1] + bytes.fromhex("01 00 01 05"))


def test_produce_bomb_partitions_within_frame() -> None:
    req = produce.ProduceRequest(acks=1, timeout_ms=1)
    header = RequestHeader(
        request_api_key=0, request_api_version=3, correlation_id=1, client_id=None
    )
    payload = bytearray(encode_request(header, req, 3)[4:])
    payload[-4:] = b"\x7f\xff\xff\xff"  # topic count
    with pytest.raises(RemoteProtocolError):
        decode_request(bytes(payload))


@pytest.mark.parametrize(("key", "version"), SERVED, ids=[f"{k.name}-v{v}" for k, v in SERVED])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    tail=st.binary(max_size=64),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
)
def test_fuzz_decode_request_raises_only_remote_errors(
    key: ApiKey, version: int, tail: bytes, flips: list[tuple[int, int]]
) -> None:
    payload = bytearray(_request(key, version) + tail)
    for index, value in flips:
        if 8 <= index < len(payload):  # keep api key/version so the body decoder runs
            payload[index] = value
    try:
        header, _body = decode_request(bytes(payload))
    except RemoteProtocolError:
        return
    assert header.request_api_key == key


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 64))
def test_fuzz_server_connection(data: bytes, chunk: int) -> None:
    server = ServerConnection(frame_bytes_max=4096)
    try:
        for i in range(0, len(data), chunk):
            server.receive_data(data[i : i + chunk])
    except RemoteProtocolError:
        pass
