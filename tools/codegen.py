"""Generate client/protocol/messages/ from Kafka's JSON message definitions.

Usage (from the repository root):

    python -m tools.codegen                     # rewrite client/protocol/messages/
    python -m tools.codegen --check             # exit 1 when the committed output is stale
    python -m tools.codegen --out DIR --spec DIR

Theory of operation. Kafka's JSON (`../shared/kafka-protocol/messages`) is parsed into
`client.protocol.schema` objects (versions, flexible versions, nullable versions, tags,
defaults). For every API of DESIGN.md section 2 the generator writes one module holding:
frozen slotted dataclasses for the request, the response and their nested structs; the
spec itself (`REQUEST_SPEC`, `RESPONSE_SPEC`); and one straight-line encoder and decoder
per (struct, version), built from the spec at generation time. Runs of fixed-width
fields become a single precompiled `struct.Struct` call, lengths and varints go through
`client.protocol.primitives`. Versions with the same wire layout share one function.
Interpreting the spec at run time would walk every field of every message through
generic code; generated code pays that cost once, here.

This module is never imported at run time.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client.protocol.schema import NO_VERSIONS, FieldSpec, MessageSpec, VersionRange  # noqa: E402

DEFAULT_SPEC_DIR = ROOT / ".." / "shared" / "kafka-protocol" / "messages"
DEFAULT_OUT_DIR = ROOT / "client" / "protocol" / "messages"
KAFKA_COMMIT = "1eb7644349cb07139d6a3c1ad1986979647cac99"

# DESIGN.md section 2: the APIs and versions generated (and advertised). Produce is
# generated from 0 because librdkafka needs to see v0 advertised; the broker serves 3-9.
API_VERSIONS: dict[str, tuple[int, int]] = {
    "Produce": (0, 9),
    "Fetch": (4, 12),
    "ListOffsets": (1, 7),
    "Metadata": (0, 12),
    "OffsetCommit": (2, 8),
    "OffsetFetch": (1, 7),
    "FindCoordinator": (0, 3),
    "JoinGroup": (0, 7),
    "Heartbeat": (0, 4),
    "LeaveGroup": (0, 4),
    "SyncGroup": (0, 5),
    "DescribeGroups": (0, 5),
    "ListGroups": (0, 4),
    "ApiVersions": (0, 3),
    "CreateTopics": (2, 5),
    "DeleteTopics": (1, 4),
    "DeleteRecords": (0, 2),
    "InitProducerId": (0, 4),
    "OffsetForLeaderEpoch": (2, 4),
    "DescribeConfigs": (1, 4),
    "CreatePartitions": (0, 3),
    "DeleteGroups": (0, 2),
    "DescribeCluster": (0, 1),
}

FIXED = {"int8": "b", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q"}
FIXED |= {"float64": "d", "bool": "?"}
FIXED_SIZE = {"b": 1, "h": 2, "H": 2, "i": 4, "I": 4, "q": 8, "d": 8, "?": 1}
PY_TYPES = {"string": "str", "bytes": "bytes", "uuid": "uuid.UUID", "float64": "float"}
PY_TYPES |= {"bool": "bool"} | {t: "int" for t in FIXED if t not in ("bool", "float64")}


# -- JSON loading ----------------------------------------------------------------------


def strip_comments(text: str) -> str:
    """Drop // comments outside string literals (Kafka's JSON allows them)."""
    out: list[str] = []
    i, in_str = 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load_json(path: Path) -> dict[str, object]:
    data = json.loads(strip_comments(path.read_text()))
    assert isinstance(data, dict)
    return data


def snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()
    return s + "_" if keyword.iskeyword(s) else s


def _default(raw: dict[str, object], ftype: str, nullable: bool) -> object:
    """The Python default of a field; structs are resolved later (see default_expr)."""
    text = raw.get("default")
    if ftype.startswith("[]"):
        return None if text == "null" else ()
    if text == "null":
        return None
    if ftype == "bool":
        return text in (True, "true")
    if ftype in FIXED and ftype != "float64":
        return int(str(text), 0) if text is not None else 0
    if ftype == "float64":
        return float(str(text)) if text is not None else 0.0
    if ftype == "string":
        return str(text) if text is not None else ""
    if ftype == "bytes":
        return b""
    return None  # uuid (zero uuid), records (None), struct (an empty instance)


