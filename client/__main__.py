"""`python -m client` / `raftka-cli`: produce, consume, topics, groups, cluster.

Pleasant for people (tables, progress on stderr for long runs) and scriptable
(`--json` prints one JSON document, or one JSON object per record for consume;
exit status 0 on success, 1 on a Kafka error, 2 on bad usage).

Examples:
    raftka-cli -b 127.0.0.1:9092 topics create orders -p 6
    seq 1000 | raftka-cli produce orders
    raftka-cli produce orders --key-separator : < keyed-lines.txt
    raftka-cli consume orders --from-beginning --count 10 --format json
    raftka-cli groups reset-offsets billing --topic orders --to earliest
    raftka-cli cluster --group billing
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from client.admin import EARLIEST, LATEST, RESOURCE_TOPIC, AdminClient, NewTopic
from client.consumer import Consumer
from client.errors import KafkaError
from client.producer import Producer
from client.structs import ConsumerRecord, TopicPartition

PROGRESS_EVERY = 10000


def _bootstrap(args: argparse.Namespace) -> str:
    return str(args.bootstrap_servers)


def _print_json(doc: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up per call: tests and callers may redirect it
    json.dump(doc, out, indent=2, sort_keys=True, default=str)
    out.write("\n")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _progress(enabled: bool, text: str) -> None:
    if enabled:
        sys.stderr.write(f"\r{text}")
        sys.stderr.flush()


# ---- produce -----------------------------------------------------------------------------


def _parse_line(line: str, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(key, value, headers, partition) of one input line."""
    if args.json_input:
        doc = json.loads(line)
        key = doc.get("key")
        value = doc.get("value")
        headers = [
            (k, None if v is None else str(v).encode())
            for k, v in (doc.get("headers") or {}).items()
        ]
        return (
            None if key is None else str(key).encode(),
            None
            if value is None
            else (value if isinstance(value, str) else json.dumps(value)).encode(),
            headers,
            doc.get("partition"),
        )
    key = None
    if args.key_separator and args.key_separator in line:
        k, line = line.split(args.key_separator, 1)
        key = k.encode()
    return key, line.encode(), None, None


async def cmd_produce(args: argparse.Namespace) -> int:
    fixed_headers = [(h.split("=", 1)[0], h.split("=", 1)[1].encode()) for h in args.header]
    show = args.progress or (sys.stderr.isatty() and not args.json)
    count = 0
    async with Producer(
        _bootstrap(args),
        acks=args.acks,
        compression=args.compression,
        linger_ms=args.linger_ms,
    ) as producer:
        futures = []
        for raw in sys.stdin:
            line = raw.rstrip("\n")
            if not line and args.skip_empty:
                continue
            key, value, headers, partition = _parse_line(line, args)
            futures.append(
                await producer.send(
                    args.topic,
                    value,
                    key=key,
                    partition=args.partition if partition is None else partition,
                    headers=(headers or []) + fixed_headers,
                )
            )
            count += 1
            if count % PROGRESS_EVERY == 0:
                _progress(show, f"produced {count} records")
                futures = [f for f in futures if not f.done() or f.exception()]
        await producer.flush()
        failed = [f.exception() for f in futures if f.exception() is not None]
    _progress(show, f"produced {count} records\n")
    if args.json:
        _print_json({"topic": args.topic, "records": count, "failed": len(failed)})
    if failed:
        sys.stderr.write(f"{len(failed)} records failed, first: {failed[0]}\n")
        return 1
    return 0


# ---- consume -----------------------------------------------------------------------------


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    try:
        return b.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(b).decode()


