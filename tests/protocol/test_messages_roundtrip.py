"""Every (API, version, request/response) of the table encodes and decodes to an equal value."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.protocol.api_keys import API_SPECS, ApiSpec
from client.protocol.messages import api_versions, fetch, metadata, produce
from tests.protocol.strategies import struct_value

CASES = [
    (spec, kind, version)
    for spec in API_SPECS.values()
    for kind in ("request", "response")
    for version in range(spec.min_version, spec.max_version + 1)
]


def _module(spec: ApiSpec):  # type: ignore[no-untyped-def]
    import sys

    return sys.modules[spec.request_type.__module__]


@pytest.mark.parametrize(
    ("spec", "kind", "version"),
    CASES,
    ids=[f"{s.api_key.name}-{k}-v{v}" for s, k, v in CASES],
)
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_round_trip(spec: ApiSpec, kind: str, version: int, data: st.DataObject) -> None:
    module = _module(spec)
    mspec = spec.request_spec if kind == "request" else spec.response_spec
    value = data.draw(struct_value(module, mspec.name, mspec.fields, version))
    cls = type(value)
    encoded = value.encode(version)
    assert cls.decode(encoded, version) == value
    # Encoding is a function of the value: the decoded copy encodes to the same bytes.
    assert cls.decode(encoded, version).encode(version) == encoded


def test_every_table_version_has_codecs() -> None:
    for spec in API_SPECS.values():
        for v in range(spec.min_version, spec.max_version + 1):
            for cls in (spec.request_type, spec.response_type):
                assert cls.decode(cls().encode(v), v) == cls()


def test_known_bytes_metadata_v9_request() -> None:
    req = metadata.MetadataRequest(topics=(metadata.MetadataRequestTopic(name="a"),))
    # compact array (1+1), compact string "a", tags, 3 bools, tags
    assert req.encode(9) == bytes.fromhex("02 02 61 00 01 00 00 00")
    assert metadata.MetadataRequest(topics=None).encode(1) == b"\xff\xff\xff\xff"


def test_produce_request_records_are_zero_copy() -> None:
    batch = bytes(range(200))
    req = produce.ProduceRequest(
        acks=-1,
        timeout_ms=1000,
        topic_data=(
            produce.TopicProduceData(
                name="t",
                partition_data=(produce.PartitionProduceData(index=0, records=batch),),
            ),
        ),
    )
    for version in (3, 8, 9):
        frame = bytearray(req.encode(version))
        decoded = produce.ProduceRequest.decode(memoryview(frame), version)
        records = decoded.topic_data[0].partition_data[0].records
        assert isinstance(records, memoryview) and records == batch
        assert records.obj is frame


def test_tagged_fields_only_when_not_default() -> None:
    # kcat/librdkafka 2.0.2 rejects ApiVersions v3 responses carrying default tagged fields.
    resp = api_versions.ApiVersionsResponse(
        api_keys=(api_versions.ApiVersion(api_key=18, min_version=0, max_version=3),)
    )
    assert resp.encode(3) == bytes.fromhex("0000 02 0012 0000 0003 00 00000000 00")
    feature = api_versions.SupportedFeatureKey(name="f", min_version=1, max_version=2)
    tagged = api_versions.ApiVersionsResponse(
        supported_features=(feature,), finalized_features_epoch=5
    )
    encoded = tagged.encode(3)
    assert encoded.endswith(bytes.fromhex("02 00 08 02 02 66 0001 0002 00 01 08 0000000000000005"))
    assert api_versions.ApiVersionsResponse.decode(encoded, 3) == tagged


def test_fetch_response_nested_structs_reachable_both_ways() -> None:
    assert fetch.FetchResponse.FetchableTopicResponse is fetch.FetchableTopicResponse  # type: ignore[attr-defined]
    assert metadata.MetadataResponse.SPEC is metadata.RESPONSE_SPEC  # type: ignore[attr-defined]
