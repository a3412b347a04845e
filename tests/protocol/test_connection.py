"""Client and server connections talking through an in-memory pipe (h11 style)."""

from __future__ import annotations

import pytest

from client.protocol import (
    ApiKey,
    ClientConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestReceived,
    ServerConnection,
    UnsupportedRequest,
    api_versions_unsupported_response,
)
from client.protocol.messages import api_versions, heartbeat, metadata, produce


def _pipe(data: bytes, conn: ServerConnection | ClientConnection, chunk: int) -> list:  # type: ignore[type-arg]
    events = []
    for i in range(0, len(data), chunk):
        events += conn.receive_data(data[i : i + chunk])
    return events


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_pipelined_requests_and_responses_in_order(chunk: int) -> None:
    client, server = ClientConnection(client_id="c1"), ServerConnection()
    wire = b""
    sent = []
    for i in range(20):
        version = i % 13
        cid, frame = client.send_request(
            metadata.MetadataRequest(topics=()), ApiKey.METADATA, version
        )
        sent.append((cid, version))
        wire += frame
    requests = _pipe(wire, server, chunk)
    assert [(e.header.correlation_id, e.header.request_api_version) for e in requests] == sent
    assert all(isinstance(e, RequestReceived) and e.header.client_id == "c1" for e in requests)
    replies = b"".join(
        server.send_response(
            e.header,
            metadata.MetadataResponse(
                brokers=(metadata.MetadataResponseBroker(node_id=e.header.correlation_id),)
            ),
        )
        for e in requests
    )
    responses = _pipe(replies, client, chunk)
    assert [(cid, r.brokers[0].node_id) for cid, r in responses] == [(c, c) for c, _ in sent]
    assert client.inflight_requests == 0


def test_out_of_order_response_is_the_peers_error() -> None:
    client, server = ClientConnection(), ServerConnection()
    frames = [
        client.send_request(heartbeat.HeartbeatRequest(), ApiKey.HEARTBEAT, 1)[1] for _ in range(2)
    ]
    events = server.receive_data(b"".join(frames))
    wrong = server.send_response(events[1].header, heartbeat.HeartbeatResponse())
    with pytest.raises(RemoteProtocolError):
        client.receive_data(wrong)


def test_unsolicited_response_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        ClientConnection().receive_data(b"\x00\x00\x00\x04\x00\x00\x00\x00")


def test_produce_acks_zero_expects_no_response() -> None:
    client = ClientConnection()
    client.send_request(produce.ProduceRequest(acks=0), ApiKey.PRODUCE, 9)
    assert client.inflight_requests == 0
    client.send_request(produce.ProduceRequest(acks=1), ApiKey.PRODUCE, 9)
    assert client.inflight_requests == 1


def test_frame_limit_and_negative_size_raise_before_buffering() -> None:
    server = ServerConnection(frame_bytes_max=1024)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\x00\x00\x04\x01")  # 1025 bytes announced
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"")  # the connection stays failed
    with pytest.raises(RemoteProtocolError):
        ServerConnection().receive_data(b"\x80\x00\x00\x00")
    with pytest.raises(RemoteProtocolError):
        ServerConnection().receive_data(b"GET / HTTP/1.1\r\n")  # 1.2 GB "frame"
    with pytest.raises(RemoteProtocolError):
        ServerConnection().receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # TLS


def test_good_requests_before_a_bad_one_are_delivered_then_error() -> None:
    client, server = ClientConnection(), ServerConnection()
    good = client.send_request(heartbeat.HeartbeatRequest(), ApiKey.HEARTBEAT, 0)[1]
    bad = b"\x00\x00\x00\x03abc"  # shorter than a request header
    events = server.receive_data(good + bad)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"")


def test_unsupported_api_versions_is_answerable_at_v0() -> None:
    server = ServerConnection()
    # ApiVersions v4: header v2 with a compact body we do not parse
    frame = bytes.fromhex("0012 0004 0000002a 0001 78 00") + bytes.fromhex("02 61 02 62 00")
    events = server.receive_data(len(frame).to_bytes(4, "big") + frame)
    (event,) = events
    assert isinstance(event, UnsupportedRequest) and event.answerable
    assert event.header.correlation_id == 42
    reply = server.send_response(event.header, api_versions_unsupported_response())
    assert reply[4:10].hex() == "0000002a0023"


def test_unknown_api_and_unsupported_version_close() -> None:
    server = ServerConnection()
    frame = bytes.fromhex("03e7 0000 00000001 ffff")  # api key 999
    (event,) = server.receive_data(len(frame).to_bytes(4, "big") + frame)
    assert isinstance(event, UnsupportedRequest) and not event.answerable
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"")
    server = ServerConnection()
    frame = bytes.fromhex("0000 0002 00000001 ffff")  # Produce v2: advertised, not served
    (event,) = server.receive_data(len(frame).to_bytes(4, "big") + frame)
    assert isinstance(event, UnsupportedRequest) and not event.answerable


def test_local_errors_for_our_mistakes() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send_request(metadata.MetadataResponse(), ApiKey.METADATA, 1)
    with pytest.raises(LocalProtocolError):
        client.send_request(metadata.MetadataRequest(), ApiKey.METADATA, 13)
    with pytest.raises(LocalProtocolError):
        client.send_request(metadata.MetadataRequest(), ApiKey.FETCH, 1)
    with pytest.raises(LocalProtocolError):
        client.send_request(metadata.MetadataRequest(topics=None), ApiKey.METADATA, 0)
    with pytest.raises(LocalProtocolError):
        client.send_request(
            api_versions.ApiVersionsRequest(client_software_name="x" * 70000),
            ApiKey.API_VERSIONS,
            3,
        )
    assert client.inflight_requests == 0


def test_inflight_bound() -> None:
    client = ClientConnection(inflight_requests_max=2)
    for _ in range(2):
        client.send_request(heartbeat.HeartbeatRequest(), ApiKey.HEARTBEAT, 0)
    with pytest.raises(LocalProtocolError):
        client.send_request(heartbeat.HeartbeatRequest(), ApiKey.HEARTBEAT, 0)