def _format_record(r: ConsumerRecord, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(
            {
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp_ms": r.timestamp_ms,
                "key": _text(r.key),
                "value": _text(r.value),
                "headers": {k: _text(v) for k, v in r.headers},
            },
            sort_keys=True,
        )
    if fmt == "kv":
        return f"{_text(r.key)}\t{_text(r.value)}"
    if fmt == "verbose":
        return f"{r.topic}-{r.partition}@{r.offset} ts={r.timestamp_ms} key={_text(r.key)} value={_text(r.value)}"
    return _text(r.value) or ""


async def cmd_consume(args: argparse.Namespace) -> int:
    reset = "earliest" if args.from_beginning else "latest"
    consumer = Consumer(
        bootstrap_servers=_bootstrap(args),
        group_id=args.group,
        auto_offset_reset=reset,
        enable_auto_commit=args.group is not None,
    )
    await consumer.start()
    seen = 0
    try:
        if args.group and args.partition is None and args.offset is None:
            consumer.subscribe([args.topic])
        else:
            partitions = await consumer.client.wait_for_topic(args.topic, 10000)
            chosen = partitions if args.partition is None else (args.partition,)
            tps = [TopicPartition(args.topic, p) for p in chosen]
            consumer.assign(tps)
            if args.offset is not None:
                for tp in tps:
                    consumer.seek(tp, args.offset)
            elif args.from_end:
                await consumer.seek_to_end(*tps)
        idle_ms = args.idle_timeout_ms
        while args.count is None or seen < args.count:
            budget = None if args.count is None else args.count - seen
            got = await consumer.getmany(timeout_ms=idle_ms or 1000, max_records=budget)
            if not got:
                if idle_ms:
                    break
                continue
            for records in got.values():
                for r in records:
                    sys.stdout.write(_format_record(r, args.format) + "\n")
                    seen += 1
            sys.stdout.flush()
    finally:
        await consumer.close()
    return 0


# ---- topics ------------------------------------------------------------------------------


async def cmd_topics(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args)) as admin:
        if args.action == "list":
            names = sorted(await admin.list_topics(include_internal=args.internal))
            if args.json:
                _print_json(names)
            else:
                sys.stdout.write("".join(n + "\n" for n in names))
        elif args.action == "create":
            configs = dict(c.split("=", 1) for c in args.config)
            await admin.create_topics(
                [NewTopic(args.name, args.partitions, args.replication_factor, configs)],
                if_not_exists=args.if_not_exists,
            )
            _done(args, {"created": args.name})
        elif args.action == "delete":
            await admin.delete_topics([args.name])
            _done(args, {"deleted": args.name})
        elif args.action == "describe":
            descs = await admin.describe_topics([args.name] if args.name else None)
            configs = await admin.describe_configs(RESOURCE_TOPIC, [args.name]) if args.name else {}
            if args.json:
                _print_json(
                    [
                        {
                            "name": d.name,
                            "topic_id": d.topic_id,
                            "internal": d.is_internal,
                            "partitions": [
                                {
                                    "partition": p.partition,
                                    "leader": p.leader_id,
                                    "leader_epoch": p.leader_epoch,
                                    "replicas": list(p.replica_nodes),
                                    "isr": list(p.isr_nodes),
                                }
                                for p in d.partitions
                            ],
                            "configs": configs.get(d.name, {}),
                        }
                        for d in descs
                    ]
                )
            else:
                rows = [
                    (
                        d.name,
                        p.partition,
                        p.leader_id,
                        p.leader_epoch,
                        list(p.replica_nodes),
                        list(p.isr_nodes),
                    )
                    for d in descs
                    for p in d.partitions
                ]
                _table(rows, ("topic", "partition", "leader", "epoch", "replicas", "isr"))
                for name, cfg in configs.items():
                    for k, v in sorted(cfg.items()):
                        sys.stdout.write(f"{name}: {k}={v}\n")
        elif args.action == "add-partitions":
            await admin.create_partitions({args.name: args.partitions})
            _done(args, {"topic": args.name, "partitions": args.partitions})
    return 0


