"""Reads the compose files the way Docker does, and replays them on loopback without Docker.

`compose_config(path)` runs the real `docker-compose config` (Debian's docker-compose,
installed by tools/setup_env.sh) and parses what it prints, so merges, anchors and
interpolation are resolved exactly as Compose resolves them. `image_env()` reads the
`ENV` defaults of deploy/Dockerfile, which a container sees under the compose variables.

`LoopbackCompose` starts one broker process per compose service with that service's
effective environment, changed only where a container differs from a loopback address:

- each service's hostname gets its own loopback address (raftka-1 -> 127.0.0.1,
  raftka-2 -> 127.0.0.2, ...), and `localhost` is 127.0.0.1, the host;
- each compose port number becomes one free port (the same on every address, like the
  same port inside every container);
- a wildcard bind (0.0.0.0) binds the address it advertises: the service's own address
  for INTERNAL, Raft and HTTP, 127.0.0.1 for EXTERNAL (the host's published port);
- `RAFTKA_DATA_DIR` is a temporary directory.

Nothing else changes: same variables, same listener names and layout, same peers.
"""

from __future__ import annotations

import copy
import functools
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from broker.config import (
    ListenerSpec,
    Peer,
    format_value,
    parse_host_port,
    parse_listeners,
    parse_peers,
)
from tests.harness import PORTS, ROOT, BrokerProcess

COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.single.yml")
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def compose_config(path: Path) -> dict[str, Any]:
    """`docker-compose -f path config`, parsed. Raises with its stderr when it fails."""
    return copy.deepcopy(_compose_config(path))


