"""Emulated power loss for real broker processes (harness side of broker/failpoints.py).

SIGKILL alone keeps the page cache, so everything written survives it. After killing a
node started with `durability_journal=true`, `cut_to_durable(data_dir)` cuts each log
segment back to the last length an fsync made durable and removes the (rebuildable)
sparse indexes, which is what a machine that lost power would find on its disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from broker.failpoints import DurabilityJournal, durable_lengths

_SEGMENT_NAME = re.compile(r"\d{20}\.log")


def cut_to_durable(data_dir: Path) -> int:
    """Returns the number of bytes dropped. Segments the journal never saw are emptied."""
    lengths = durable_lengths(str(data_dir / DurabilityJournal.FILE_NAME))
    dropped = 0
    for path in sorted(data_dir.rglob("*.log")):
        if not _SEGMENT_NAME.fullmatch(path.name):
            continue  # e.g. the hard-state log: every append to it is fsynced before use
        size = path.stat().st_size
        durable = lengths.get(str(path), lengths.get(os.path.abspath(path), 0))
        if size > durable:
            dropped += size - durable
            with open(path, "r+b") as f:
                f.truncate(durable)
    for index in data_dir.rglob("*.index"):
        index.unlink()
    return dropped
