"""Runs every benchmark module in turn (what `make bench` calls) and writes bench/RESULTS.md.

Each module runs as its own `python -m bench.<name>` process, one after another, so
they do not compete for this machine's two cores and one failing module does not stop
the rest. The modules record their figures as JSON lines (bench/_common.py `record`,
through $BENCH_RESULTS_JSON); the client comparison, whose module prints a table only,
is read from its output. From these this script builds two summary tables at the top
of the results file: Raftka's throughput as a fraction of the machine's limits, and
every target of issue 11 with the measured value and ok/MISSED. Below them comes each
module's own output, headed by the machine, date, commit and load.

`--quick` runs every module with short settings (a few minutes in all) to try the
machinery out; its results go to /tmp unless --results says otherwise, so that noisy
numbers do not replace the committed bench/RESULTS.md.

    python -m bench.all [--quick] [--only node,cluster] [--results FILE | --results '']
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import RESULTS_JSON_ENV, child_pids, print_table

ROOT = Path(__file__).resolve().parent.parent
QUICK_RESULTS = Path("/tmp/raftka-bench/RESULTS-quick.md")
NOT_BENCHES = ("__init__", "__main__", "all")


@dataclass(frozen=True, slots=True)
class Module:
    """A bench module and its arguments for the full and the quick run."""

    name: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    timeout_s: float = 600.0  # then SIGTERM (its finally blocks stop its brokers)


# In this order: the machine's limits first (nothing of ours running), the
# micro-benchmarks, then the process-level ones, the slowest (scale) last. Any other
# bench module found in this directory runs after these, in name order, without
# arguments. Quick arguments of modules without a --quick flag are spelled out.
MODULES = (
    Module("limits", quick=("--quick",)),
    Module("protocol", quick=("--seconds", "0.2")),
    Module("storage", quick=("--seconds", "0.3")),
    Module("raft", quick=("--entries", "20000")),
    Module(
        "broker",
        full=("--seconds", "5"),  # 5 s runs, as in node and cluster
        quick=("--seconds", "2", "--rounds", "1", "--starts", "2", "--latency-count", "200"),
    ),
    Module("node", quick=("--quick",)),
    Module("cluster", quick=("--quick",)),
    Module(
        "peers",
        full=("--sizes", "100,1024,16384", "--seconds", "4"),
        quick=("--quick", "--sizes", "100,1024,16384"),
    ),
    Module(
        "client",
        full=("--records", "30000", "--repeat", "3"),
        quick=("--records", "5000", "--repeat", "1"),
    ),
    Module("groups", quick=("--rounds", "2", "--seconds", "2")),
    # 10,000 partitions only when 1,000 show that creating them fits in 5 minutes.
    Module(
        "scale",
        full=("--create-budget", "300", "--scale-up-below", "60"),
        quick=("--quick",),
        timeout_s=1200.0,
    ),
)


def modules() -> list[Module]:
    found = sorted(
        p.stem
        for p in (ROOT / "bench").glob("*.py")
        if not p.stem.startswith("_") and p.stem not in NOT_BENCHES
    )
    known = [m for m in MODULES if m.name in found]
    return known + [Module(n) for n in found if n not in {m.name for m in MODULES}]


# ---------------------------------------------------------------- the machine
def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_header() -> list[str]:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain") else ""
    return [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {_git('rev-parse', '--short', 'HEAD')}{dirty}",
        f"- machine: {cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GB RAM, "
        f"{platform.system()} {platform.release()}",
        f"- python: {platform.python_version()}; load average at start: {load}",
    ]


# ---------------------------------------------------------------- running modules
def become_subreaper() -> None:
    """Orphans of a module (brokers of one stopped at its time limit) become ours."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def kill_orphans() -> list[str]:
    """SIGKILLs and reaps whatever a finished module left running.

    Returns the command lines of those that were not multiprocessing's own helpers (a
    module's resource tracker may outlive it by a moment; that is no leak).
    """
    leaked = []
    for pid in child_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            argv = ""
        if argv and "multiprocessing" not in argv:
            leaked.append(argv[:120])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return leaked


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    output: str
    code: int
    seconds: float
    figures: dict[str, dict[str, Any]]  # key -> {"value", "min", "max", "unit", "note"}


