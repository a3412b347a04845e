"""Byte-identical requests versus kafka-python 3.x's protocol classes (generated from the
same Kafka JSON by an independent implementation): same values in, same bytes out."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from typing import Any

import kafka.protocol
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.protocol import API_SPECS, ApiKey
from client.protocol.schema import FieldSpec
from tests.protocol.strategies import struct_value


def _kafka_python_classes() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for info in pkgutil.walk_packages(kafka.protocol.__path__, "kafka.protocol."):
        if ".old" in info.name or "generate_stubs" in info.name:
            continue
        with warnings.catch_warnings():  # kafka-python's JSON loading uses deprecated APIs
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(info.name)
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and hasattr(obj, "API_KEY") and hasattr(obj, "encode"):
                found.setdefault(name, obj)
    return found


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
KP = _kafka_python_classes()
APIS = [
    ApiKey.METADATA,
    ApiKey.PRODUCE,
    ApiKey.FETCH,
    ApiKey.LIST_OFFSETS,
    ApiKey.FIND_COORDINATOR,
    ApiKey.JOIN_GROUP,
    ApiKey.SYNC_GROUP,
    ApiKey.HEARTBEAT,
    ApiKey.LEAVE_GROUP,
    ApiKey.OFFSET_COMMIT,
    ApiKey.OFFSET_FETCH,
    ApiKey.CREATE_TOPICS,
    ApiKey.DELETE_TOPICS,
    ApiKey.API_VERSIONS,
    ApiKey.INIT_PRODUCER_ID,
    ApiKey.DESCRIBE_GROUPS,
    ApiKey.LIST_GROUPS,
    ApiKey.DESCRIBE_CONFIGS,
]


def _convert(kp_cls: Any, fields: tuple[FieldSpec, ...], ours: Any, version: int) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields:
        if not f.present_in(version):
            continue
        value = getattr(ours, f.attr)
        if f.struct_name is not None and value is not None:
            sub = getattr(kp_cls, f.struct_name)
            if f.is_array:
                value = [_convert(sub, f.fields, v, version) for v in value]
            else:
                value = _convert(sub, f.fields, value, version)
        elif f.is_array and value is not None:
            value = list(value)
        elif f.type == "records" and value is not None:
            value = bytes(value)
        kwargs[f.attr] = value
    return kp_cls(**kwargs)


CASES = [
    (key, v)
    for key in APIS
    for v in range(API_SPECS[key].min_version, API_SPECS[key].max_version + 1)
    if KP.get(API_SPECS[key].request_spec.name) is not None
    and KP[API_SPECS[key].request_spec.name].min_version
    <= v
    <= KP[API_SPECS[key].request_spec.name].max_version
]


def test_oracle_covers_the_important_apis() -> None:
    covered = {key for key, _ in CASES}
    assert {ApiKey.METADATA, ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.API_VERSIONS} <= covered
    assert len(CASES) > 60


@pytest.mark.parametrize(("key", "version"), CASES, ids=[f"{k.name}-v{v}" for k, v in CASES])
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_requests_byte_identical_to_kafka_python(
    key: ApiKey, version: int, data: st.DataObject
) -> None:
    spec = API_SPECS[key]
    mspec = spec.request_spec
    module = sys.modules[spec.request_type.__module__]
    ours = data.draw(struct_value(module, mspec.name, mspec.fields, version))
    theirs = _convert(KP[mspec.name], mspec.fields, ours, version)
    assert ours.encode(version) == bytes(theirs.encode(version=version))