@functools.cache
def _compose_config(path: Path) -> dict[str, Any]:
    # Cached: each run costs about a second, and the files do not change during a test run.
    proc = subprocess.run(
        ["docker-compose", "-f", str(path), "config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, f"docker-compose config {path.name} failed:\n{proc.stderr}"
    data = yaml.safe_load(proc.stdout)
    assert isinstance(data, dict)
    return data


def image_env(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """The `ENV KEY=VALUE ...` defaults of a Dockerfile (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            for item in shlex.split(line.strip()[4:]):
                key, sep, value = item.partition("=")
                assert sep, f"ENV item without '=' in {dockerfile}: {item!r}"
                env[key] = value
    return env


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def broker_services(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from deploy/Dockerfile (the brokers), in name order."""
    return {
        name: svc
        for name, svc in sorted(config["services"].items())
        if (svc.get("build") or {}).get("dockerfile", "").endswith("deploy/Dockerfile")
    }


def effective_env(service: Mapping[str, Any]) -> dict[str, str]:
    """What the broker process in the container sees: image defaults, then compose."""
    return {**image_env(), **service_env(service)}


def _free_on_all(addresses: list[str]) -> int:
    for _ in range(200):
        (port,) = PORTS.allocate(1)
        if all(_bindable(addr, port) for addr in addresses):
            return port
    raise RuntimeError("no port free on every loopback address")


def _bindable(addr: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


@dataclass
class LoopbackPlan:
    """Hostname -> loopback address and compose port -> free port, shared by all nodes."""

    hosts: dict[str, str]
    ports: dict[int, int] = field(default_factory=dict)

    def host(self, name: str) -> str:
        return self.hosts.get(name, name)

    def port(self, port: int) -> int:
        if port not in self.ports:
            self.ports[port] = _free_on_all(sorted(set(self.hosts.values())))
        return self.ports[port]

    def address(self, text: str, wildcard_to: str) -> str:
        hp = parse_host_port(text)
        host = wildcard_to if hp.host in WILDCARDS else self.host(hp.host)
        return f"{host}:{self.port(hp.port)}"


def translate_env(
    env: Mapping[str, str], own_address: str, plan: LoopbackPlan, data_dir: Path
) -> dict[str, str]:
    """One service's RAFTKA_* environment, rewritten for loopback (see module docstring)."""
    out = {k: v for k, v in env.items() if k.startswith("RAFTKA_")}
    advertised = {
        s.name: s.address for s in parse_listeners(out.get("RAFTKA_ADVERTISED_LISTENERS", ""))
    }
    if "RAFTKA_LISTENERS" in out:
        specs = []
        for spec in parse_listeners(out["RAFTKA_LISTENERS"]):
            adv = advertised.get(spec.name)
            to = plan.host(adv.host) if adv is not None else own_address
            specs.append(
                ListenerSpec(spec.name, parse_host_port(plan.address(str(spec.address), to)))
            )
        out["RAFTKA_LISTENERS"] = format_value(tuple(specs))
    if "RAFTKA_ADVERTISED_LISTENERS" in out:
        specs = [
            ListenerSpec(name, parse_host_port(plan.address(str(addr), own_address)))
            for name, addr in advertised.items()
        ]
        out["RAFTKA_ADVERTISED_LISTENERS"] = format_value(tuple(specs))
    for key in ("RAFTKA_RAFT_LISTEN", "RAFTKA_HTTP_LISTEN", "RAFTKA_LISTEN", "RAFTKA_ADVERTISE"):
        if out.get(key):
            out[key] = plan.address(out[key], own_address)
    if out.get("RAFTKA_PEERS"):
        peers = [
            Peer(p.node_id, parse_host_port(plan.address(str(p.address), own_address)))
            for p in parse_peers(out["RAFTKA_PEERS"])
        ]
        out["RAFTKA_PEERS"] = format_value(tuple(peers))
    out["RAFTKA_DATA_DIR"] = str(data_dir)
    return out


class ComposeBroker(BrokerProcess):
    """A broker configured by environment only, as in its container (no command-line flags)."""

    def __init__(self, node_id: int, base_dir: Path, env: Mapping[str, str]) -> None:
        http = parse_host_port(env["RAFTKA_HTTP_LISTEN"])
        super().__init__(node_id, base_dir, env=env, ports=(0, 0, http.port))
        self.http_host = http.host

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "broker", "serve"]

    @property
    def http_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def advertised(self, listener: str) -> str:
        """The translated advertised address of one listener name."""
        for spec in parse_listeners(self.env["RAFTKA_ADVERTISED_LISTENERS"]):
            if spec.name == listener:
                return str(spec.address)
        raise KeyError(listener)


class LoopbackCompose:
    """The broker services of one compose file, as local processes (see module docstring)."""

    def __init__(self, compose_file: Path, base_dir: Path) -> None:
        self.config = compose_config(compose_file)
        services = broker_services(self.config)
        hostnames = [svc.get("hostname", name) for name, svc in services.items()]
        self.plan = LoopbackPlan({h: f"127.0.0.{i + 1}" for i, h in enumerate(hostnames)})
        self.plan.hosts["localhost"] = "127.0.0.1"
        self.services: dict[str, dict[str, Any]] = services
        self.brokers: dict[str, ComposeBroker] = {}
        for (name, svc), hostname in zip(services.items(), hostnames):
            env = effective_env(svc)
            node_id = int(env["RAFTKA_NODE_ID"])
            own = self.plan.host(hostname)
            translated = translate_env(env, own, self.plan, base_dir / f"node-{node_id}")
            self.brokers[name] = ComposeBroker(node_id, base_dir, translated)

    def bootstrap(self, listener: str) -> str:
        return ",".join(b.advertised(listener) for b in self.brokers.values())

    def start(self, timeout_s: float = 30.0) -> None:
        for b in self.brokers.values():
            b.start()
        for b in self.brokers.values():
            b.wait_ready(timeout_s)

    def stop(self) -> dict[str, int]:
        for b in self.brokers.values():
            if b.is_running():
                b.send_signal(15)
        return {name: b.wait_exit(30) for name, b in self.brokers.items() if b.proc}

    def logs(self) -> str:
        return "\n".join(b.log_tail() for b in self.brokers.values())

    def __iter__(self) -> Iterator[ComposeBroker]:
        return iter(self.brokers.values())