def parse_field(raw: dict[str, object], common: dict[str, list[dict[str, object]]]) -> FieldSpec:
    ftype = str(raw["type"]).strip()
    nullable = VersionRange.parse(str(raw.get("nullableVersions", "none")))
    elem = ftype[2:] if ftype.startswith("[]") else ftype
    struct_name = None
    subfields: tuple[FieldSpec, ...] = ()
    if elem not in FIXED and elem not in ("string", "bytes", "uuid", "records"):
        struct_name = elem
        raw_fields = raw.get("fields") or common[elem]
        assert isinstance(raw_fields, list)
        subfields = tuple(parse_field(f, common) for f in raw_fields)
    tag = raw.get("tag")
    return FieldSpec(
        name=str(raw["name"]),
        attr=snake(str(raw["name"])),
        type=ftype,
        versions=VersionRange.parse(str(raw["versions"])),
        nullable_versions=nullable,
        tag=int(str(tag)) if tag is not None else None,
        tagged_versions=VersionRange.parse(str(raw.get("taggedVersions", "none"))),
        ignorable=bool(raw.get("ignorable", False)),
        default=_default(raw, ftype, nullable != NO_VERSIONS),
        struct_name=struct_name,
        fields=subfields,
    )


def parse_message(path: Path, lo: int, hi: int) -> MessageSpec:
    raw = load_json(path)
    common_list = raw.get("commonStructs", [])
    assert isinstance(common_list, list)
    common = {str(c["name"]): c["fields"] for c in common_list}
    raw_fields = raw["fields"]
    assert isinstance(raw_fields, list)
    kafka_valid = VersionRange.parse(str(raw["validVersions"]))
    assert kafka_valid.contains(lo) and kafka_valid.contains(hi), path
    return MessageSpec(
        name=str(raw["name"]),
        api_key=int(str(raw["apiKey"])),
        kind=str(raw["type"]),
        valid_versions=VersionRange(lo, hi),
        kafka_valid_versions=kafka_valid,
        flexible_versions=VersionRange.parse(str(raw["flexibleVersions"])),
        fields=tuple(parse_field(f, common) for f in raw_fields),
    )


# -- code emission ---------------------------------------------------------------------


@dataclass
class Struct:
    """A dataclass to emit: the top-level message or one nested struct type."""

    name: str
    fields: tuple[FieldSpec, ...]
    top: bool = False


@dataclass
class Emitter:
    """Accumulates one module's source; functions are shared across identical versions."""

    spec_name: str
    lines: list[str] = field(default_factory=list)
    structs: dict[str, Struct] = field(default_factory=dict)
    fmt_names: set[str] = field(default_factory=set)
    bodies: dict[str, str] = field(default_factory=dict)  # body text -> function name
    funcs: dict[tuple[str, str, int], str] = field(default_factory=dict)

    def fixed(self, fmt: str) -> str:
        name = "_S_" + fmt.replace("?", "Z")
        self.fmt_names.add(fmt)
        return name


def collect_structs(name: str, fields: tuple[FieldSpec, ...], into: dict[str, Struct]) -> None:
    """Children first, so every class is defined before a default refers to it."""
    for f in fields:
        if f.struct_name is not None:
            collect_structs(f.struct_name, f.fields, into)
    if name in into:
        assert into[name].fields == fields, f"struct {name} defined twice differently"
    into[name] = Struct(name, fields)


def py_type(f: FieldSpec, valid: VersionRange) -> str:
    elem = f.element_type
    if f.type == "records":
        return "bytes | memoryview | None"
    base = f.struct_name if f.struct_name else PY_TYPES[elem]
    text = f"tuple[{base}, ...]" if f.is_array else base
    nullable = any(f.nullable_in(v) and f.present_in(v) for v in versions_of(valid))
    if nullable or default_expr(f) == "None":
        text += " | None"
    return text


