"""The registry of APIs this project speaks: api keys, classes, versions, codecs.

One entry per API of DESIGN.md section 2. `min_version..max_version` is what the generated
code can encode and decode and what the broker advertises in ApiVersions;
`served_min_version` is the lowest version the broker accepts on use (Produce 0-2 are
advertised because librdkafka before 2.11.1 only enables compression and record batch v2
when it sees them, and are refused on use, as Kafka 4 does).

The flexible-version threshold of each API decides its header versions: request header
v2 and response header v1 for flexible versions, v1/v0 otherwise, except that
ApiVersions responses always use header v0 (KIP-511: a client must be able to read the
answer before it knows which versions the broker speaks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Any

from client.protocol.messages import (
    api_versions,
    create_partitions,
    create_topics,
    delete_groups,
    delete_records,
    delete_topics,
    describe_cluster,
    describe_configs,
    describe_groups,
    fetch,
    find_coordinator,
    heartbeat,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_fetch,
    offset_for_leader_epoch,
    produce,
    sync_group,
)
from client.protocol.schema import MessageSpec


class ApiKey(IntEnum):
    """Kafka api keys of the APIs in DESIGN.md section 2."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    DESCRIBE_CONFIGS = 32
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    DESCRIBE_CLUSTER = 60


Encoder = Callable[[Any, bytearray], None]
Decoder = Callable[[memoryview, int], tuple[Any, int]]


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """Everything the wire layer knows about one API."""

    api_key: ApiKey
    request_type: type
    response_type: type
    min_version: int
    max_version: int
    served_min_version: int
    request_spec: MessageSpec
    response_spec: MessageSpec
    request_encoders: dict[int, Encoder]
    request_decoders: dict[int, Decoder]
    response_encoders: dict[int, Encoder]
    response_decoders: dict[int, Decoder]

    def is_flexible(self, version: int) -> bool:
        return self.request_spec.is_flexible(version)

    def has_version(self, version: int) -> bool:
        """Generated (and advertised) at `version`."""
        return self.min_version <= version <= self.max_version

    def serves(self, version: int) -> bool:
        """Accepted by the broker at `version`."""
        return self.served_min_version <= version <= self.max_version

    def request_header_version(self, version: int) -> int:
        return 2 if self.is_flexible(version) else 1

    def response_header_version(self, version: int) -> int:
        if self.api_key is ApiKey.API_VERSIONS:
            return 0
        return 1 if self.is_flexible(version) else 0


def _spec(key: ApiKey, module: ModuleType, served_min_version: int | None = None) -> ApiSpec:
    req: MessageSpec = module.REQUEST_SPEC
    resp: MessageSpec = module.RESPONSE_SPEC
    assert req.valid_versions == resp.valid_versions and req.api_key == key
    lo, hi = req.valid_versions.lo, req.valid_versions.hi
    assert hi is not None
    return ApiSpec(
        api_key=key,
        request_type=getattr(module, req.name),
        response_type=getattr(module, resp.name),
        min_version=lo,
        max_version=hi,
        served_min_version=lo if served_min_version is None else served_min_version,
        request_spec=req,
        response_spec=resp,
        request_encoders=module.REQUEST_ENCODERS,
        request_decoders=module.REQUEST_DECODERS,
        response_encoders=module.RESPONSE_ENCODERS,
        response_decoders=module.RESPONSE_DECODERS,
    )


API_SPECS: dict[ApiKey, ApiSpec] = {
    s.api_key: s
    for s in (
        _spec(ApiKey.PRODUCE, produce, served_min_version=3),
        _spec(ApiKey.FETCH, fetch),
        _spec(ApiKey.LIST_OFFSETS, list_offsets),
        _spec(ApiKey.METADATA, metadata),
        _spec(ApiKey.OFFSET_COMMIT, offset_commit),
        _spec(ApiKey.OFFSET_FETCH, offset_fetch),
        _spec(ApiKey.FIND_COORDINATOR, find_coordinator),
        _spec(ApiKey.JOIN_GROUP, join_group),
        _spec(ApiKey.HEARTBEAT, heartbeat),
        _spec(ApiKey.LEAVE_GROUP, leave_group),
        _spec(ApiKey.SYNC_GROUP, sync_group),
        _spec(ApiKey.DESCRIBE_GROUPS, describe_groups),
        _spec(ApiKey.LIST_GROUPS, list_groups),
        _spec(ApiKey.API_VERSIONS, api_versions),
        _spec(ApiKey.CREATE_TOPICS, create_topics),
        _spec(ApiKey.DELETE_TOPICS, delete_topics),
        _spec(ApiKey.DELETE_RECORDS, delete_records),
        _spec(ApiKey.INIT_PRODUCER_ID, init_producer_id),
        _spec(ApiKey.OFFSET_FOR_LEADER_EPOCH, offset_for_leader_epoch),
        _spec(ApiKey.DESCRIBE_CONFIGS, describe_configs),
        _spec(ApiKey.CREATE_PARTITIONS, create_partitions),
        _spec(ApiKey.DELETE_GROUPS, delete_groups),
        _spec(ApiKey.DESCRIBE_CLUSTER, describe_cluster),
    )
}

# api key -> (min, max) advertised in ApiVersions.
SUPPORTED_VERSIONS: dict[ApiKey, tuple[int, int]] = {
    k: (s.min_version, s.max_version) for k, s in API_SPECS.items()
}

_BY_TYPE: dict[type, ApiSpec] = {}
for _s in API_SPECS.values():
    _BY_TYPE[_s.request_type] = _s
    _BY_TYPE[_s.response_type] = _s


def api_spec(api_key: int) -> ApiSpec | None:
    """The registry entry of `api_key`, or None when this project does not speak it."""
    try:
        return API_SPECS[ApiKey(api_key)]
    except ValueError:
        return None


def spec_for(body: object) -> ApiSpec:
    """The registry entry of a request or response object."""
    return _BY_TYPE[type(body)]


def api_versions_keys() -> tuple[api_versions.ApiVersion, ...]:
    """The ApiKeys array of an ApiVersions response: every API with its advertised range."""
    return tuple(
        api_versions.ApiVersion(api_key=int(k), min_version=lo, max_version=hi)
        for k, (lo, hi) in sorted(SUPPORTED_VERSIONS.items())
    )


def api_versions_unsupported_response() -> api_versions.ApiVersionsResponse:
    """What Kafka answers to an ApiVersions request at a version it cannot parse (KIP-511).

    Encode it at version 0 (`encode_response` does so for any version ApiVersions does not
    have): error UNSUPPORTED_VERSION (35) plus the supported ranges, so the client can
    retry with a version both sides know.
    """
    return api_versions.ApiVersionsResponse(error_code=35, api_keys=api_versions_keys())
