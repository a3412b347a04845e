"""Golden interaction transcripts: every tests/raft/testdata/*.txt file replays exactly.

Regenerate after an intended behaviour change with `RAFTKA_REWRITE=1 pytest tests/raft` and
review the diff line by line before committing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.raft.datadriven import run_file
from tests.raft.interaction_env import InteractionEnv

TESTDATA = Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


def test_there_are_transcripts() -> None:
    assert len(FILES) >= 9


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_interaction(path: Path) -> None:
    env = InteractionEnv()
    mismatches = run_file(path, env.handle)
    assert not mismatches, "\n\n".join(mismatches)