def default_expr(f: FieldSpec) -> str:
    if f.type == "records":
        return "None"
    if f.is_array:
        return "None" if f.default is None else "()"
    if f.struct_name is not None:
        # One shared default instance per struct: cheap `is` checks for tagged fields.
        return f"_D_{f.struct_name}" if f.nullable_versions == NO_VERSIONS else "None"
    if f.type == "uuid":
        return "ZERO_UUID"
    return repr(f.default)


def versions_of(r: VersionRange) -> range:
    assert r.hi is not None
    return range(r.lo, r.hi + 1)


def spec_expr(f: FieldSpec, indent: str) -> str:
    def vr(r: VersionRange) -> str:
        return "NO_VERSIONS" if r == NO_VERSIONS else f"VersionRange({r.lo}, {r.hi})"

    parts = [f"name={f.name!r}", f"attr={f.attr!r}", f"type={f.type!r}"]
    parts.append(f"versions={vr(f.versions)}")
    if f.nullable_versions != NO_VERSIONS:
        parts.append(f"nullable_versions={vr(f.nullable_versions)}")
    if f.tag is not None:
        parts.append(f"tag={f.tag}, tagged_versions={vr(f.tagged_versions)}")
    if f.ignorable:
        parts.append("ignorable=True")
    parts.append(f"default={default_expr(f)}")
    if f.struct_name:
        inner = indent + "    "
        subs = "".join(f"\n{inner}    {spec_expr(s, inner + '    ')}," for s in f.fields)
        parts.append(f"struct_name={f.struct_name!r}")
        parts.append(f"fields=({subs}\n{inner})")
    return "FieldSpec(" + ", ".join(parts) + ")"


def elem_min_bytes(f: FieldSpec, v: int, flex: bool) -> int:
    """Smallest encoding of one element of f (or of f itself when it is not an array)."""
    elem = f.element_type
    if elem in FIXED:
        return FIXED_SIZE[FIXED[elem]]
    if elem == "uuid":
        return 16
    if elem == "string":
        return 1 if flex else 2
    if elem in ("bytes", "records"):
        return 1 if flex else 4
    return struct_min_bytes(f.fields, v, flex)


def struct_min_bytes(fields: tuple[FieldSpec, ...], v: int, flex: bool) -> int:
    total = 1 if flex else 0  # the tagged-field count
    for f in fields:
        if not f.present_in(v) or (flex and f.tagged_in(v)):
            continue
        if f.is_array:
            total += 1 if flex else 4
        elif f.struct_name is not None and f.nullable_in(v):
            total += 1
        else:
            total += elem_min_bytes(f, v, flex)
    return total


