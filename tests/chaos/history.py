"""The history of a chaos run: one JSON object per line, written as operations happen.

Every operation is an `invoke` followed by exactly one completion with the same `id`:
`ok` (it happened), `fail` (it definitely did not happen) or `info` (unknown: it may
have happened). An invoke with no completion counts as `info`. The checker reads only
this file, so a saved history can be re-checked without the cluster that produced it.

    {"index": 12, "time_ns": 81234567, "process": "producer-1", "type": "invoke",
     "f": "send", "id": 40, "value": {"partition": 2, "value": 10000017}}
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
OP_TYPES: frozenset[str] = frozenset(("invoke", "ok", "fail", "info"))


@dataclass(frozen=True, slots=True)
class Op:
    """One history event. `value` depends on `f`:

    send:    invoke {"partition", "value"}; ok adds "offset".
    poll:    ok {"records": [[partition, offset, value], ...]} in delivery order.
    assign:  ok {"partitions": [...], "seek": "beginning" | "end"}.
    nemesis: {"phase": "start" | "stop", "fault", "fault_id", ...details}.
    """

    index: int
    time_ns: int
    process: str
    type: OpType
    f: str
    id: int
    value: Any = None
    error: str | None = None

    def to_json(self) -> str:
        row: dict[str, Any] = {
            "index": self.index,
            "time_ns": self.time_ns,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "id": self.id,
            "value": self.value,
        }
        if self.error is not None:
            row["error"] = self.error
        return json.dumps(row, separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> Op:
        row = json.loads(line)
        if row["type"] not in OP_TYPES:
            raise ValueError(f"bad op type {row['type']!r}")
        return Op(
            index=row["index"],
            time_ns=row["time_ns"],
            process=row["process"],
            type=row["type"],
            f=row["f"],
            id=row["id"],
            value=row.get("value"),
            error=row.get("error"),
        )


class HistoryWriter:
    """Thread-safe recorder: producers' delivery callbacks, consumers and the nemesis
    threads all record events, in the order they happen.

    It takes no lock: `next()` on an itertools counter and `list.append` are atomic in
    CPython, so an event's index orders it among all threads, and nothing can ever be
    left holding a lock (a lock lost to an exception raised by a timeout signal once
    stalled every recording thread). Events are written to the file on `close()`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ops: list[Op] = []
        self._index = itertools.count()
        self._ids = itertools.count()
        self._t0_ns = time.monotonic_ns()
        self._closed = False
        path.write_text("", encoding="utf-8")

    def new_id(self) -> int:
        return next(self._ids)

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._t0_ns

    def record(
        self,
        process: str,
        type_: OpType,
        f: str,
        op_id: int,
        value: Any = None,
        error: str | None = None,
    ) -> Op:
        op = Op(next(self._index), self.now_ns(), process, type_, f, op_id, value, error)
        if not self._closed:  # late delivery reports after the run ended are dropped
            self._ops.append(op)
        return op

    def invoke(self, process: str, f: str, value: Any = None) -> int:
        op_id = self.new_id()
        self.record(process, "invoke", f, op_id, value)
        return op_id

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ops = sorted(list(self._ops), key=lambda op: op.index)
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(op.to_json() + "\n" for op in ops)

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_history(path: Path) -> list[Op]:
    with open(path, encoding="utf-8") as f:
        return [Op.from_json(line) for line in f if line.strip()]


def write_history(path: Path, ops: Iterable[Op]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(op.to_json() + "\n")


def completions(ops: Iterable[Op]) -> Iterator[tuple[Op, Op | None]]:
    """Pairs each invoke with its completion (None if it never completed)."""
    invokes: dict[int, Op] = {}
    done: dict[int, Op] = {}
    for op in ops:
        if op.type == "invoke":
            invokes[op.id] = op
        else:
            done[op.id] = op
    for op_id, inv in invokes.items():
        yield inv, done.get(op_id)