def _done(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        _print_json(doc)
    else:
        sys.stdout.write(" ".join(f"{k}={v}" for k, v in doc.items()) + "\n")


# ---- groups ------------------------------------------------------------------------------


async def cmd_groups(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args)) as admin:
        if args.action == "list":
            groups = await admin.list_groups()
            if args.json:
                _print_json(
                    [
                        {"group": g.group_id, "type": g.protocol_type, "state": g.state}
                        for g in groups
                    ]
                )
            else:
                _table(
                    [(g.group_id, g.protocol_type, g.state) for g in groups],
                    ("group", "type", "state"),
                )
        elif args.action == "describe":
            (desc,) = await admin.describe_groups([args.group])
            offsets = await admin.list_group_offsets(args.group)
            ends = await admin.list_offsets({tp: LATEST for tp in offsets}) if offsets else {}
            rows = [
                (
                    tp.topic,
                    tp.partition,
                    om.offset,
                    ends.get(tp, -1),
                    max(0, ends.get(tp, 0) - om.offset),
                )
                for tp, om in sorted(offsets.items())
            ]
            if args.json:
                _print_json(
                    {
                        "group": desc.group_id,
                        "state": desc.state,
                        "protocol": desc.protocol,
                        "members": [
                            {
                                "member_id": m.member_id,
                                "client_id": m.client_id,
                                "host": m.client_host,
                                "assignment": [str(tp) for tp in m.assignment],
                            }
                            for m in desc.members
                        ],
                        "offsets": [
                            {"topic": t, "partition": p, "committed": c, "end": e, "lag": lag}
                            for t, p, c, e, lag in rows
                        ],
                    }
                )
            else:
                sys.stdout.write(f"group {desc.group_id}: {desc.state} ({desc.protocol or '-'})\n")
                for m in desc.members:
                    assigned = ", ".join(str(tp) for tp in m.assignment)
                    sys.stdout.write(
                        f"  member {m.member_id} {m.client_id}@{m.client_host}: {assigned}\n"
                    )
                _table(rows, ("topic", "partition", "committed", "end", "lag"))
        elif args.action == "delete":
            await admin.delete_groups([args.group])
            _done(args, {"deleted": args.group})
        elif args.action == "reset-offsets":
            await admin.client.wait_for_topics_metadata([args.topic])
            parts = admin.client.cluster.partitions_for(args.topic) or ()
            tps = [TopicPartition(args.topic, p) for p in parts]
            if args.to in ("earliest", "latest"):
                target = await admin.list_offsets(
                    {tp: EARLIEST if args.to == "earliest" else LATEST for tp in tps}
                )
            else:
                target = {tp: int(args.to) for tp in tps}
            await admin.alter_group_offsets(args.group, target)
            if args.json:
                _print_json({str(tp): o for tp, o in target.items()})
            else:
                _table(
                    [(tp.topic, tp.partition, o) for tp, o in sorted(target.items())],
                    ("topic", "partition", "offset"),
                )
    return 0


# ---- cluster -----------------------------------------------------------------------------


