"""The `raftka` command: run a broker node, a local dev cluster, or list the settings.

    python -m broker serve [--config FILE] [--node-id N] [--peers ...] ...   one node
    python -m broker run-local [--nodes 3] [--data-dir ./data/local]          `make run`
    python -m broker settings [--format markdown|json]                        the reference

`serve` reads the settings (command line > RAFTKA_* environment > TOML > defaults),
refuses to run under `python -O` (the broker's assertions are its invariants and must
stay on), installs uvloop and structured logging, and runs the node until SIGTERM or
SIGINT: the first signal stops it gracefully, a second one exits at once.

Start order: HTTP first (so /healthz answers while the node recovers its logs), then the
node (`broker/node.py`, which registers its transport callbacks), then the Raft transport
listener and the links to the peers, so no message arrives before its handler exists.
Stop order is the reverse. Until `broker/node.py` exists, `serve` runs only the HTTP
server and the transport, and /readyz says why it is not ready.

`run-local` starts N `serve` children on 127.0.0.1 (Kafka 9092.., Raft 9192.., HTTP
9292..), each in its own session so that the terminal's Ctrl-C reaches only this parent,
which forwards one SIGTERM to each child and waits; a second Ctrl-C kills them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from broker.clock import SystemClock
from broker.config import (
    BrokerConfig,
    ConfigError,
    cli_flag_for,
    load_config,
    settings_reference,
)
from broker.http_server import HttpServer, Readiness, install_standard_routes
from broker.log_setup import setup_logging
from broker.metrics import BrokerMetrics, PeerTransportCollector
from broker.peer_transport import LinkFilter, PeerTransport, TransportConfig

log = logging.getLogger("broker")

EXIT_CONFIG = 2
EXIT_STARTUP = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "run-local" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve":
        return _serve_command(args)
    if args.command == "run-local":
        return asyncio.run(_run_local(args, extra))
    if args.command == "settings":
        _print_settings(args.format)
        return 0
    parser.print_help()
    return EXIT_CONFIG


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftka", description="Raftka broker")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run one broker node")
    serve.add_argument("--config", help="TOML settings file (also RAFTKA_CONFIG)")
    for info in settings_reference():
        kwargs: dict[str, Any] = {"dest": info.name, "default": None, "help": info.help}
        if info.choices:
            kwargs["metavar"] = "|".join(info.choices)
        if info.default in ("true", "false"):
            kwargs.update(nargs="?", const="true", metavar="true|false")
        serve.add_argument(info.cli_flag, **kwargs)
    local = sub.add_parser(
        "run-local",
        help="run a local cluster of child processes (extra options go to every node)",
    )
    local.add_argument("--nodes", type=int, default=3, help="number of nodes (1-9)")
    local.add_argument("--data-dir", default="./data/local", help="parent data directory")
    local.add_argument("--host", default="127.0.0.1", help="address every listener binds")
    local.add_argument("--kafka-port", type=int, default=9092, help="node 1's Kafka port")
    local.add_argument("--raft-port", type=int, default=9192, help="node 1's Raft port")
    local.add_argument("--http-port", type=int, default=9292, help="node 1's HTTP port")
    settings = sub.add_parser("settings", help="print every setting with its default")
    settings.add_argument("--format", choices=("markdown", "json"), default="markdown")
    return parser


# ---------------------------------------------------------------------------------------
# serve


def _serve_command(args: argparse.Namespace) -> int:
    if sys.flags.optimize:
        print("raftka: refusing to run under python -O: assertions guard the broker's "
              "invariants and must stay on", file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    cli = {info.name: getattr(args, info.name) for info in settings_reference()}
    try:
        loaded = load_config({k: v for k, v in cli.items() if v is not None}, None, args.config)
    except ConfigError as exc:
        print(f"raftka: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    config = loaded.config
    setup_logging(config.log_level, config.log_format, config.node_id)
    _stop_with_parent()
    import uvloop  # late: `settings` and config errors should not need it

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(config, loaded.sources))


async def serve(config: BrokerConfig, sources: Mapping[str, str] | None = None) -> int:
    """Runs one node until a stop signal; returns the process exit code."""
    try:
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.error("cannot create data_dir", extra={"path": config.data_dir, "error": str(exc)})
        return EXIT_STARTUP
    stop = asyncio.Event()
    _install_stop_signals(stop)
    runtime = _Runtime(config, dict(sources or {}))
    try:
        await runtime.start()
    except OSError as exc:
        log.error("startup failed", extra={"error": str(exc)})
        await runtime.stop()
        return EXIT_STARTUP
    await stop.wait()
    log.info("stopping")
    await runtime.stop()
    log.info("stopped")
    return 0


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting at once", extra={"signal": signum})
            logging.shutdown()
            os._exit(128 + signum)
        log.info("stop signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


class _Runtime:
    """The process-level parts around the node: HTTP, transport, metrics, the node."""

    def __init__(self, config: BrokerConfig, sources: dict[str, str]) -> None:
        self.config = config
        self.sources = sources
        self.clock = SystemClock()
        self.metrics = BrokerMetrics(config.node_id)
        self.transport = PeerTransport(
            config.node_id,
            config.cluster_id,
            config.raft_listen,
            TransportConfig.from_broker_config(config),
        )
        if config.fault_injection:
            self.transport.link_filter = LinkFilter()
        self.metrics.add_collector(PeerTransportCollector(self.transport.stats))
        self.http = HttpServer(config.http_listen)
        self.node: Any = _make_node(self)
        self._lag_monitor: Any = None

    async def start(self) -> None:
        readiness: Callable[[], Readiness] = self._placeholder_readiness
        cluster_info: Callable[[], Mapping[str, Any]] = self._placeholder_cluster_info
        if self.node is not None:
            readiness = self.node.readiness
            cluster_info = getattr(self.node, "cluster_info", cluster_info)
        install_standard_routes(self.http, self.metrics.registry, readiness, cluster_info)
        await self.http.start()
        self._lag_monitor = self.metrics.start_loop_lag_monitor()
        if self.node is not None:
            await self.node.start()
        await self.transport.start()
        for peer in self.config.voters():
            if peer.node_id != self.config.node_id:
                self.transport.add_peer(peer.node_id, peer.address)
        log.info(
            "broker started",
            extra={
                "kafka": ",".join(str(lst.advertised) for lst in self.config.kafka_listeners()),
                "raft": str(self.transport.address),
                "http": str(self.http.address),
                "voters": len(self.config.voters()),
                "node_impl": "node" if self.node is not None else "placeholder",
            },
        )

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()
        if self._lag_monitor is not None:
            self._lag_monitor.stop()
        await self.transport.stop()
        await self.http.stop()

    def _placeholder_readiness(self) -> Readiness:
        return Readiness(False, "no broker.node module yet: serving HTTP and transport only")

    def _placeholder_cluster_info(self) -> Mapping[str, Any]:
        return {
            "node_id": self.config.node_id,
            "cluster_id": self.config.cluster_id,
            "voters": {p.node_id: str(p.address) for p in self.config.voters()},
            "peer_links": self.transport.stats(),
        }


def _make_node(runtime: _Runtime) -> Any:
    """Builds `broker.node.Node` if it exists (imported lazily), else returns None.

    The node's contract: `Node(config=, metrics=, transport=, clock=, http=, sources=)`,
    `async start()` (returns once its tasks run; must not wait for peers),
    `async stop()`, `readiness() -> Readiness`, optionally `cluster_info() -> dict`.
    It may add HTTP routes to `http` in its constructor.
    """
    try:
        module = importlib.import_module("broker.node")
    except ModuleNotFoundError as exc:
        if exc.name != "broker.node":
            raise
        return None
    return module.Node(
        config=runtime.config,
        metrics=runtime.metrics,
        transport=runtime.transport,
        clock=runtime.clock,
        http=runtime.http,
        sources=runtime.sources,
    )


# ---------------------------------------------------------------------------------------
# run-local


#: Set by run-local on its children: the pid whose death must stop them.
PARENT_PID_ENV = "_RAFTKA_PARENT_PID"  # not a RAFTKA_* setting
_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """A run-local child asks Linux for SIGTERM when its parent dies, even by SIGKILL.

    The children run in their own session (so a terminal's Ctrl-C reaches only the
    supervisor, which stops them in order); without this a killed supervisor would leave
    them running and holding the ports. Elsewhere than Linux this is a no-op.
    """
    parent = os.environ.pop(PARENT_PID_ENV, "")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)  # it died before prctl took effect


async def _run_local(args: argparse.Namespace, extra: list[str]) -> int:
    n = args.nodes
    if not 1 <= n <= 9:
        print("raftka run-local: --nodes must be between 1 and 9", file=sys.stderr)
        return EXIT_CONFIG
    host = args.host
    peers = ",".join(f"{i}@{host}:{args.raft_port + i - 1}" for i in range(1, n + 1))
    children: list[asyncio.subprocess.Process] = []
    for i in range(1, n + 1):
        settings = {
            "node_id": str(i),
            "cluster_id": "raftka-local",
            "data_dir": str(Path(args.data_dir) / f"node-{i}"),
            "listen": f"{host}:{args.kafka_port + i - 1}",
            "raft_listen": f"{host}:{args.raft_port + i - 1}",
            "http_listen": f"{host}:{args.http_port + i - 1}",
        }
        if n > 1:
            settings["peers"] = peers
        argv = [sys.executable, "-m", "broker", "serve"]
        for name, value in settings.items():
            argv += [cli_flag_for(name), value]
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        children.append(
            await asyncio.create_subprocess_exec(*argv, *extra, start_new_session=True, env=env)
        )
    bootstrap = ",".join(f"{host}:{args.kafka_port + i}" for i in range(n))
    print(f"Raftka local cluster: {n} node(s), data under {args.data_dir}")
    print(f"  bootstrap servers: {bootstrap}")
    for i in range(n):
        print(f"  node {i + 1}: kafka {host}:{args.kafka_port + i}  "
              f"http http://{host}:{args.http_port + i}/ (/metrics /readyz /v1/cluster)")  # fmt: skip
    print("Ctrl-C stops every node.", flush=True)
    return await _supervise(children, host, args.http_port)


async def _supervise(children: list[asyncio.subprocess.Process], host: str, http_port: int) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            print("raftka run-local: killing every node", file=sys.stderr, flush=True)
            for child in children:
                if child.returncode is None:
                    child.kill()
            return
        stopping.set()
        print("raftka run-local: stopping (Ctrl-C again to kill)", file=sys.stderr, flush=True)
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    reporter = loop.create_task(_report_ready(host, http_port, len(children)))
    codes = await asyncio.gather(*(_watch(i + 1, c, stopping) for i, c in enumerate(children)))
    reporter.cancel()
    return 0 if stopping.is_set() and all(code in (0, -signal.SIGKILL) for code in codes) else 1


async def _watch(node_id: int, child: asyncio.subprocess.Process, stopping: asyncio.Event) -> int:
    code = await child.wait()
    if not stopping.is_set():
        print(f"raftka run-local: node {node_id} exited with code {code}", file=sys.stderr)
    return code


async def _report_ready(host: str, http_port: int, n: int) -> None:
    """Prints once when every node answers /readyz 200, or why not after 30 s."""
    deadline = asyncio.get_running_loop().time() + 30
    reasons: dict[int, str] = {}
    while asyncio.get_running_loop().time() < deadline:
        for i in range(n):
            status, body = await _http_get(host, http_port + i, "/readyz")
            if status == 200:
                reasons.pop(i + 1, None)
            else:
                reasons[i + 1] = body or "not answering yet"
        if not reasons:
            print("All nodes ready.", flush=True)
            return
        await asyncio.sleep(0.2)
    for node_id, reason in sorted(reasons.items()):
        print(f"raftka run-local: node {node_id} not ready after 30 s: {reason}", flush=True)


async def _http_get(host: str, port: int, path: str) -> tuple[int, str]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
    except (OSError, TimeoutError):
        return 0, ""
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(1 << 16), 2)
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        return status, body.decode(errors="replace").strip()
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0, ""
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------
# settings


def _print_settings(fmt: str) -> None:
    rows = settings_reference()
    if fmt == "json":
        print(json.dumps([{
            "name": r.name, "default": r.default, "env": r.env_var, "flag": r.cli_flag,
            "help": r.help, "choices": list(r.choices),
        } for r in rows], indent=1))  # fmt: skip
        return
    print("| setting | default | environment | flag | meaning |")
    print("|---|---|---|---|---|")
    for r in rows:
        default = f"`{r.default}`" if r.default else "(none)"
        print(f"| `{r.name}` | {default} | `{r.env_var}` | `{r.cli_flag}` | {r.help} |")


if __name__ == "__main__":
    sys.exit(main())