class Gen:
    """Builds the encoder/decoder functions of one message for one version at a time."""

    def __init__(self, em: Emitter, valid: VersionRange) -> None:
        self.em = em
        self.valid = valid

    # Each `func` returns the function name, generating (and deduplicating) it on demand.
    def func(self, kind: str, st: Struct, v: int, flex: bool) -> str:
        key = (kind, st.name, v)
        if key in self.em.funcs:
            return self.em.funcs[key]
        body = self.enc_body(st, v, flex) if kind == "enc" else self.dec_body(st, v, flex)
        sig_key = f"{kind}:{st.name}:{flex}\n" + "\n".join(body)
        name = self.em.bodies.get(sig_key)
        if name is None:
            name = f"_{kind}_{st.name}_v{v}"
            self.em.bodies[sig_key] = name
            if kind == "enc":
                head = f"def {name}(o: {st.name}, out: bytearray) -> None:"
            else:
                head = f"def {name}(buf: memoryview, pos: int) -> tuple[{st.name}, int]:"
            self.em.lines.extend(["", "", head, *body])
        self.em.funcs[key] = name
        return name

    def sub(self, f: FieldSpec) -> Struct:
        assert f.struct_name is not None
        return self.em.structs[f.struct_name]

    # -- encoders --

    def enc_body(self, st: Struct, v: int, flex: bool) -> list[str]:
        lines: list[str] = []
        run: list[FieldSpec] = []

        def flush() -> None:
            if run:
                fmt = "".join(FIXED[f.type] for f in run)
                args = ", ".join(f"o.{f.attr}" for f in run)
                lines.append(f"    out += {self.em.fixed(fmt)}.pack({args})")
                run.clear()

        tagged = []
        for f in st.fields:
            if not f.present_in(v):
                continue
            if flex and f.tagged_in(v):
                tagged.append(f)
            elif f.type in FIXED:
                run.append(f)
            else:
                flush()
                lines.extend(self.enc_field(f, v, flex, f"o.{f.attr}", "out", "    "))
        flush()
        if flex:
            lines.extend(self.enc_tagged(tagged, v, "    "))
        return lines or ["    pass"]

    def enc_tagged(self, tagged: list[FieldSpec], v: int, ind: str) -> list[str]:
        if not tagged:
            return [f"{ind}out.append(0)"]
        lines = [f"{ind}tags: list[tuple[int, bytearray]] = []"]
        for f in sorted(tagged, key=lambda f: f.tag or 0):
            d = default_expr(f)
            val = f"o.{f.attr}"
            if f.is_array:
                cond = f"{val} is not None" if d == "None" else f"{val}"
            elif d == "None":
                cond = f"{val} is not None"
            elif f.struct_name is not None:
                # Compare with a shared default instance, not a fresh one per call.
                cond = f"{val} is not {d} and {val} != {d}"
            else:
                cond = f"{val} != {d}"
            lines.append(f"{ind}if {cond}:")
            lines.append(f"{ind}    t = bytearray()")
            lines.extend(self.enc_field(f, v, True, val, "t", ind + "    "))
            lines.append(f"{ind}    tags.append(({f.tag}, t))")
        lines.append(f"{ind}write_tagged(out, tags)")
        return lines

    def enc_field(
        self, f: FieldSpec, v: int, flex: bool, val: str, out: str, ind: str
    ) -> list[str]:
        nullable = f.nullable_in(v)
        c = "compact_" if flex else ""
        n = "nullable_" if nullable else ""
        t = f.type
        if t in FIXED:
            return [f"{ind}{out} += {self.em.fixed(FIXED[t])}.pack({val})"]
        if t == "uuid":
            return [f"{ind}{out} += {val}.bytes"]
        if t == "string":
            return [f"{ind}write_{c}{n}string({out}, {val})"]
        if t in ("bytes", "records"):
            n = "nullable_" if nullable or t == "records" else ""
            return [f"{ind}write_{c}{n}bytes({out}, {val})"]
        if not f.is_array:  # a single struct
            fn = self.func("enc", self.sub(f), v, flex)
            if nullable:
                return [
                    f"{ind}if {val} is None:",
                    f"{ind}    {out}.append(0xFF)",
                    f"{ind}else:",
                    f"{ind}    {out}.append(1)",
                    f"{ind}    {fn}({val}, {out})",
                ]
            return [f"{ind}{fn}({val}, {out})"]
        var = "a_" + f.attr
        ev = "e_" + f.attr
        lines = [f"{ind}{var} = {val}", f"{ind}write_{c}array_len({out}, {var}, {nullable})"]
        elem = f.element_type
        if elem in FIXED:
            lines += [
                f"{ind}if {var}:",
                f"{ind}    write_fixed_array({out}, {var}, {FIXED[elem]!r})",
            ]
        elif elem == "uuid":
            lines += [
                f"{ind}if {var}:",
                f"{ind}    for {ev} in {var}:",
                f"{ind}        {out} += {ev}.bytes",
            ]
        elif elem == "string":
            lines += [f"{ind}if {var}:", f"{ind}    for {ev} in {var}:"]
            lines += [f"{ind}        write_{c}string({out}, {ev})"]
        else:
            fn = self.func("enc", self.sub(f), v, flex)
            lines += [
                f"{ind}if {var}:",
                f"{ind}    for {ev} in {var}:",
                f"{ind}        {fn}({ev}, {out})",
            ]
        return lines

    # -- decoders --

    def dec_body(self, st: Struct, v: int, flex: bool) -> list[str]:
        lines: list[str] = []
        run: list[FieldSpec] = []
        assigned: list[str] = []

        def flush() -> None:
            if run:
                fmt = "".join(FIXED[f.type] for f in run)
                names = ", ".join(f"f_{f.attr}" for f in run) + ("," if len(run) == 1 else "")
                size = sum(FIXED_SIZE[ch] for ch in fmt)
                lines.append(f"    {names} = {self.em.fixed(fmt)}.unpack_from(buf, pos)")
                lines.append(f"    pos += {size}")
                run.clear()

        tagged = []
        for f in st.fields:
            if not f.present_in(v):
                continue
            assigned.append(f.attr)
            if flex and f.tagged_in(v):
                tagged.append(f)
            elif f.type in FIXED:
                run.append(f)
            else:
                flush()
                lines.extend(self.dec_field(f, v, flex, f"f_{f.attr}", "buf", "    "))
        flush()
        if flex:
            lines.extend(self.dec_tagged(tagged, v, "    "))
        args = ", ".join(f"{a}=f_{a}" for a in assigned)
        lines.append(f"    return {st.name}({args}), pos")
        return lines

    def dec_tagged(self, tagged: list[FieldSpec], v: int, ind: str) -> list[str]:
        if not tagged:
            return [f"{ind}pos = skip_tagged_fields(buf, pos)"]
        lines = [f"{ind}f_{f.attr}: {py_type(f, self.valid)} = {default_expr(f)}" for f in tagged]
        lines += [
            f"{ind}n_tags, pos = read_tag_count(buf, pos)",
            f"{ind}for _ in range(n_tags):",
            f"{ind}    tag, end, pos = read_tag_header(buf, pos)",
        ]
        for i, f in enumerate(sorted(tagged, key=lambda f: f.tag or 0)):
            kw = "if" if i == 0 else "elif"
            lines.append(f"{ind}    {kw} tag == {f.tag}:")
            lines.append(f"{ind}        tbuf = buf[:end]")
            lines.extend(self.dec_field(f, v, True, f"f_{f.attr}", "tbuf", ind + "        "))
        lines.append(f"{ind}    pos = end")
        return lines

    def dec_field(
        self, f: FieldSpec, v: int, flex: bool, target: str, buf: str, ind: str
    ) -> list[str]:
        nullable = f.nullable_in(v)
        c = "compact_" if flex else ""
        n = "nullable_" if nullable else ""
        t = f.type
        if t in FIXED:
            fmt = FIXED[t]
            return [
                f"{ind}{target}, = {self.em.fixed(fmt)}.unpack_from({buf}, pos)",
                f"{ind}pos += {FIXED_SIZE[fmt]}",
            ]
        if t == "uuid":
            return [f"{ind}{target}, pos = read_uuid({buf}, pos)"]
        if t == "string":
            return [f"{ind}{target}, pos = read_{c}{n}string({buf}, pos)"]
        if t == "bytes":
            return [f"{ind}{target}, pos = read_{c}{n}bytes({buf}, pos)"]
        if t == "records":
            return [f"{ind}{target}, pos = read_{c}records({buf}, pos)"]
        if not f.is_array:
            fn = self.func("dec", self.sub(f), v, flex)
            if nullable:
                return [
                    f"{ind}marker, = INT8.unpack_from({buf}, pos)",
                    f"{ind}pos += 1",
                    f"{ind}if marker < 0:",
                    f"{ind}    {target} = None",
                    f"{ind}else:",
                    f"{ind}    {target}, pos = {fn}({buf}, pos)",
                ]
            return [f"{ind}{target}, pos = {fn}({buf}, pos)"]
        cnt = "n_" + f.attr
        lines = [f"{ind}{cnt}, pos = read_{c}array_len({buf}, pos, {elem_min_bytes(f, v, flex)})"]
        lines.append(f"{ind}if {cnt} < 0:")
        if nullable:
            lines.append(f"{ind}    {target} = None")
        else:
            lines.append(f"{ind}    raise fail('null for non-nullable array {f.name}')")
        lines.append(f"{ind}else:")
        elem = f.element_type
        i2 = ind + "    "
        if elem in FIXED:
            fmt = FIXED[elem]
            lines.append(
                f"{i2}{target}, pos = read_fixed_array({buf}, pos, {cnt}, {fmt!r}, {FIXED_SIZE[fmt]})"
            )
            return lines
        if elem == "uuid":
            lines.append(f"{i2}{target}, pos = read_uuid_array({buf}, pos, {cnt})")
            return lines
        if elem == "string":
            call = f"read_{c}string({buf}, pos)"
        else:
            call = f"{self.func('dec', self.sub(f), v, flex)}({buf}, pos)"
        items = "l_" + f.attr
        lines += [
            f"{i2}{items} = []",
            f"{i2}for _ in range({cnt}):",
            f"{i2}    e_{f.attr}, pos = {call}",
            f"{i2}    {items}.append(e_{f.attr})",
            f"{i2}{target} = tuple({items})",
        ]
        return lines


