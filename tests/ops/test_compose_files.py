"""The compose files, Dockerfile and monitoring config are valid and name real things.

`docker-compose config` (the real command) must accept each compose file; every RAFTKA_*
variable a broker container sees must be a setting of the broker, and together with the
image's defaults must build a valid `BrokerConfig`; files mounted from deploy/ must exist;
the dashboard and Prometheus config must use metric names the broker exports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from broker.config import ENV_PREFIX, load_config, settings_reference
from broker.metrics import BrokerMetrics
from tests.harness import ROOT
from tests.ops.compose import (
    COMPOSE_FILES,
    broker_services,
    compose_config,
    effective_env,
    image_env,
    service_env,
)

SETTING_VARS = {info.env_var for info in settings_reference()} | {ENV_PREFIX + "CONFIG"}


@pytest.fixture(scope="module", params=COMPOSE_FILES, ids=lambda p: p.name)
def compose(request: pytest.FixtureRequest) -> dict:
    return compose_config(request.param)


def test_compose_config_accepts_each_file(compose: dict) -> None:
    assert broker_services(compose), "no service builds deploy/Dockerfile"


def test_every_raftka_variable_is_a_setting(compose: dict) -> None:
    seen = set()
    for name, svc in compose["services"].items():
        for key in service_env(svc):
            if key.startswith(ENV_PREFIX):
                assert key in SETTING_VARS, f"{name} sets {key}, which is no broker setting"
                seen.add(key)
    for key in image_env():
        if key.startswith(ENV_PREFIX):
            assert key in SETTING_VARS, f"deploy/Dockerfile sets {key}, which is no setting"
    assert {"RAFTKA_NODE_ID", "RAFTKA_LISTENERS", "RAFTKA_ADVERTISED_LISTENERS"} <= seen


def test_each_broker_service_has_a_valid_config(compose: dict) -> None:
    node_ids = set()
    for name, svc in broker_services(compose).items():
        config = load_config(cli={}, env=effective_env(svc)).config
        node_ids.add(config.node_id)
        assert config.data_dir == "/var/lib/raftka"
        assert "/var/lib/raftka" in {t for _, t in _volumes(svc)}, f"{name}: no volume"
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        listeners = {lst.name: lst for lst in config.kafka_listeners()}
        published = {int(p["target"]) for p in svc.get("ports", [])}
        if "EXTERNAL" in listeners:  # the host reaches EXTERNAL through a published port
            ext = listeners["EXTERNAL"]
            assert ext.advertised.host == "localhost", f"{name}: EXTERNAL not for the host"
            assert ext.bind.port in published, f"{name}: EXTERNAL port not published"
            assert ext.advertised.port == _host_port(svc, ext.bind.port)
        for lst in listeners.values():
            if lst.name != "EXTERNAL":
                assert lst.advertised.host == svc.get("hostname", name), (name, lst)
        for peer in config.voters():
            if peer.node_id == config.node_id:
                assert peer.address.port == config.raft_listen.port
    assert len(node_ids) == len(broker_services(compose)), "node ids repeat"


def test_three_node_file_layout() -> None:
    compose = compose_config(ROOT / "docker-compose.yml")
    brokers = broker_services(compose)
    assert sorted(brokers) == ["raftka-1", "raftka-2", "raftka-3"]
    external = []
    for name, svc in brokers.items():
        config = load_config(cli={}, env=effective_env(svc)).config
        assert config.node_id == int(name[-1])
        assert {p.node_id: p.address.host for p in config.peers} == {
            i: f"raftka-{i}" for i in (1, 2, 3)
        }
        adv = {lst.name: str(lst.advertised) for lst in config.kafka_listeners()}
        assert adv["INTERNAL"] == f"{name}:9092"
        external.append(adv["EXTERNAL"])
    assert external == ["localhost:19092", "localhost:19093", "localhost:19094"]
    monitoring = {
        n for n, s in compose["services"].items() if "monitoring" in s.get("profiles", [])
    }
    assert monitoring == {"prometheus", "grafana"}


def test_mounted_files_exist() -> None:
    for path in COMPOSE_FILES:
        for name, svc in compose_config(path)["services"].items():
            for source, _ in _volumes(svc):
                if source.startswith("/"):
                    assert Path(source).exists(), f"{path.name} {name} mounts missing {source}"


def _exported_names() -> set[str]:
    names = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for metric in BrokerMetrics(1).registry.collect():
        names.add(metric.name)
        names.update(metric.name + s for s in suffixes.get(metric.type, ()))
    return names


def test_dashboard_and_prometheus_use_real_metrics() -> None:
    exported = _exported_names()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/raftka.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\braftka_[a-z_]+", e)}
    # Counters export as *_total; the peer transport's series appear only at run time.
    unknown = {m for m in used if m not in exported and not m.startswith("raftka_peer_")}
    assert not unknown, f"dashboard uses metrics the broker does not export: {unknown}"
    for needed in (
        "raftka_under_replicated_partitions", "raftka_leaderless_partitions",
        "raftka_raft_elections_total", "raftka_fsync_duration_seconds_bucket",
        "raftka_event_loop_lag_seconds", "raftka_request_duration_seconds_bucket",
    ):  # fmt: skip
        assert needed in used, f"dashboard has no panel on {needed}"
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {ds["uid"] for ds in datasources}
    assert all(p["datasource"]["uid"] in uids for p in dashboard["panels"])
    prom = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["raftka-1:9292", "raftka-2:9292", "raftka-3:9292"]


def _volumes(svc: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume; `docker-compose config` prints SOURCE:TARGET:MODE."""
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out.append((v.get("source", ""), v["target"]))
        else:
            source, _, rest = str(v).partition(":")
            out.append((source, rest.split(":")[0]))
    return out


def _host_port(svc: dict, target: int) -> int:
    for p in svc.get("ports", []):
        if int(p["target"]) == target:
            return int(p["published"])
    raise AssertionError(f"port {target} not published")


def _dockerfile_instructions() -> dict[str, list[str]]:
    """Instruction -> its argument texts, continuation lines joined."""
    text = (ROOT / "deploy/Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def test_dockerfile_shape_and_healthcheck_match_compose() -> None:
    ins = _dockerfile_instructions()
    assert ins["FROM"] == ["python:3.11-slim"]
    assert ins["USER"] == ["raftka"]  # non-root
    assert json.loads(ins["VOLUME"][0]) == ["/var/lib/raftka"]
    assert json.loads(ins["ENTRYPOINT"][0]) == ["python", "-m", "broker", "serve"]
    assert any("pip install ." in run for run in ins["RUN"])
    # The image's HEALTHCHECK is the command the compose files run (and the cluster test
    # executes against a live node): one definition of "healthy".
    options, _, cmd = ins["HEALTHCHECK"][0].partition("CMD ")
    assert "/readyz" in cmd and "--start-period" in options
    for path in COMPOSE_FILES:
        for name, svc in broker_services(compose_config(path)).items():
            assert svc["healthcheck"]["test"] == ["CMD", *json.loads(cmd)], (path.name, name)
