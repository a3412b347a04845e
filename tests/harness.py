"""Runs real `python -m broker serve` processes for tests: ports, data dirs, logs, signals.

Every node gets free loopback ports, its own data directory and a log file. Readiness is
observed, never assumed: `wait_ready()` polls the node's HTTP `/readyz` (or another path)
until it answers 200, with a deadline, and fails with the process's log tail when the
deadline passes or the process dies. Tests can SIGKILL, SIGTERM, SIGSTOP, SIGCONT and
restart nodes; a restarted node keeps its ports and data directory.

Sync tests call the plain methods; async tests call the `a*` variants (`await
cluster.astart()`), which run the blocking waits on a worker thread so the test's event
loop keeps running (a client inside the test may be mid-request).

    with Cluster(3, tmp_path) as cluster:
        cluster.start()
        producer = Producer({"bootstrap.servers": cluster.bootstrap})
        cluster.kill(2); cluster.restart(2)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


class PortAllocator:
    """Hands out loopback ports that are free now and never hands out one twice.

    Ports come from 20000-32767, below Linux's ephemeral range (32768-60999), so the
    kernel does not give them to some outgoing connection between allocation and bind.
    The random start (seeded by pid) keeps parallel test processes apart, and each port
    is checked by binding it.
    """

    LOW, HIGH = 20000, 32767

    def __init__(self) -> None:
        self._rng = random.Random(os.getpid() * 1_000_003 + time.monotonic_ns())
        self._given: set[int] = set()
        self._lock = threading.Lock()

    def allocate(self, count: int = 1) -> list[int]:
        with self._lock:
            return [self._one() for _ in range(count)]

    def _one(self) -> int:
        for _ in range(1000):
            port = self._rng.randint(self.LOW, self.HIGH)
            if port not in self._given and _is_free(port):
                self._given.add(port)
                return port
        raise RuntimeError("no free loopback port found")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


PORTS = PortAllocator()


class NodeNotReady(AssertionError):
    pass


class BrokerProcess:
    """One broker node as a child process."""

    def __init__(
        self,
        node_id: int,
        base_dir: Path,
        *,
        settings: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/readyz",
        ports: tuple[int, int, int] | None = None,
    ) -> None:
        self.node_id = node_id
        self.kafka_port, self.raft_port, self.http_port = ports or tuple(PORTS.allocate(3))
        self.data_dir = base_dir / f"node-{node_id}"
        self.log_path = base_dir / f"node-{node_id}.log"
        self.settings = dict(settings or {})
        self.env = dict(env or {})
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def kafka_address(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def raft_address(self) -> str:
        return f"{HOST}:{self.raft_port}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def argv(self) -> list[str]:
        settings = {
            "node_id": str(self.node_id),
            "data_dir": str(self.data_dir),
            "listen": self.kafka_address,
            "raft_listen": self.raft_address,
            "http_listen": f"{HOST}:{self.http_port}",
            **self.settings,
        }
        argv = [sys.executable, "-m", "broker", "serve"]
        for name, value in settings.items():
            argv += ["--" + name.replace("_", "-"), value]
        return argv

    def start(self) -> None:
        assert not self.is_running(), f"node {self.node_id} already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKA_")}
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:  # append: a restart keeps the history
            log_file.write(f"--- start: {' '.join(self.argv())}\n".encode())
            log_file.flush()
            # A new session: a Ctrl-C at the terminal running pytest does not reach it.
            self.proc = subprocess.Popen(
                self.argv(), cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def http_get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        """(status, body); status 0 when nothing answers."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (OSError, ValueError):
            return 0, b""

    def wait_ready(self, timeout_s: float = 30.0, path: str | None = None) -> None:
        """Polls `path` (default `ready_path`) until 200; raises with the log tail if not."""
        path = path or self.ready_path
        deadline = time.monotonic() + timeout_s
        last: tuple[int, bytes] = (0, b"")
        while time.monotonic() < deadline:
            if not self.is_running():
                raise NodeNotReady(
                    f"node {self.node_id} exited with {self.returncode} before {path} was "
                    f"200\n{self.log_tail()}"
                )
            last = self.http_get(path, timeout_s=1.0)
            if last[0] == 200:
                return
            time.sleep(0.05)  # poll interval, not a readiness assumption
        raise NodeNotReady(
            f"node {self.node_id}: {path} not 200 within {timeout_s}s (last: {last[0]} "
            f"{last[1][:300]!r})\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path}:\n{tail}"

    def send_signal(self, signum: int) -> None:
        assert self.proc is not None, "not started"
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)

    def kill(self) -> int:
        """SIGKILL and reap: a crash."""
        self.send_signal(signal.SIGKILL)
        return self.wait_exit()

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM (graceful stop) and wait; SIGKILL if it does not exit in time."""
        if not self.is_running():
            return self.returncode or 0
        self.send_signal(signal.SIGCONT)  # a paused node cannot handle SIGTERM
        self.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout_s)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            self.wait_exit()
            raise AssertionError(
                f"node {self.node_id} ignored SIGTERM for {timeout_s}s\n{self.log_tail()}"
            ) from None

    def pause(self) -> None:
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout_s: float = 15.0) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout_s)

    def restart(self, wait: bool = True, timeout_s: float = 30.0) -> None:
        """Starts the node again on the same ports and data; stops it first if running."""
        if self.is_running():
            self.terminate()
        self.start()
        if wait:
            self.wait_ready(timeout_s)


@contextlib.contextmanager
def running_broker(base_dir: Path, *, check_exit: bool = False) -> Iterator[BrokerProcess]:
    """One ready node for a module or package of tests, stopped gracefully afterwards
    (and, with `check_exit`, required to exit 0)."""
    node = BrokerProcess(1, base_dir)
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        if node.is_running():
            code = node.terminate()
            if check_exit:
                assert code == 0, f"shared broker exited with {code}\n{node.log_tail()}"


class Cluster:
    """N broker processes that know each other as voters."""

    def __init__(
        self,
        n: int,
        base_dir: Path,
        *,
        settings: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/readyz",
    ) -> None:
        assert n >= 1
        self.base_dir = Path(base_dir)
        self.nodes: dict[int, BrokerProcess] = {
            i: BrokerProcess(i, self.base_dir, settings=settings, env=env, ready_path=ready_path)
            for i in range(1, n + 1)
        }
        if n > 1:
            peers = ",".join(f"{i}@{p.raft_address}" for i, p in self.nodes.items())
            for p in self.nodes.values():
                p.settings.setdefault("peers", peers)

    def node(self, node_id: int) -> BrokerProcess:
        return self.nodes[node_id]

    @property
    def bootstrap(self) -> str:
        return ",".join(p.kafka_address for p in self.nodes.values())

    def http_url(self, node_id: int) -> str:
        return self.nodes[node_id].http_url

    def start(self, wait: bool = True, timeout_s: float = 30.0) -> None:
        for p in self.nodes.values():
            p.start()
        if wait:
            self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 30.0, nodes: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        for node_id in nodes or list(self.nodes):
            self.nodes[node_id].wait_ready(max(0.1, deadline - time.monotonic()))

    def running(self) -> list[int]:
        return [i for i, p in self.nodes.items() if p.is_running()]

    def kill(self, node_id: int) -> int:
        return self.nodes[node_id].kill()

    def terminate(self, node_id: int) -> int:
        return self.nodes[node_id].terminate()

    def restart(self, node_id: int, wait: bool = True) -> None:
        self.nodes[node_id].restart(wait=wait)

    def pause(self, node_id: int) -> None:
        self.nodes[node_id].pause()

    def resume(self, node_id: int) -> None:
        self.nodes[node_id].resume()

    def stop_all(self) -> dict[int, int]:
        """SIGTERM every running node at once, then wait for each; returns exit codes."""
        for p in self.nodes.values():
            if p.is_running():
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        codes = {}
        for node_id, p in self.nodes.items():
            if p.proc is not None:
                try:
                    codes[node_id] = p.wait_exit()
                except subprocess.TimeoutExpired:
                    codes[node_id] = p.kill()
        return codes

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.nodes.values())

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop_all()

    # Async variants: the same operations without blocking the test's event loop.

    async def astart(self, timeout_s: float = 30.0) -> None:
        self.start(wait=False)
        await asyncio.to_thread(self.wait_ready, timeout_s)

    async def await_ready(self, timeout_s: float = 30.0, nodes: list[int] | None = None) -> None:
        await asyncio.to_thread(self.wait_ready, timeout_s, nodes)

    async def arestart(self, node_id: int) -> None:
        await asyncio.to_thread(self.restart, node_id)

    async def aterminate(self, node_id: int) -> int:
        return await asyncio.to_thread(self.terminate, node_id)

    async def astop_all(self) -> dict[int, int]:
        return await asyncio.to_thread(self.stop_all)