def run_module(module: Module, quick: bool) -> Run:
    """Runs `python -m bench.<name>` with its arguments; collects output and figures."""
    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", prefix=f"bench-{module.name}-") as f:
        env = {**os.environ, RESULTS_JSON_ENV: f.name}
        argv = [sys.executable, "-m", f"bench.{module.name}"]
        argv += module.quick if quick else module.full
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            stdout, stderr_text = proc.communicate(timeout=module.timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()  # the module stops its brokers on the way out
            try:
                stdout, stderr_text = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr_text = proc.communicate()
            stderr_text += f"\nstopped after {module.timeout_s:.0f} s (the module's time limit)"
        seconds = time.monotonic() - start
        figures = {}
        for line in Path(f.name).read_text().splitlines():
            entry = json.loads(line)
            figures[entry["key"]] = entry
    # librdkafka logs connection chatter on stderr; keep only our own error output.
    stderr = "\n".join(
        line
        for line in stderr_text.splitlines()
        if "|rdkafka#" not in line and "%6|" not in line and line.strip()
    )
    output = stdout + (f"\n[stderr]\n{stderr}\n" if stderr else "")
    if module.name == "client":
        figures.update(client_figures(stdout))
    for argv in kill_orphans():
        output += f"\n(all.py killed a process the module left running: {argv})"
    return Run(module.name, output, proc.returncode, seconds, figures)


CLIENT_NAMES = {"raftka (ours)": "ours", "aiokafka": "aiokafka", "kafka-python": "kafka-python",
                "confluent-kafka": "confluent-kafka"}  # fmt: skip


def client_figures(stdout: str) -> dict[str, dict[str, Any]]:
    """Produce and consume records/s per client and size, from bench.client's table.

    The columns are found by the header's labels (separated by two or more spaces),
    so added columns (such as CPU per record) do not break the reading.
    """
    figures: dict[str, dict[str, Any]] = {}
    labels: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("client "):
            labels = re.split(r"\s{2,}", line.strip())
            continue
        name = next((n for n in CLIENT_NAMES if line.startswith(n + " ")), None)
        if name is None or not labels:
            continue
        cells = dict(zip(labels[1:], line[len(name) :].split(), strict=False))
        try:
            size = int(cells["size"])
            values = {
                w: float(cells[f"{w} rec/s"].replace(",", "")) for w in ("produce", "consume")
            }
        except (KeyError, ValueError):
            continue  # not a row of the table
        for what, value in values.items():
            key = f"client.{what}_records_s.{CLIENT_NAMES[name]}.{size}"
            figures[key] = {"key": key, "value": value, "unit": "records/s"}
    return figures


# ---------------------------------------------------------------- summary tables
Figures = dict[str, dict[str, Any]]


def _value(figures: Figures, key: str, field: str = "value") -> float | None:
    entry = figures.get(key)
    return None if entry is None or field not in entry else float(entry[field])


def _show(value: float | None, unit: str, fmt: str = "{:.2f}") -> str:
    return "not measured" if value is None else f"{fmt.format(value)} {unit}".strip()


def limit_rows(figures: Figures) -> list[list[str]]:
    """Raftka's produce MB/s per setup and size as a fraction of the machine's limits."""
    disk = _value(figures, "limits.disk_sync_each_mb_s")
    tcp = _value(figures, "limits.loopback_tcp_mb_s")
    crc = _value(figures, "limits.crc32c_gb_s")
    rows = []
    for section, label in (("node", "1 node"), ("cluster", "3 nodes RF3")):
        for size, size_label in ((100, "100 B"), (1024, "1 KiB"), (16384, "16 KiB")):
            mb_s = _value(figures, f"{section}.produce_mb_s.{size}")
            if mb_s is None:
                continue
            rows.append([
                f"{label}, {size_label} produce acks=all", f"{mb_s:.1f} MB/s",
                f"{mb_s / disk:.0%}" if disk else "n/a",
                f"{mb_s / tcp:.1%}" if tcp else "n/a",
                f"{mb_s / (crc * 1000):.2%}" if crc else "n/a",
            ])  # fmt: skip
    return rows


LIMIT_HEADER = [
    "Raftka", "MB/s", "of disk write+fdatasync (1 MiB)", "of loopback TCP", "of CRC-32C",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """One target of issue 11: how to read the figure and when it holds."""

    text: str
    key: str
    unit: str
    holds: Callable[[float], bool]
    field: str = "value"
    fmt: str = "{:.2f}"


def _ratio_key(what: str, size: int) -> str:
    return f"client.ratio_{what}.{size}"


TARGETS = (
    Target("1 node, 1 KiB, acks=all, fsync: produce >= 100 MB/s", "node.produce_mb_s.1024",
           "MB/s", lambda v: v >= 100, fmt="{:.1f}"),
    Target("1 node: >= 0.5x Tansu (memory storage), 1 KiB", "peers.ratio_tansu", "x",
           lambda v: v >= 0.5),
    Target("3 nodes RF3, acks=all, 1 KiB: produce >= 50 MB/s", "cluster.produce_mb_s.1024",
           "MB/s", lambda v: v >= 50, fmt="{:.1f}"),
    Target("3 nodes RF3: ahead of NATS JetStream R3 in MB/s, 1 KiB", "peers.ratio_nats", "x",
           lambda v: v > 1.0),
    Target("failover (SIGKILL of a leader to next ack): median < 1 s", "cluster.failover_s",
           "s", lambda v: v < 1.0),
    Target("failover: max < 2 s", "cluster.failover_s", "s", lambda v: v < 2.0, "max"),
    Target("ready < 1 s: 1 node, empty directory", "node.ready_fresh_s", "s", lambda v: v < 1),
    Target("ready < 1 s: 1 node, restart with data", "node.ready_restart_s", "s",
           lambda v: v < 1),
    Target("ready < 1 s: 3 fresh nodes", "cluster.ready_s", "s", lambda v: v < 1),
    Target("idle RSS < 80 MB: 1 node after start", "node.rss_idle_mb", "MB", lambda v: v < 80,
           fmt="{:.0f}"),
    Target("idle RSS < 80 MB: 1 node after the load", "node.rss_idle_after_load_mb", "MB",
           lambda v: v < 80, fmt="{:.0f}"),
    Target("idle RSS < 80 MB: 3 nodes after start (largest)", "cluster.rss_idle_mb", "MB",
           lambda v: v < 80, fmt="{:.0f}"),
    Target("our client >= 2x aiokafka records/s: produce 100 B", _ratio_key("produce", 100),
           "x", lambda v: v >= 2),
    Target("our client >= 2x aiokafka records/s: produce 1 KiB", _ratio_key("produce", 1024),
           "x", lambda v: v >= 2),
    Target("our client >= 2x aiokafka records/s: consume 100 B", _ratio_key("consume", 100),
           "x", lambda v: v >= 2),
    Target("our client >= 2x aiokafka records/s: consume 1 KiB", _ratio_key("consume", 1024),
           "x", lambda v: v >= 2),
)  # fmt: skip


def add_client_ratios(figures: Figures) -> None:
    for what in ("produce", "consume"):
        for size in (100, 1024):
            ours = _value(figures, f"client.{what}_records_s.ours.{size}")
            theirs = _value(figures, f"client.{what}_records_s.aiokafka.{size}")
            if ours is not None and theirs:
                key = _ratio_key(what, size)
                figures[key] = {"key": key, "value": ours / theirs, "unit": "x"}


def target_rows(figures: Figures) -> list[list[str]]:
    rows = []
    for t in TARGETS:
        value = _value(figures, t.key, t.field)
        entry = figures.get(t.key, {})
        spread = ""
        if value is not None and "min" in entry and entry.get("runs", 1) > 1 and t.field == "value":
            spread = f" ({t.fmt.format(entry['min'])}-{t.fmt.format(entry['max'])})"
        verdict = "MISSED" if value is None or not t.holds(value) else "ok"
        rows.append([t.text, _show(value, t.unit, t.fmt) + spread, verdict])
    return rows


def summary(figures: Figures) -> str:
    """The two summary tables as plain text (also printed)."""
    add_client_ratios(figures)
    lines: list[str] = []
    _print_into(lines, "Raftka's produce throughput as a fraction of this machine's limits",
                LIMIT_HEADER, limit_rows(figures))  # fmt: skip
    _print_into(lines, "Targets of issue 11 (median of runs, min-max where there were several)",
                ["target", "measured", ""], target_rows(figures))  # fmt: skip
    return "\n".join(lines)


def _print_into(lines: list[str], title: str, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        if rows:
            print_table(title, header, rows)
        else:
            print(f"\n{title}\n(no figures: the modules that measure them did not run)")
    lines.append(buffer.getvalue())


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated module names")
    parser.add_argument("--quick", action="store_true", help="short settings, results to /tmp")
    parser.add_argument("--results", default=None, help="Markdown file ('' for none)")
    args = parser.parse_args()
    results = args.results
    if results is None:
        results = str(QUICK_RESULTS if args.quick else ROOT / "bench" / "RESULTS.md")
    wanted = [n for n in args.only.split(",") if n]
    available = modules()
    chosen = [m for m in available if m.name in wanted] if wanted else available
    unknown = set(wanted) - {m.name for m in available}
    if unknown:
        sys.exit(f"no such bench module: {', '.join(sorted(unknown))}")
    header = machine_header()
    if args.quick:
        header.append("- mode: --quick (short runs to try the machinery; not for comparison)")
    print("\n".join(header))
    become_subreaper()
    began = time.monotonic()
    runs: list[Run] = []
    figures: Figures = {}
    for module in chosen:
        print(f"\n===== bench.{module.name}", flush=True)
        run = run_module(module, args.quick)
        status = "" if run.code == 0 else f", exit code {run.code}"
        print(run.output, end="")
        print(f"===== bench.{module.name}: {run.seconds:.0f} s{status}", flush=True)
        runs.append(run)
        figures.update(run.figures)
    total_s = time.monotonic() - began
    text = summary(figures)
    print(text)
    print(f"\nall modules: {total_s / 60:.1f} min")
    failed = [r.name for r in runs if r.code]
    if results:
        sections = [
            f"## bench.{r.name} ({r.seconds:.0f} s{'' if r.code == 0 else f', exit code {r.code}'})"
            f"\n\n```\n{r.output.rstrip()}\n```\n"
            for r in runs
        ]
        header.append(f"- run time: {total_s / 60:.1f} min for {len(runs)} modules")
        body = (
            "# Benchmark results\n\n" + "\n".join(header)
            + "\n\n## Summary\n\n```" + text.rstrip() + "\n```\n\n" + "\n".join(sections)
        )  # fmt: skip
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        Path(results).write_text(body)
        print(f"\nwritten to {results}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
