"""The broker's HTTP server: standard routes, the route table, and the request bounds."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from broker.config import HostPort
from broker.http_server import (
    HttpLimits,
    HttpRequest,
    HttpResponse,
    HttpServer,
    Readiness,
    install_standard_routes,
)
from broker.metrics import BrokerMetrics
from tests.harness import PORTS, BrokerProcess


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return Reply(status, headers, await reader.readexactly(length))


async def request(addr: HostPort, raw: bytes, head: bool = False) -> Reply:
    reader, writer = await asyncio.open_connection(addr.host, addr.port)
    try:
        writer.write(raw)
        reply = await asyncio.wait_for(read_reply(reader), 5)
        return reply
    finally:
        writer.close()


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode()


class State:
    ready = Readiness(False, "metadata not loaded")


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, BrokerMetrics, State]]:
    state = State()
    metrics = BrokerMetrics(node_id=1)
    server = HttpServer(HostPort("127.0.0.1", 0), HttpLimits(body_bytes_max=1000))
    install_standard_routes(
        server, metrics.registry, lambda: state.ready, lambda: {"nodes": [1], "topics": {}}
    )
    await server.start()
    yield server, metrics, state
    await server.stop()


async def test_healthz_and_cluster(served: tuple[HttpServer, BrokerMetrics, State]) -> None:
    server, _, _ = served
    reply = await request(server.address, get("/healthz"))
    assert (reply.status, reply.body) == (200, b"ok\n")
    reply = await request(server.address, get("/v1/cluster"))
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert json.loads(reply.body) == {"nodes": [1], "topics": {}}


async def test_readyz_follows_the_callback(served: tuple[HttpServer, BrokerMetrics, State]) -> None:
    server, _, state = served
    reply = await request(server.address, get("/readyz"))
    assert reply.status == 503
    assert json.loads(reply.body) == {"ready": False, "reason": "metadata not loaded"}
    state.ready = Readiness(True)
    assert (await request(server.address, get("/readyz"))).status == 200


async def test_metrics_content_type_and_counter_moves(
    served: tuple[HttpServer, BrokerMetrics, State],
) -> None:
    server, metrics, _ = served
    line = 'raftka_requests_total{api="Produce",error="NONE",version="9"}'
    metrics.observe_request("Produce", 9, "NONE", 0.002)
    reply = await request(server.address, get("/metrics"))
    assert reply.status == 200
    assert reply.headers["content-type"] == CONTENT_TYPE_LATEST
    assert f"{line} 1.0" in reply.body.decode()
    metrics.observe_request("Produce", 9, "NONE", 0.002)
    reply = await request(server.address, get("/metrics"))
    assert f"{line} 2.0" in reply.body.decode()
    assert 'raftka_request_duration_seconds_count{api="Produce"} 2.0' in reply.body.decode()


async def test_loop_lag_monitor_reports(served: tuple[HttpServer, BrokerMetrics, State]) -> None:
    _, metrics, _ = served
    monitor = metrics.start_loop_lag_monitor(interval_ms=1)
    try:
        while monitor.samples < 3:
            await asyncio.sleep(0.001)
    finally:
        monitor.stop()
    assert metrics.registry.get_sample_value("raftka_event_loop_probe_lag_seconds_count") >= 3


async def test_unknown_path_and_wrong_method(
    served: tuple[HttpServer, BrokerMetrics, State],
) -> None:
    server, _, _ = served
    assert (await request(server.address, get("/nope"))).status == 404
    reply = await request(server.address, get("/healthz", method="POST"))
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"


async def test_head_has_headers_but_no_body(
    served: tuple[HttpServer, BrokerMetrics, State],
) -> None:
    server, _, _ = served
    reader, writer = await asyncio.open_connection(server.address.host, server.address.port)
    writer.write(get("/healthz", method="HEAD"))
    head = await asyncio.wait_for(reader.read(), 5)  # server closes: Connection: close
    writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 3\r\n" in head and head.endswith(b"\r\n\r\n")


async def test_keep_alive_serves_several_requests(
    served: tuple[HttpServer, BrokerMetrics, State],
) -> None:
    server, _, _ = served
    reader, writer = await asyncio.open_connection(server.address.host, server.address.port)
    try:
        for path in ("/healthz", "/v1/cluster", "/healthz"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = await asyncio.wait_for(read_reply(reader), 5)
            assert reply.status == 200
            assert reply.headers["connection"] == "keep-alive"
    finally:
        writer.close()
    assert server.requests_served == 3


async def test_added_route_receives_body_and_query(
    served: tuple[HttpServer, BrokerMetrics, State],
) -> None:
    server, _, _ = served

    async def echo(req: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"body": req.body.decode(), "q": dict(req.query)})

    async def broken(req: HttpRequest) -> HttpResponse:
        raise RuntimeError("bug")

    server.add_route("POST", "/v1/faults", echo)
    server.add_route("GET", "/broken", broken)
    raw = b"POST /v1/faults?peer=2 HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    reply = await request(server.address, raw)
    assert json.loads(reply.body) == {"body": "hello", "q": {"peer": "2"}}
    assert (await request(server.address, get("/broken"))).status == 500
    assert (await request(server.address, get("/healthz"))).status == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (get("/" + "a" * 10_000), 414),
        (get("/healthz", extra="X-Big: " + "b" * 10_000 + "\r\n"), 431),
        (get("/healthz", extra="".join(f"X-{i}: v\r\n" for i in range(100))), 431),
        (b"POST /v1/cluster HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    ],
)
async def test_request_bounds(
    served: tuple[HttpServer, BrokerMetrics, State], raw: bytes, status: int
) -> None:
    server, _, _ = served
    reply = await request(server.address, raw)
    assert reply.status == status
    assert reply.headers["connection"] == "close"
    assert (await request(server.address, get("/healthz"))).status == 200


async def test_connection_limit() -> None:
    server = HttpServer(HostPort("127.0.0.1", 0), HttpLimits(connections_max=1))
    install_standard_routes(server, BrokerMetrics(1).registry, lambda: Readiness(True), dict)
    await server.start()
    try:
        _, holder = await asyncio.open_connection(server.address.host, server.address.port)
        while not server._connections:
            await asyncio.sleep(0.001)
        reply = await request(server.address, get("/healthz"))
        assert reply.status == 503
        holder.close()
    finally:
        await server.stop()


def test_serve_process_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`python -m broker serve` as a real process, started and stopped through the harness."""
    node = BrokerProcess(1, tmp_path, ready_path="/healthz", settings={"log_format": "json"})
    node.start()
    try:
        node.wait_ready(timeout_s=20)
        status, body = node.http_get("/healthz")
        assert (status, body) == (200, b"ok\n")
        status, body = node.http_get("/readyz")
        assert status in (200, 503) and "ready" in json.loads(body)
        status, body = node.http_get("/metrics")
        assert status == 200 and b"raftka_event_loop_lag_seconds" in body
    finally:
        code = node.terminate(timeout_s=10)
    assert code == 0, node.log_tail()
    log_lines = node.log_path.read_text().splitlines()
    events = [json.loads(line)["msg"] for line in log_lines if line.startswith("{")]
    assert "stop signal received" in events and events[-1] == "stopped"