HEADER = """\
# GENERATED by tools/codegen.py from Apache Kafka's message definitions
# ({req}.json and {resp}.json of clients/src/main/resources/common/message/,
# apache/kafka commit {commit}), Copyright The Apache Software Foundation,
# licensed under the Apache License 2.0. See NOTICE. Do not edit by hand:
# run `python -m tools.codegen` instead.
"""


def emit_class(st: Struct, spec: MessageSpec, lines: list[str]) -> None:
    lines += ["", "", "@dataclass(frozen=True, slots=True, kw_only=True)", f"class {st.name}:"]
    if st.top:
        lo, hi = spec.valid_versions.lo, spec.valid_versions.hi
        lines.append(
            f'    """{spec.kind.capitalize()} of api key {spec.api_key}, versions {lo}-{hi}."""'
        )
        lines.append("")
        lines.append(f"    API_KEY: ClassVar[int] = {spec.api_key}")
        lines.append(f"    MIN_VERSION: ClassVar[int] = {lo}")
        lines.append(f"    MAX_VERSION: ClassVar[int] = {hi}")
    else:
        lines.append(f'    """Struct {st.name} of {spec.name}."""')
    if st.fields:
        lines.append("")
    for f in st.fields:
        lines.append(f"    {f.attr}: {py_type(f, spec.valid_versions)} = {default_expr(f)}")
    if not st.top:
        lines += ["", "", f"_D_{st.name} = {st.name}()"]
    if st.top:
        name = st.name
        k = spec.kind.upper()
        lines += [
            "",
            "    def encode(self, version: int) -> bytes:",
            '        """The body alone (no header, no size prefix) at `version`."""',
            "        out = bytearray()",
            f"        encode_with(pick({k}_ENCODERS, version, self), self, out)",
            "        return bytes(out)",
            "",
            "    @classmethod",
            f"    def decode(cls, data: bytes | bytearray | memoryview, version: int) -> {name}:",
            '        """Decode a whole body at `version`; trailing bytes are an error."""',
            f"        body, pos = decode_with(pick({k}_DECODERS, version, cls), data)",
            "        if pos != len(data):",
            "            raise fail(f'{len(data) - pos} trailing bytes after the body')",
            "        return body",
        ]


