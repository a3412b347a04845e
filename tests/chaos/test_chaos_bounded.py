"""The bounded chaos schedule `make test` runs: short runs against a real 3-node cluster.

Each case is one chaos run (warm-up, seeded faults, heal, final reads, check) with a fixed
seed, plus one run with a fresh seed printed for replay. A case fails on any anomaly the
checker reports (lost, unseen, duplicated, inconsistent, aborted or out-of-order reads)
and prints the seed, the report and the command that replays it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.runner import RunConfig, fresh_seed, run

DURATION_S = 15.0
MIXED = ("kill", "pause", "partition", "slow", "lossy")


CASES = [
    pytest.param(2, ("kill-leader",), id="kill-leader"),
    pytest.param(4, ("pause-leader",), id="pause-leader"),
    pytest.param(4, ("partition",), id="partition"),
    pytest.param(4, MIXED, id="mixed"),
    pytest.param(5, ("power-loss", "failpoint"), id="power-loss-and-crashes"),
]


def _run_and_check(seed: int, nemeses: tuple[str, ...], run_dir: Path) -> None:
    cfg = RunConfig(seed=seed, nemeses=nemeses, duration_s=DURATION_S, run_dir=run_dir)
    print(f"chaos seed {seed}; replay: {cfg.replay_command()}")
    summary = run(cfg)
    report = (run_dir / "report.txt").read_text()
    print(report)
    assert summary.valid, f"chaos anomalies (seed {seed}); replay: {summary.replay}\n{report}"
    assert summary.faults >= 1, f"no fault was applied (seed {seed})\n{report}"
    assert summary.acked > 0 and summary.unrecovered_faults == 0, report


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "nemeses"), CASES)
def test_fixed_seed(seed: int, nemeses: tuple[str, ...], tmp_path: Path) -> None:
    _run_and_check(seed, nemeses, tmp_path / "run")


@pytest.mark.slow
def test_fresh_seed(tmp_path: Path) -> None:
    _run_and_check(fresh_seed(), ("kill", "pause", "partition"), tmp_path / "run")
