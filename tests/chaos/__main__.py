"""Command line: one chaos run, or a campaign of runs with a summary table.

    python -m tests.chaos --seed 7 --nemesis kill,pause,partition --duration 60
    python -m tests.chaos --runs 10 --seed 100 --nemesis-sets "kill;pause;partition;slow,lossy" --duration 60
    python -m tests.chaos --seed 7 --nodes 5 --workload group --nemesis kill,pause,partition,corrupt
    python -m tests.chaos --runs 6 --seed 1 --nodes-sets "3;5" --workload-sets "queue;group" --nemesis-sets "kill,pause,partition"

Campaign runs rotate through the ';'-separated sets independently (run i takes element
i mod len of each).

Exit status: 0 when every run is valid, 1 when any run found an anomaly, 2 when a
campaign run could not be carried out (harness error; the campaign goes on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.chaos.nemesis import NEMESES
from tests.chaos.runner import NODE_COUNTS, WORKLOADS, RunConfig, fresh_seed, run, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    parser.add_argument("--nemesis", default="kill,pause,partition", help=f"comma list of {','.join(NEMESES)} (or none)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=60.0, help="workload seconds per run")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=150.0, help="sends per second, all producers")
    parser.add_argument("--run-dir", type=Path, default=None, help="default /tmp/raftka-chaos/<seed>-<time>")  # fmt: skip
    parser.add_argument("--runs", type=int, default=1, help="campaign: seeds seed, seed+1, ...")
    parser.add_argument("--nemesis-sets", default=None, help="campaign: ';'-separated nemesis lists, rotated per run")  # fmt: skip
    parser.add_argument("--nodes", type=int, default=3, choices=NODE_COUNTS, help="cluster size")
    parser.add_argument("--workload", default="queue", choices=WORKLOADS,
                        help="queue: assign-mode consumers; group: subscribe-mode group with commits")  # fmt: skip
    parser.add_argument("--nodes-sets", default=None, help="campaign: ';'-separated cluster sizes, rotated per run")  # fmt: skip
    parser.add_argument("--workload-sets", default=None, help="campaign: ';'-separated workloads, rotated per run")  # fmt: skip
    args = parser.parse_args(argv)
    node_sets = [int(n) for n in (args.nodes_sets or str(args.nodes)).split(";")]
    workload_sets = (args.workload_sets or args.workload).split(";")
    base_seed = fresh_seed() if args.seed is None else args.seed
    sets = (args.nemesis_sets or args.nemesis).split(";")
    summaries = []
    errors: list[str] = []
    for i in range(args.runs):
        nemeses = tuple(n for n in sets[i % len(sets)].split(",") if n and n != "none")
        run_dir = None
        if args.run_dir is not None:
            run_dir = args.run_dir if args.runs == 1 else args.run_dir / f"run-{i}-{base_seed + i}"
        cfg = RunConfig(seed=base_seed + i, nemeses=nemeses, duration_s=args.duration,
                        partitions=args.partitions, sends_per_s=args.rate, run_dir=run_dir,
                        nodes=node_sets[i % len(node_sets)],
                        workload=workload_sets[i % len(workload_sets)])  # fmt: skip
        print(f"run {i + 1}/{args.runs}: {cfg.replay_command()}", flush=True)
        try:
            summary = run(cfg)
        except Exception as exc:  # a harness failure (e.g. a node that never started)
            if args.runs == 1:
                raise
            errors.append(f"seed {cfg.seed}: harness error {exc!r}"[:2000])
            print(errors[-1], flush=True)
            continue
        summaries.append(summary)
        print((Path(summary.run_dir) / "report.txt").read_text(), flush=True)
    if args.runs > 1:
        print(table(summaries))
        print("\n".join(errors))
    if not all(s.valid for s in summaries):
        return 1
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