def _start_run_local(tmp_path: Path) -> tuple[subprocess.Popen[str], BrokerProcess]:
    """`broker run-local` with one node on fresh ports, once that node answers /healthz."""
    kafka, raft, http = PORTS.allocate(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "run-local", "--nodes", "1",
         "--data-dir", str(tmp_path), "--kafka-port", str(kafka), "--raft-port", str(raft),
         "--http-port", str(http)],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    child = BrokerProcess(1, tmp_path, ports=(kafka, raft, http))
    child.proc = proc  # the parent's liveness stands in for the child's in wait_ready
    try:
        child.wait_ready(timeout_s=20, path="/healthz")
    except BaseException:
        proc.kill()
        proc.communicate(timeout=15)
        raise
    return proc, child


def test_run_local_starts_nodes_and_forwards_sigterm(tmp_path: Path) -> None:
    proc, child = _start_run_local(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"bootstrap servers: 127.0.0.1:{child.kafka_port}" in out
    assert (tmp_path / "node-1").is_dir()
    assert child.http_get("/healthz")[0] == 0  # the child is gone too


def test_run_local_children_stop_when_the_supervisor_is_sigkilled(tmp_path: Path) -> None:
    proc, child = _start_run_local(tmp_path)
    proc.kill()  # no chance to forward anything: the kernel must stop the child
    proc.communicate(timeout=15)
    deadline = time.monotonic() + 20
    while child.http_get("/healthz")[0] != 0:
        assert time.monotonic() < deadline, "the node outlived its SIGKILLed supervisor"
        time.sleep(0.05)  # poll interval
