"""Runs every benchmark module in turn (what `make bench` calls) and records the output.

Each module runs as its own `python -m bench.<name>` process, one after another, so
they do not compete for this machine's two cores and one failing module does not stop
the rest. The combined output goes to stdout and, with `--results FILE` (default
bench/RESULTS.md), into a Markdown file headed by the machine, date, commit and load,
so numbers in the repository say where and when they were measured.

    python -m bench.all [--only broker,cluster] [--results bench/RESULTS.md | --results '']
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Cheapest first: the micro-benchmarks, then the process-level ones; any other bench
# module found in this directory runs after these, in name order.
ORDER = ("protocol", "storage", "raft", "client", "broker", "cluster")
NOT_BENCHES = ("__init__", "__main__", "all")


def modules() -> list[str]:
    found = sorted(
        p.stem
        for p in (ROOT / "bench").glob("*.py")
        if not p.stem.startswith("_") and p.stem not in NOT_BENCHES
    )
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


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


def run_module(name: str) -> tuple[str, int, float]:
    """(combined output, exit code, seconds) of `python -m bench.<name>`."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}"], cwd=ROOT, capture_output=True, text=True
    )
    # librdkafka logs connection chatter on stderr; keep only our own error output.
    stderr = "\n".join(
        line for line in proc.stderr.splitlines() if "|rdkafka#" not in line and line.strip()
    )
    output = proc.stdout + (f"\n[stderr]\n{stderr}\n" if stderr else "")
    return output, proc.returncode, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated module names")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or modules()
    header = machine_header()
    print("\n".join(header))
    sections = []
    failed = []
    for name in names:
        print(f"\n===== bench.{name}", flush=True)
        output, code, seconds = run_module(name)
        print(output, end="")
        status = "" if code == 0 else f", exit code {code}"
        print(f"===== bench.{name}: {seconds:.0f} s{status}", flush=True)
        if code:
            failed.append(name)
        sections.append(
            f"## bench.{name} ({seconds:.0f} s{status})\n\n```\n{output.rstrip()}\n```\n"
        )
    if args.results:
        text = "# Benchmark results\n\n" + "\n".join(header) + "\n\n" + "\n".join(sections)
        Path(args.results).write_text(text)
        print(f"\nwritten to {args.results}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