def generate_module(spec_dir: Path, api: str, lo: int, hi: int) -> str:
    specs = [
        parse_message(spec_dir / f"{api}{kind}.json", lo, hi) for kind in ("Request", "Response")
    ]
    em = Emitter(api)
    class_lines: list[str] = []
    nest_lines: list[str] = []
    spec_lines: list[str] = []
    table_lines: list[str] = []
    for spec in specs:
        structs: dict[str, Struct] = {}
        for f in spec.fields:
            if f.struct_name is not None:
                collect_structs(f.struct_name, f.fields, structs)
        clash = set(structs) & set(em.structs)
        assert not clash, f"struct names used by both request and response: {clash}"
        em.structs.update(structs)
        top = Struct(spec.name, spec.fields, top=True)
        em.structs[spec.name] = top
        for st in structs.values():
            emit_class(st, spec, class_lines)
            nest_lines.append(f"{spec.name}.{st.name} = {st.name}  # type: ignore[attr-defined]")
        emit_class(top, spec, class_lines)
        spec_lines += spec_block(spec)
        gen = Gen(em, spec.valid_versions)
        enc, dec = [], []
        for v in versions_of(spec.valid_versions):
            flex = spec.is_flexible(v)
            enc.append(f"    {v}: {gen.func('enc', top, v, flex)},")
            dec.append(f"    {v}: {gen.func('dec', top, v, flex)},")
        n = spec.name
        k = spec.kind.upper()
        table_lines += ["", f"{k}_ENCODERS: dict[int, Callable[[{n}, bytearray], None]] = {{"]
        table_lines += [*enc, "}"]
        table_lines += [
            f"{k}_DECODERS: dict[int, Callable[[memoryview, int], tuple[{n}, int]]] = {{"
        ]
        table_lines += [*dec, "}"]
    fmts = sorted(em.fmt_names)
    out = [HEADER.format(req=specs[0].name, resp=specs[1].name, commit=KAFKA_COMMIT)]
    out.append(f'"""{api} (api key {specs[0].api_key}): generated messages, versions {lo}-{hi}."""')
    out += ["", "from __future__ import annotations", "", "import struct", "import uuid"]
    out += ["from collections.abc import Callable", "from dataclasses import dataclass"]
    out += [
        "from typing import ClassVar",
        "",
        "from client.protocol.primitives import *  # noqa: F403",
    ]
    out += [
        "from client.protocol.schema import NO_VERSIONS, FieldSpec, MessageSpec, VersionRange",
        "",
    ]
    out += [f"{em.fixed(f)} = struct.Struct({'>' + f!r})" for f in fmts]
    out += class_lines
    out += ["", "", *nest_lines, "", *spec_lines]
    out += em.lines
    out += ["", *table_lines]
    return "\n".join(out) + "\n"


