"""White-box checks from the nodes' files after a run: leader lines and replica logs.

Election safety: every broker logs `raft-leader group=G term=T node=N` when it wins an
election (broker/raft_driver.py); `leader_events` parses every node's log file into
those triples, and the checker fails a run on two leaders for one (group, term).

Replica agreement: `read_replica` walks one partition directory's segment files frame by
frame (the frame layout of storage/frame.py, each frame's CRC verified) and
`compare_replicas` checks that, below the high watermark, every replica that holds an
offset holds the same entry there (same raft index, term and frame CRC), and that no
replica lacks an offset inside the range its log covers. Run it after the nodes stopped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from storage.frame import EntryKind, FrameStatus, decode

LEADER_LINE = re.compile(r"raft-leader group=(\d+) term=(\d+) node=(\d+)")
# The line's timestamp in the text format (ts=...) or the JSON format ("ts": "...").
TIMESTAMP = re.compile(r'(?:^ts=|"ts":\s*")(\d{4}-\d\d-\d\dT[\d:.]+Z?)')
SEGMENT_NAME = re.compile(r"\d{20}\.log")
PAYLOAD_BYTES_MAX = 64 << 20  # plausibility bound for a frame's length while reading
DIVERGENCE_EXAMPLES_MAX = 50


def leader_events(log_paths: Mapping[int, Path]) -> list[dict[str, Any]]:
    """Every `raft-leader` line in the nodes' logs, as {"group", "term", "node", "log",
    "wall"} (wall: the line's timestamp in Unix seconds, None if it has none)."""
    events: list[dict[str, Any]] = []
    for node_id, path in sorted(log_paths.items()):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = LEADER_LINE.search(line)
            if m is None:
                continue
            events.append({"group": int(m[1]), "term": int(m[2]), "node": int(m[3]),
                           "log": node_id, "wall": _wall(line)})  # fmt: skip
    return events


def _wall(line: str) -> float | None:
    m = TIMESTAMP.search(line)
    if m is None:
        return None
    stamp = m[1] if m[1].endswith("Z") else m[1] + "Z"
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Entry:
    """One DATA frame as a replica holds it."""

    index: int
    term: int
    record_count: int
    crc: int


def read_replica(partition_dir: Path) -> dict[int, Entry]:
    """Kafka base offset -> DATA entry, for the valid frames of every segment in order.

    Reading stops at the first frame that is not valid in a segment (a torn tail, or a
    corruption the broker has not repaired): what follows it is not trusted data.
    """
    entries: dict[int, Entry] = {}
    for path in sorted(p for p in partition_dir.iterdir() if SEGMENT_NAME.fullmatch(p.name)):
        view = memoryview(path.read_bytes())
        position = 0
        while position < len(view):
            status, header = decode(view, position, PAYLOAD_BYTES_MAX)
            if status is not FrameStatus.VALID or header is None:
                break
            if header.kind == EntryKind.DATA:
                crc = int.from_bytes(view[position : position + 4], "little")
                entries[header.base_offset] = Entry(header.index, header.term, header.record_count, crc)  # fmt: skip
            position += header.length
    return entries


def compare_replicas(
    replicas: Mapping[int, dict[int, Entry]], high_watermark: int
) -> tuple[int, list[dict[str, Any]]]:
    """(entries compared, divergences) for one partition below `high_watermark`."""
    below = {
        node: {o: e for o, e in entries.items() if o + e.record_count <= high_watermark}
        for node, entries in replicas.items()
    }
    spans = {node: (min(es), max(es)) for node, es in below.items() if es}
    offsets = sorted(set().union(*below.values())) if below else []
    compared = 0
    out: list[dict[str, Any]] = []
    for offset in offsets:
        held = {node: es[offset] for node, es in below.items() if offset in es}
        compared += len(held)
        missing = [n for n, (lo, hi) in spans.items() if lo <= offset <= hi and n not in held]
        if len({(e.index, e.term, e.crc) for e in held.values()}) > 1 or missing:
            out.append({
                "offset": offset,
                "entries": {str(n): [e.index, e.term, e.crc] for n, e in sorted(held.items())},
                "missing_on": missing,
            })  # fmt: skip
    return compared, out


def compare_cluster(
    data_dirs: Mapping[int, Path], topic: str, high_watermarks: Mapping[int, int]
) -> dict[str, Any]:
    """The `replica-compare` op value for a topic: {"compared", "divergent": [...]}."""
    compared = 0
    divergent: list[dict[str, Any]] = []
    for partition, hw in sorted(high_watermarks.items()):
        replicas = {
            node: read_replica(d / f"{topic}-{partition}")
            for node, d in sorted(data_dirs.items())
            if (d / f"{topic}-{partition}").is_dir()
        }
        n, found = compare_replicas(replicas, hw)
        compared += n
        divergent += [{"partition": partition, **row} for row in found]
    return {"compared": compared, "divergent": divergent[:DIVERGENCE_EXAMPLES_MAX],
            "divergent_total": len(divergent)}  # fmt: skip