async def cmd_cluster(args: argparse.Namespace) -> int:
    async with AdminClient(_bootstrap(args)) as admin:
        desc = await admin.describe_cluster()
        topics = await admin.describe_topics()
        tps = [
            TopicPartition(t.name, p.partition)
            for t in topics
            if not t.is_internal
            for p in t.partitions
        ]
        ends = await admin.list_offsets({tp: LATEST for tp in tps}) if tps else {}
        committed = await admin.list_group_offsets(args.group) if args.group else {}
        rows = []
        for t in topics:
            if t.is_internal and not args.internal:
                continue
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition)
                hw = ends.get(tp, -1)
                lag = hw - committed[tp].offset if tp in committed else ""
                rows.append((t.name, p.partition, p.leader_id, p.leader_epoch, hw, lag))
        if args.json:
            _print_json(
                {
                    "cluster_id": desc.cluster_id,
                    "controller_id": desc.controller_id,
                    "brokers": [
                        {"node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack}
                        for b in desc.brokers
                    ],
                    "partitions": [
                        {
                            "topic": t,
                            "partition": p,
                            "leader": ld,
                            "leader_epoch": e,
                            "high_watermark": hw,
                            "lag": None if lag == "" else lag,
                        }
                        for t, p, ld, e, hw, lag in rows
                    ],
                }
            )
            return 0
        sys.stdout.write(f"cluster {desc.cluster_id}, controller {desc.controller_id}\n")
        _table(
            [(b.node_id, f"{b.host}:{b.port}", b.rack or "") for b in desc.brokers],
            ("node", "address", "rack"),
        )
        sys.stdout.write("\n")
        _table(
            rows,
            (
                "topic",
                "partition",
                "leader",
                "epoch",
                "high_watermark",
                "lag" if args.group else "",
            ),
        )
    return 0


# ---- argument parsing --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftka-cli",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-b",
        "--bootstrap-servers",
        default=os.environ.get("RAFTKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="host:port[,host:port] (env RAFTKA_BOOTSTRAP)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("produce", help="send stdin lines as records")
    p.add_argument("topic")
    p.add_argument("--key-separator", help="split each line into key and value at this string")
    p.add_argument(
        "--json-input", action="store_true", help='lines are {"key","value","headers","partition"}'
    )
    p.add_argument("--header", action="append", default=[], help="k=v added to every record")
    p.add_argument("--partition", type=int)
    p.add_argument("--compression", choices=["none", "gzip", "snappy", "lz4", "zstd"], default=None)
    p.add_argument("--acks", default="all", choices=["all", "-1", "0", "1"])
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--skip-empty", action="store_true")
    p.add_argument("--progress", action="store_true", help="progress on stderr even when not a tty")
    p.set_defaults(func=cmd_produce)

    c = sub.add_parser("consume", help="print records")
    c.add_argument("topic")
    c.add_argument("--group", help="consume as a member of this group (commits offsets)")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true")
    where.add_argument("--from-end", action="store_true")
    where.add_argument("--offset", type=int)
    c.add_argument("--partition", type=int)
    c.add_argument("--count", type=int, help="stop after this many records")
    c.add_argument(
        "--idle-timeout-ms", type=int, default=0, help="stop when idle this long (0: never)"
    )
    c.add_argument("--format", choices=["value", "kv", "json", "verbose"], default="value")
    c.set_defaults(func=cmd_consume)

    t = sub.add_parser("topics", help="list, create, delete, describe topics")
    tsub = t.add_subparsers(dest="action", required=True)
    tl = tsub.add_parser("list")
    tl.add_argument("--internal", action="store_true")
    tc = tsub.add_parser("create")
    tc.add_argument("name")
    tc.add_argument("-p", "--partitions", type=int, default=1)
    tc.add_argument("-r", "--replication-factor", type=int, default=-1)
    tc.add_argument("--config", action="append", default=[], help="k=v")
    tc.add_argument("--if-not-exists", action="store_true")
    tsub.add_parser("delete").add_argument("name")
    tsub.add_parser("describe").add_argument("name", nargs="?")
    ta = tsub.add_parser("add-partitions")
    ta.add_argument("name")
    ta.add_argument("partitions", type=int, help="the new total")
    t.set_defaults(func=cmd_topics)

    g = sub.add_parser("groups", help="list, describe, delete groups; reset offsets")
    gsub = g.add_subparsers(dest="action", required=True)
    gsub.add_parser("list")
    gsub.add_parser("describe").add_argument("group")
    gsub.add_parser("delete").add_argument("group")
    gr = gsub.add_parser("reset-offsets")
    gr.add_argument("group")
    gr.add_argument("--topic", required=True)
    gr.add_argument("--to", required=True, help="earliest, latest or an offset")
    g.set_defaults(func=cmd_groups)

    cl = sub.add_parser("cluster", help="nodes, leaders, high watermarks, lag")
    cl.add_argument("--group", help="show this group's lag")
    cl.add_argument("--internal", action="store_true")
    cl.set_defaults(func=cmd_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(asyncio.run(args.func(args)))
    except KafkaError as e:
        sys.stderr.write(f"error: {type(e).__name__}: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
