"""The bounded chaos schedule `make test` runs: short runs against a real cluster.

Each case is one chaos run (warm-up, seeded faults, heal, final reads, check) with a fixed
seed, plus one run with a fresh seed printed for replay. A case fails on any anomaly the
checker reports (lost, unseen, duplicated, inconsistent, aborted or out-of-order reads,
committed offsets going back or re-read, two leaders in one term, replicas differing
below the high watermark) and prints the seed, the report and the command that replays it.
Most cases run 3 nodes and the queue workload; one runs 5 nodes and the consumer-group
workload under minority kills, pauses and partitions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.runner import RunConfig, fresh_seed, run

DURATION_S = 15.0
MIXED = ("kill", "pause", "partition", "slow", "lossy")


CASES = [
    pytest.param(2, ("kill-leader",), 3, "queue", id="kill-leader"),
    pytest.param(4, ("pause-leader",), 3, "queue", id="pause-leader"),
    pytest.param(4, ("partition",), 3, "queue", id="partition"),
    pytest.param(4, MIXED, 3, "queue", id="mixed"),
    pytest.param(5, ("power-loss", "failpoint"), 3, "queue", id="power-loss-and-crashes"),
    # Seed 3 on 5 nodes: two partitions cutting a 2-node minority from the majority.
    pytest.param(3, ("kill", "pause", "partition"), 5, "group", id="5-nodes-group"),
    # Seed 11 flips bytes mid-segment on a leader: the broker quarantines the log and
    # the replica re-syncs without voting.
    pytest.param(11, ("corrupt",), 3, "queue", id="corrupt"),
]


def _run_and_check(
    seed: int, nemeses: tuple[str, ...], run_dir: Path, nodes: int = 3, workload: str = "queue"
) -> None:
    cfg = RunConfig(seed=seed, nemeses=nemeses, duration_s=DURATION_S, run_dir=run_dir,
                    nodes=nodes, workload=workload)  # fmt: skip
    print(f"chaos seed {seed}; replay: {cfg.replay_command()}")
    summary = run(cfg)
    report = (run_dir / "report.txt").read_text()
    print(report)
    assert summary.valid, f"chaos anomalies (seed {seed}); replay: {summary.replay}\n{report}"
    assert summary.faults >= 1, f"no fault was applied (seed {seed})\n{report}"
    assert summary.acked > 0 and summary.unrecovered_faults == 0, report
    # The white-box checks saw the real cluster: won elections and replicated entries.
    assert summary.elections_won > 0 and summary.replica_entries_compared > 0, report
    assert workload != "group" or summary.commits_ok > 0, report


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "nemeses", "nodes", "workload"), CASES)
def test_fixed_seed(
    seed: int, nemeses: tuple[str, ...], nodes: int, workload: str, tmp_path: Path
) -> None:
    _run_and_check(seed, nemeses, tmp_path / "run", nodes, workload)


@pytest.mark.slow
def test_fresh_seed(tmp_path: Path) -> None:
    _run_and_check(fresh_seed(), ("kill", "pause", "partition"), tmp_path / "run")
