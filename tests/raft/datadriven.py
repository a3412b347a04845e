"""A small golden-file runner in the style of cockroachdb/datadriven (used by etcd-io/raft).

A test file is a sequence of directives:

    # comments and blank lines are kept as they are
    command arg key=value key=(1,2,3)
    optional input lines
    ----
    expected output (no blank lines; empty output is written as "ok")

`run_file(path, handler)` runs each directive through `handler(Directive) -> str` and compares
with the expected output. With `RAFTKA_REWRITE=1` in the environment the file is rewritten with
the actual output instead: review the diff before committing it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Directive:
    command: str
    args: list[str] = field(default_factory=list)
    kwargs: dict[str, str] = field(default_factory=dict)
    input: list[str] = field(default_factory=list)
    expected: str = ""
    line: int = 0
    #: The command line and input lines exactly as written.
    raw: list[str] = field(default_factory=list)

    def ids(self) -> list[int]:
        return [int(a) for a in self.args if a.isdigit()]

    def int_arg(self, key: str, default: int | None = None) -> int:
        if key in self.kwargs:
            return int(self.kwargs[key])
        if default is None:
            raise ValueError(f"line {self.line}: missing {key}=")
        return default

    def list_arg(self, key: str) -> list[int]:
        raw = self.kwargs.get(key, "")
        raw = raw.strip("()")
        return [int(x) for x in raw.split(",") if x.strip()]


def _parse_command(text: str, line: int) -> Directive:
    words = shlex.split(text)
    d = Directive(command=words[0], line=line)
    for w in words[1:]:
        if "=" in w:
            k, v = w.split("=", 1)
            d.kwargs[k] = v
        else:
            d.args.append(w)
    return d


def parse(text: str) -> list[Directive | str]:
    """Split a file into directives and verbatim chunks (comments / blank lines)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out: list[Directive | str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            out.append(line)
            i += 1
            continue
        d = _parse_command(line, i + 1)
        d.raw.append(line)
        i += 1
        while i < len(lines) and lines[i] != "----":
            if not lines[i].strip():
                raise ValueError(f"line {d.line}: directive without ---- separator")
            d.input.append(lines[i])
            d.raw.append(lines[i])
            i += 1
        i += 1  # skip ----
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        d.expected = "\n".join(expected)
        out.append(d)
    return out


def run_file(path: Path, handler: Callable[[Directive], str]) -> list[str]:
    """Run every directive; returns mismatch descriptions (rewrites the file if asked)."""
    items = parse(path.read_text())
    rewrite = os.environ.get("RAFTKA_REWRITE") == "1"
    mismatches = []
    out_lines: list[str] = []
    for item in items:
        if isinstance(item, str):
            out_lines.append(item)
            continue
        actual = handler(item).rstrip("\n")
        if not actual:
            actual = "ok"
        actual = "\n".join(line if line.strip() else "<blank>" for line in actual.split("\n"))
        if actual != item.expected:
            mismatches.append(
                f"{path.name}:{item.line}: {item.raw[0]}\n--- expected\n{item.expected}\n"
                f"--- actual\n{actual}"
            )
        out_lines.extend(item.raw)
        out_lines.append("----")
        out_lines.extend(actual.split("\n"))
    if rewrite:
        path.write_text("\n".join(out_lines) + "\n")
        return []
    return mismatches
