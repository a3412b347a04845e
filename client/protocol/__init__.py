"""The Kafka wire layer, sans-I/O, shared by the client and the broker.

Public surface (see each module's docstring for the theory of operation):
- messages/<api>.py: generated frozen dataclasses per request/response (`MetadataRequest`, ...)
- api_keys: `ApiKey`, `API_SPECS`, `SUPPORTED_VERSIONS`, `api_versions_unsupported_response`
- headers: `RequestHeader`, `ResponseHeader`
- codec: `encode_request`, `decode_request`, `decode_request_header`, `encode_response`,
  `decode_response`, `UnsupportedRequestError`
- connection: `ServerConnection`, `ClientConnection` and their events
- errors: `ErrorCode`, `KafkaError`, `error_for_code`, `raise_for_code`
- exceptions: `ProtocolError`, `LocalProtocolError`, `RemoteProtocolError`, ...
"""

from client.protocol.api_keys import (
    API_SPECS,
    SUPPORTED_VERSIONS,
    ApiKey,
    ApiSpec,
    api_spec,
    api_versions_unsupported_response,
)
from client.protocol.codec import (
    UnsupportedRequestError,
    decode_request,
    decode_request_header,
    decode_response,
    encode_request,
    encode_response,
)
from client.protocol.connection import (
    FRAME_BYTES_MAX_DEFAULT,
    ClientConnection,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
    UnsupportedRequest,
)
from client.protocol.errors import (
    ErrorCode,
    KafkaError,
    RetriableKafkaError,
    error_for_code,
    raise_for_code,
)
from client.protocol.exceptions import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from client.protocol.headers import RequestHeader, ResponseHeader

__all__ = [
    "API_SPECS",
    "FRAME_BYTES_MAX_DEFAULT",
    "SUPPORTED_VERSIONS",
    "ApiKey",
    "ApiSpec",
    "ClientConnection",
    "ErrorCode",
    "KafkaError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestHeader",
    "RequestReceived",
    "ResponseHeader",
    "ResponseReceived",
    "RetriableKafkaError",
    "ServerConnection",
    "UnsupportedRequest",
    "UnsupportedRequestError",
    "api_spec",
    "api_versions_unsupported_response",
    "decode_request",
    "decode_request_header",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_for_code",
    "raise_for_code",
]
