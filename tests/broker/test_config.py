"""Broker settings: layering, parsing, validation messages, the reference, logging."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from broker.clock import ManualClock, SystemClock
from broker.config import (
    BrokerConfig,
    ConfigError,
    HostPort,
    Listener,
    Peer,
    load_config,
    settings_reference,
)
from broker.log_setup import setup_logging

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_a_valid_one_node_cluster() -> None:
    cfg = load_config({}, env={}).config
    assert cfg == BrokerConfig()
    assert cfg.voters() == (Peer(1, HostPort("127.0.0.1", 9192)),)
    assert cfg.replication_factor() == 1
    assert cfg.kafka_listeners() == (
        Listener("PLAINTEXT", HostPort("127.0.0.1", 9092), HostPort("127.0.0.1", 9092)),
    )
    assert (cfg.tick_ms, cfg.election_ticks, cfg.heartbeat_ticks) == (50, 10, 2)
    assert cfg.frame_bytes_max == 100 * 1024 * 1024
    assert cfg.group_initial_rebalance_delay_ms == 0


def test_precedence_cli_over_env_over_toml_over_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "broker.toml"
    toml.write_text('node_id = 3\ntick_ms = 70\nelection_ticks = 20\nlog_level = "debug"\n'
                    'peers = ["1@h1:9192", "2@h2:9192", "3@h3:9192"]\n')  # fmt: skip
    env = {"RAFTKA_TICK_MS": "80", "RAFTKA_ELECTION_TICKS": "30", "PATH": "/bin"}
    loaded = load_config({"tick_ms": "90"}, env=env, config_file=str(toml))
    cfg = loaded.config
    assert cfg.tick_ms == 90  # command line
    assert cfg.election_ticks == 30  # environment
    assert cfg.node_id == 3 and cfg.log_level == "DEBUG"  # file
    assert cfg.heartbeat_ticks == 2  # default
    assert cfg.replication_factor() == 3
    assert loaded.sources["tick_ms"] == "command line --tick-ms"
    assert loaded.sources["election_ticks"] == "environment RAFTKA_ELECTION_TICKS"
    assert loaded.sources["node_id"] == f"config file {toml}"
    assert "heartbeat_ticks" not in loaded.sources


def test_config_file_from_environment(tmp_path: Path) -> None:
    toml = tmp_path / "b.toml"
    toml.write_text("num_partitions = 6\n")
    cfg = load_config({}, env={"RAFTKA_CONFIG": str(toml)}).config
    assert cfg.num_partitions == 6


def test_peers_and_replication_defaults() -> None:
    peers = ",".join(f"{i}@10.0.0.{i}:9192" for i in range(1, 6))
    cfg = load_config({"node_id": "4", "peers": peers}, env={}).config
    assert [p.node_id for p in cfg.voters()] == [1, 2, 3, 4, 5]
    assert cfg.voters()[3].address == HostPort("10.0.0.4", 9192)
    assert cfg.replication_factor() == 3
    assert cfg.offsets_replication_factor() == 3
    two = load_config({"peers": "1@a:1,2@b:2"}, env={}).config
    assert two.replication_factor() == 2


def test_kafka_style_listeners() -> None:
    cfg = load_config(
        {
            "listeners": "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092,LOCAL://127.0.0.1:29092",
            "advertised_listeners": "INTERNAL://raftka-1:9092,EXTERNAL://localhost:19092",
        },
        env={},
    ).config
    assert cfg.kafka_listeners() == (
        Listener("INTERNAL", HostPort("0.0.0.0", 9092), HostPort("raftka-1", 9092)),
        Listener("EXTERNAL", HostPort("0.0.0.0", 19092), HostPort("localhost", 19092)),
        Listener("LOCAL", HostPort("127.0.0.1", 29092), HostPort("127.0.0.1", 29092)),
    )


def test_listen_with_advertise_and_ipv6() -> None:
    cfg = load_config({"listen": "0.0.0.0:9092", "advertise": "broker.example:9092"}, env={})
    assert cfg.config.kafka_listeners()[0].advertised == HostPort("broker.example", 9092)
    v6 = load_config({"listen": "[::1]:9092"}, env={}).config
    assert v6.kafka_listeners()[0].bind == HostPort("::1", 9092)


BAD_SETTINGS = [
    ("node_id", "0"),
    ("node_id", "abc"),
    ("cluster_id", "has space"),
    ("data_dir", " "),
    ("listen", "nohostport"),
    ("listen", "h:70000"),
    ("advertise", "0.0.0.0:9092"),
    ("raft_listen", "127.0.0.1:9092"),  # clashes with the Kafka listener
    ("http_listen", "127.0.0.1:x"),
    ("peers", "2@h:1,3@h:2"),  # misses this node
    ("peers", "1@h:1,1@h:2"),
    ("peers", "1@0.0.0.0:9192"),
    ("peers", "one@h:1"),
    ("listeners", "PLAIN//h:1"),
    ("advertised_listeners", "X://h:1"),
    ("tick_ms", "0"),
    ("election_ticks", "1"),
    ("heartbeat_ticks", "0"),
    ("fsync", "sometimes"),
    ("segment_bytes_max", "10"),
    ("segment_age_ms_max", "0"),
    ("retention_ms", "-2"),
    ("retention_bytes", "-5"),
    ("auto_create_topics", "maybe"),
    ("num_partitions", "0"),
    ("default_replication_factor", "2"),  # one voter
    ("frame_bytes_max", "100"),
    ("connections_max", "0"),
    ("inflight_requests_per_connection_max", "0"),
    ("fetch_waiters_max", "0"),
    ("message_bytes_max", "0"),
    ("fetch_bytes_max", "0"),
    ("fetch_wait_ms_max", "-1"),
    ("producer_id_expiration_ms", "0"),
    ("group_initial_rebalance_delay_ms", "-1"),
    ("group_join_window_ms", "-1"),
    ("group_members_max", "0"),
    ("group_session_timeout_ms_min", "0"),
    ("group_session_timeout_ms_max", "0"),
    ("offsets_topic_partitions", "0"),
    ("offsets_topic_replication_factor", "4"),
    ("offsets_retention_ms", "0"),
    ("offsets_retention_check_interval_ms", "0"),
    ("offsets_metadata_bytes_max", "-1"),
    ("offsets_compaction_records_min", "0"),
    ("offsets_compaction_live_ratio", "0"),
    ("peer_queue_messages_max", "0"),
    ("peer_frame_bytes_max", "1"),
    ("peer_connect_timeout_ms", "0"),
    ("peer_backoff_ms_min", "0"),
    ("peer_backoff_ms_max", "0"),
    ("log_level", "LOUD"),
    ("log_format", "xml"),
    ("fault_injection", "2"),
    ("failpoints", "no_such_point=1"),
    ("durability_journal", "often"),
]


def test_every_setting_has_an_invalid_case() -> None:
    assert {name for name, _ in BAD_SETTINGS} == {f.name for f in dataclasses.fields(BrokerConfig)}


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_invalid_setting_is_named_in_the_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({name: value}, env={})
    assert info.value.setting == name
    assert f"invalid setting {name}=" in str(info.value)
    assert "command line" in str(info.value)


def test_cross_setting_errors_name_a_setting() -> None:
    cases = [
        ({"listen": "0.0.0.0:9092"}, "advertise", "wildcard"),
        ({"election_ticks": "5", "heartbeat_ticks": "5"}, "election_ticks", "heartbeat_ticks"),
        ({"listeners": "A://0.0.0.0:1"}, "advertised_listeners", "advertised"),
        ({"listeners": "A://h:1", "listen": "h:2"}, "listen", "listeners"),
        ({"advertised_listeners": "A://h:1"}, "advertised_listeners", "listeners"),
        ({"message_bytes_max": str(2**30), "frame_bytes_max": "1024"}, "message_bytes_max",
         "frame_bytes_max"),
    ]  # fmt: skip
    for cli, setting, hint in cases:
        with pytest.raises(ConfigError) as info:
            load_config(cli, env={})
        assert info.value.setting == setting, cli
        assert hint in str(info.value), str(info.value)


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="RAFTKA_TICK_MS") as info:
        load_config({}, env={"RAFTKA_TICK_MS": "fast"})
    assert info.value.setting == "tick_ms"
    with pytest.raises(ConfigError, match="unknown setting") as info:
        load_config({}, env={"RAFTKA_NODEID": "1"})
    assert info.value.setting == "nodeid"


def test_toml_errors(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    for text, setting in [
        ("tick_ms = true\n", "tick_ms"),
        ('tick_ms = "x"\n', "tick_ms"),
        ("auto_create_topics = 1\n", "auto_create_topics"),
        ("unknown_thing = 1\n", "unknown_thing"),
        ("node_id = \n", "config"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config({}, env={}, config_file=str(path))
        assert info.value.setting == setting, text
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({}, env={}, config_file=str(tmp_path / "missing.toml"))


def test_reference_lists_every_setting_and_defaults_round_trip() -> None:
    rows = settings_reference()
    assert [r.name for r in rows] == [f.name for f in dataclasses.fields(BrokerConfig)]
    for row in rows:
        assert row.env_var == "RAFTKA_" + row.name.upper()
        assert row.cli_flag == "--" + row.name.replace("_", "-")
        assert row.help
    # A default rendered as text parses back to the same value (README/compose use text).
    cli = {r.name: r.default for r in rows if r.default != ""}
    assert load_config(cli, env={}).config == BrokerConfig()


def test_example_toml_is_valid_and_documents_every_setting() -> None:
    path = ROOT / "deploy" / "broker.example.toml"
    cfg = load_config({}, env={}, config_file=str(path)).config
    assert cfg.node_id == 1
    text = path.read_text()
    for row in settings_reference():
        assert f"{row.name} =" in text, row.name


def test_settings_command_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "broker", "settings", "--format", "json"],
        cwd=ROOT, capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    rows = json.loads(out)
    assert {r["env"] for r in rows} >= {"RAFTKA_NODE_ID", "RAFTKA_PEERS", "RAFTKA_LISTENERS"}


def test_serve_refuses_python_O_and_bad_settings() -> None:
    opt = subprocess.run(
        [sys.executable, "-O", "-m", "broker", "serve"], cwd=ROOT, capture_output=True, text=True
    )
    assert opt.returncode == 2 and "python -O" in opt.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--tick-ms", "-3"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "invalid setting tick_ms=" in bad.stderr


def _log_line(fmt: str) -> str:
    stream = io.StringIO()
    handler = setup_logging("INFO", fmt, node_id=7, stream=stream)
    try:
        log = logging.getLogger("broker.test")
        log.debug("hidden")
        log.info("became leader", extra={"group": 3, "term": 12, "note": "two words"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_text_logs_are_key_value_lines() -> None:
    lines = _log_line("text").splitlines()
    assert len(lines) == 2  # debug filtered, traceback folded into its line
    assert " level=INFO node=7 logger=broker.test " in lines[0]
    assert lines[0].endswith('msg="became leader" group=3 term=12 note="two words"')
    assert "exc=" in lines[1] and "ValueError: boom" in lines[1]


def test_json_logs_are_one_object_per_line() -> None:
    lines = _log_line("json").splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["node"] == 7 and first["msg"] == "became leader" and first["term"] == 12
    assert "ValueError: boom" in second["exc"]


def test_clocks() -> None:
    clock = ManualClock(monotonic_ms=5)
    clock.advance(10)
    assert clock.monotonic_ms() == 15
    real = SystemClock()
    assert real.monotonic_ms() <= real.monotonic_ms()
    assert real.wall_ms() > 1_600_000_000_000
