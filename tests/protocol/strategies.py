"""Hypothesis strategies derived from the generated specs: a value valid at one version."""

from __future__ import annotations

import uuid
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from client.protocol.schema import FieldSpec

INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SMALL = st.integers(0, 3)


def _scalar(ftype: str) -> st.SearchStrategy[Any]:
    if ftype in INT_RANGES:
        lo, hi = INT_RANGES[ftype]
        return st.integers(lo, hi)
    if ftype == "bool":
        return st.booleans()
    if ftype == "float64":
        return st.floats(allow_nan=False)
    if ftype == "string":
        return TEXT
    if ftype in ("bytes", "records"):
        return st.binary(max_size=24)
    if ftype == "uuid":
        return st.builds(uuid.UUID, int=st.integers(0, 2**128 - 1))
    raise AssertionError(ftype)


def field_value(module: ModuleType, f: FieldSpec, version: int) -> st.SearchStrategy[Any]:
    if f.struct_name is not None:
        elem = struct_value(module, f.struct_name, f.fields, version)
    else:
        elem = _scalar(f.element_type)
    value = st.lists(elem, max_size=3).map(tuple) if f.is_array else elem
    if f.nullable_in(version):
        value = st.one_of(st.none(), value)
    return value


def struct_value(
    module: ModuleType, name: str, fields: tuple[FieldSpec, ...], version: int
) -> st.SearchStrategy[Any]:
    """An instance of `name` whose fields absent at `version` keep their defaults."""
    cls = getattr(module, name)
    kwargs = {f.attr: field_value(module, f, version) for f in fields if f.present_in(version)}
    return st.builds(cls, **kwargs)
