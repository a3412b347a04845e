"""Throughput of the pure Raft core: entries committed per second through 3 in-memory nodes.

No I/O: MemoryStorage stands in for the disk and messages move between nodes in a list, so
this measures the core (plus a minimal driver) and nothing else. Proposals are batched
(`--batch`, default 100) and `--pipeline` batches are proposed before draining, like a busy
partition leader. Prints a table; nothing is asserted.

    python -m bench.raft [--entries 200000] [--batch 100] [--pipeline 4] [--payload 100]
"""

from __future__ import annotations

import argparse
import random
import time

from raft import (
    ConfChange,
    Config,
    ConfState,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
)


def _build(n: int) -> dict[int, tuple[RawNode, MemoryStorage]]:
    voters = tuple(range(1, n + 1))
    nodes = {}
    for i in voters:
        st = MemoryStorage(ConfState(voters))
        cfg = Config(node_id=i, rng=random.Random(i), inflight_msgs_max=256)
        nodes[i] = (RawNode(cfg, st), st)
    return nodes


def _drain(nodes: dict[int, tuple[RawNode, MemoryStorage]]) -> int:
    """Run the Ready loop until quiet; returns data entries applied at node 1."""
    applied = 0
    pending: list[Message] = []
    while True:
        busy = False
        for node_id, (raw, st) in nodes.items():
            if not raw.has_ready():
                continue
            busy = True
            rd = raw.ready()
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            pending.extend(rd.messages)
            for e in rd.committed_entries:
                if e.kind == EntryKind.CONF_CHANGE:
                    raw.apply_conf_change(ConfChange.decode(e.data))
            if node_id == 1:
                applied += len(rd.committed_entries)
            raw.advance(rd)
        if pending:
            busy = True
            msgs, pending = pending, []
            for m in msgs:
                nodes[m.to][0].step(m)
        if not busy:
            return applied


def run(entries: int, batch: int, pipeline: int, payload: int, n: int) -> dict[str, float]:
    nodes = _build(n)
    leader = nodes[1][0]
    leader.campaign()
    _drain(nodes)
    data = [bytes(payload)] * batch
    committed_before = leader.raft.log.committed
    wall0, cpu0 = time.perf_counter(), time.process_time()
    proposed = 0
    while proposed < entries:
        for _ in range(pipeline):
            leader.propose_many(data)
            proposed += batch
        _drain(nodes)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    committed = leader.raft.log.committed - committed_before
    assert committed == proposed, (committed, proposed)
    return {
        "nodes": n,
        "batch": batch,
        "pipeline": pipeline,
        "payload_bytes": payload,
        "entries": committed,
        "wall_s": wall,
        "entries_per_s": committed / wall,
        "cpu_us_per_entry": cpu / committed * 1e6,
    }


def idle_tick_cost(groups: int, ticks: int) -> dict[str, float]:
    """CPU per tick of idle groups: followers (tick + has_ready) and a leader's heartbeat."""
    followers = []
    for g in range(groups):
        st = MemoryStorage(ConfState((1, 2, 3)))
        followers.append(RawNode(Config(node_id=2, rng=random.Random(g)), st))
    # Keep them from campaigning: a leader's heartbeat every few ticks, as in a real cluster.
    beat = Message(MessageType.HEARTBEAT, 2, 1, 1)
    for raw in followers:
        raw.step(beat)
        rd = raw.ready()
        raw.advance(rd)
    cpu0 = time.process_time()
    for t in range(ticks):
        for raw in followers:
            raw.tick()
            if raw.has_ready():
                rd = raw.ready()
                raw.advance(rd)
            if t % 5 == 4:
                raw.step(beat)
                raw.advance(raw.ready())
    follower_us = (time.process_time() - cpu0) / (groups * ticks) * 1e6
    nodes = _build(3)
    leader = nodes[1][0]
    leader.campaign()
    _drain(nodes)
    cpu0 = time.process_time()
    for _ in range(ticks):
        leader.tick()
        _drain(nodes)
    leader_us = (time.process_time() - cpu0) / ticks * 1e6
    return {"follower_us_per_tick": follower_us, "leader_group_us_per_heartbeat": leader_us}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--payload", type=int, default=100)
    args = ap.parse_args()
    rows = [
        run(args.entries, args.batch, args.pipeline, args.payload, 3),
        run(args.entries, args.batch, 4, args.payload, 3),
        run(args.entries // 4, 1, 1, args.payload, 3),
        run(args.entries, args.batch, args.pipeline, args.payload, 5),
    ]
    cols = [
        "nodes",
        "batch",
        "pipeline",
        "payload_bytes",
        "entries",
        "wall_s",
        "entries_per_s",
        "cpu_us_per_entry",
    ]
    print(" ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(
            " ".join(f"{r[c]:>16.2f}" if isinstance(r[c], float) else f"{r[c]:>16}" for c in cols)
        )
    idle = idle_tick_cost(groups=1000, ticks=50)
    print()
    print("idle groups (1000 followers x 50 ticks; one 3-node group heartbeating every tick)")
    for k, v in idle.items():
        print(f"  {k:>32}: {v:.2f}")


if __name__ == "__main__":
    main()
