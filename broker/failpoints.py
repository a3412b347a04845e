"""Failpoints and the durability journal: tools for chaos tests, off by default.

Failpoints crash the process (os._exit, no clean-up, like a power cut to the process) at
named places in the write path, so tests can check that no acknowledged record is lost
and no promised vote is forgotten whatever instant a node dies at:

    append_before_fsync    entries written to the page cache, not yet fsynced
    fsync_before_ack       fsynced, before any message or acknowledgement leaves
    vote_before_persist    a new term/vote about to be written
    vote_after_persist     term/vote durable, before the vote message is sent

Arm them with the `failpoints` setting ("name=probability,name=probability", e.g.
"append_before_fsync=0.01") or at run time through POST /v1/faults/failpoint
{"name": ..., "probability": 1.0}. Probabilities come from a seeded RNG.

A plain SIGKILL keeps the page cache, so it never tests fsync. With the
`durability_journal` setting on, the node appends, after every fsync, the durable length
of each log segment it synced to `<data_dir>/durability.journal` (JSON lines). A harness
emulates power loss by killing the node and cutting every segment back to the last
length the journal recorded for it (the journal is written only after the fsync it
describes, so it never claims more than is durable).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterable

log = logging.getLogger("raftka.failpoints")

FAILPOINT_NAMES = frozenset(
    {"append_before_fsync", "fsync_before_ack", "vote_before_persist", "vote_after_persist"}
)
CRASH_EXIT_CODE = 137


def parse_failpoints(text: str) -> dict[str, float]:
    """ "a=0.5,b=1" -> {"a": 0.5, "b": 1.0}; raises ValueError naming the bad part."""
    armed: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, probability = part.partition("=")
        if name not in FAILPOINT_NAMES:
            raise ValueError(
                f"unknown failpoint {name!r} (known: {', '.join(sorted(FAILPOINT_NAMES))})"
            )
        value = float(probability or "1")
        if not 0 <= value <= 1:
            raise ValueError(f"failpoint {name} probability {value} is not in [0, 1]")
        armed[name] = value
    return armed


class Failpoints:
    """Crashes the process at armed points; `hit` costs a dict lookup when nothing is armed."""

    def __init__(self, armed: dict[str, float] | None = None, seed: int | None = None) -> None:
        self.armed = dict(armed or {})
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def arm(self, name: str, probability: float) -> None:
        if name not in FAILPOINT_NAMES or not 0 <= probability <= 1:
            raise ValueError(f"bad failpoint {name}={probability}")
        with self._lock:
            if probability == 0:
                self.armed.pop(name, None)
            else:
                self.armed[name] = probability

    def hit(self, name: str) -> None:
        if not self.armed:
            return
        probability = self.armed.get(name)
        if probability is None:
            return
        with self._lock:
            fire = self._rng.random() < probability
        if fire:
            log.error("failpoint %s fired: crashing", name)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)


class DurabilityJournal:
    """Appends `{"t": wall_ms, "files": {path: durable_bytes}}` lines after each fsync."""

    FILE_NAME = "durability.journal"

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, self.FILE_NAME)
        self._lock = threading.Lock()

    def record(self, files: Iterable[tuple[str, int]]) -> None:
        line = json.dumps({"t": time.time_ns() // 1_000_000, "files": dict(files)}) + "\n"
        with self._lock, open(self.path, "a") as f:
            f.write(line)


def durable_lengths(journal_path: str) -> dict[str, int]:
    """The last durable length the journal recorded for each file (harness side)."""
    lengths: dict[str, int] = {}
    if not os.path.exists(journal_path):
        return lengths
    with open(journal_path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a torn last line: everything before it stands
            lengths.update(entry.get("files", {}))
    return lengths
