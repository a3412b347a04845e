"""Declarative model of Kafka's message definitions (the facts the generator works from).

Kafka describes every request and response in JSON (`clients/src/main/resources/common/
message/`): per field a type, the versions it appears in, the versions it may be null in,
an optional tag (for tagged fields of flexible versions) and a default. `tools/codegen.py`
parses that JSON into the objects below, emits them verbatim into each generated module
(`SPEC = MessageSpec(...)`), and derives the specialised encode/decode functions from the
same objects. Keeping the spec in the generated modules makes the wire facts inspectable at
run time (tests, docs, debugging) without reading `../shared`.

Nothing here encodes bytes; this module is pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

# A version bound of None means "and every later version" (Kafka's "N+").
OPEN = None


@dataclass(frozen=True, slots=True)
class VersionRange:
    """Inclusive version range; `hi is None` means open-ended, `lo > hi` means none."""

    lo: int
    hi: int | None

    def contains(self, version: int) -> bool:
        return version >= self.lo and (self.hi is None or version <= self.hi)

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """Parse Kafka's version syntax: "none", "3", "3+", "0-7"."""
        text = text.strip()
        if text == "none":
            return NO_VERSIONS
        if text.endswith("+"):
            return cls(int(text[:-1]), None)
        if "-" in text:
            lo, hi = text.split("-", 1)
            return cls(int(lo), int(hi))
        return cls(int(text), int(text))


NO_VERSIONS = VersionRange(1, 0)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a message or struct, as Kafka's JSON declares it.

    `type` keeps Kafka's spelling: "int32", "string", "records", "[]int32", "[]Topic",
    "Topic" (a single struct). `fields` is set for struct and struct-array types, and
    `struct_name` names the generated dataclass for them. `default` is the Python value
    a missing field takes (already converted from the JSON text).
    """

    name: str
    attr: str
    type: str
    versions: VersionRange
    nullable_versions: VersionRange = NO_VERSIONS
    tag: int | None = None
    tagged_versions: VersionRange = NO_VERSIONS
    ignorable: bool = False
    default: object = None
    struct_name: str | None = None
    fields: tuple[FieldSpec, ...] = ()

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.is_array else self.type

    def present_in(self, version: int) -> bool:
        return self.versions.contains(version)

    def tagged_in(self, version: int) -> bool:
        return self.tag is not None and self.tagged_versions.contains(version)

    def nullable_in(self, version: int) -> bool:
        return self.nullable_versions.contains(version)


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """A request or response: its api key, the versions generated, and its fields.

    `valid_versions` is the range this project generates (a subset of Kafka's own
    validVersions, chosen by DESIGN.md section 2); `kafka_valid_versions` is Kafka's.
    """

    name: str
    api_key: int
    kind: str
    valid_versions: VersionRange
    kafka_valid_versions: VersionRange
    flexible_versions: VersionRange
    fields: tuple[FieldSpec, ...]

    def is_flexible(self, version: int) -> bool:
        return self.flexible_versions.contains(version)