def spec_block(spec: MessageSpec) -> list[str]:
    def vr(r: VersionRange) -> str:
        return "NO_VERSIONS" if r == NO_VERSIONS else f"VersionRange({r.lo}, {r.hi})"

    const = "REQUEST_SPEC" if spec.kind == "request" else "RESPONSE_SPEC"
    lines = [
        f"{const} = MessageSpec(",
        f"    name={spec.name!r},",
        f"    api_key={spec.api_key},",
        f"    kind={spec.kind!r},",
        f"    valid_versions={vr(spec.valid_versions)},",
        f"    kafka_valid_versions={vr(spec.kafka_valid_versions)},",
        f"    flexible_versions={vr(spec.flexible_versions)},",
        "    fields=(",
    ]
    lines += [f"        {spec_expr(f, '        ')}," for f in spec.fields]
    lines += ["    ),", ")", f"{spec.name}.SPEC = {const}  # type: ignore[attr-defined]", ""]
    return lines


def module_name(api: str) -> str:
    return snake(api)


def generate_all(spec_dir: Path) -> dict[str, str]:
    """File name -> source for every generated module (including __init__.py)."""
    files = {}
    for api, (lo, hi) in API_VERSIONS.items():
        files[f"{module_name(api)}.py"] = generate_module(spec_dir, api, lo, hi)
    names = sorted(module_name(a) for a in API_VERSIONS)
    init = [
        HEADER.format(req="<Api>Request", resp="<Api>Response", commit=KAFKA_COMMIT),
        '"""Generated Kafka messages, one module per API (see tools/codegen.py)."""',
        "",
        "from client.protocol.messages import (",
        *[f"    {n}," for n in names],
        ")",
        "",
        "__all__ = [",
        *[f"    {n!r}," for n in names],
        "]",
    ]
    files["__init__.py"] = "\n".join(init) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--check", action="store_true", help="fail when --out is stale")
    args = parser.parse_args(argv)
    files = generate_all(args.spec)
    if args.check:
        stale = [n for n, src in files.items() if _read(args.out / n) != src]
        for n in stale:
            print(f"stale: {args.out / n}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, src in files.items():
        (args.out / n).write_text(src)
    return 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    raise SystemExit(main())
