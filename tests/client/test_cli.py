"""`python -m client` end to end against a real broker: what a person or a script would run."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from unittest import mock

from client.__main__ import main
from tests.harness import ROOT, BrokerProcess


def cli(broker: BrokerProcess, *args: str, stdin: str = "") -> str:
    """Run the command line in this process (a subprocess per call costs seconds)."""
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        mock.patch.object(sys, "stdin", io.StringIO(stdin)),
    ):
        code = main(["-b", broker.kafka_address, *args])
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_topics_produce_consume_groups_cluster(broker: BrokerProcess) -> None:
    topic = f"cli-{time.monotonic_ns() % 10**9}"
    cli(broker, "topics", "create", topic, "-p", "2", "--config", "retention.ms=600000")
    assert topic in cli(broker, "topics", "list").split()
    described = json.loads(cli(broker, "--json", "topics", "describe", topic))
    assert [p["partition"] for p in described[0]["partitions"]] == [0, 1]
    assert described[0]["configs"]["retention.ms"] == "600000"

    lines = "".join(f"k{i}:v{i}\n" for i in range(20))
    out = json.loads(cli(broker, "--json", "produce", topic, "--key-separator", ":", stdin=lines))
    assert out == {"topic": topic, "records": 20, "failed": 0}
    cli(
        broker,
        "produce",
        topic,
        "--json-input",
        stdin='{"key": "j", "value": {"a": 1}, "headers": {"h": "x"}}\n',
    )

    got = cli(broker, "consume", topic, "--from-beginning", "--count", "21", "--format", "json")
    records = [json.loads(line) for line in got.splitlines()]
    assert sorted(r["value"] for r in records) == sorted(
        [f"v{i}" for i in range(20)] + ['{"a": 1}']
    )
    assert {r["key"]: r["headers"] for r in records}["j"] == {"h": "x"}

    group = f"g-{topic}"
    got = cli(broker, "consume", topic, "--group", group, "--from-beginning", "--count", "21")
    assert len(got.splitlines()) == 21
    described_group = json.loads(cli(broker, "--json", "groups", "describe", group))
    assert sum(o["committed"] for o in described_group["offsets"]) == 21
    assert all(o["lag"] == 0 for o in described_group["offsets"])
    assert group in cli(broker, "groups", "list")

    reset = json.loads(
        cli(
            broker, "--json", "groups", "reset-offsets", group, "--topic", topic, "--to", "earliest"
        )
    )
    assert set(reset.values()) == {0}
    status = json.loads(cli(broker, "--json", "cluster", "--group", group))
    mine = [p for p in status["partitions"] if p["topic"] == topic]
    assert sum(p["high_watermark"] for p in mine) == 21
    assert sum(p["lag"] for p in mine) == 21
    assert [b["node_id"] for b in status["brokers"]] == [1]

    cli(broker, "topics", "delete", topic)
    assert topic not in cli(broker, "topics", "list").split()


def test_entry_point_runs_and_errors_exit_nonzero(broker: BrokerProcess) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "client", "-b", broker.kafka_address, "--json", "topics", "list"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    assert isinstance(json.loads(ok.stdout), list)
    bad = subprocess.run(
        [sys.executable, "-m", "client", "-b", broker.kafka_address, "topics", "delete", "nope"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad.returncode == 1
    assert b"error:" in bad.stderr
