"""Exceptions the client raises, in two families.

Broker-reported errors come from the wire layer's table (client.protocol.errors):
`KafkaError` subclasses, one per ErrorCode, with a `retriable` flag;
`error_for_code(code)` maps a response's int16 to its class. The client adds
the errors that happen on our side of the socket (no broker reachable, a
request that timed out, a closed producer, a broker too old for an API).
Client errors that may succeed on a retry derive from RetriableKafkaError so
that one `retriable` check covers both families.
"""

from __future__ import annotations

from client.protocol.errors import (
    ErrorCode,
    KafkaError,
    RetriableKafkaError,
    UnknownErrorCodeError,
    error_for_code,
    is_retriable,
    raise_for_code,
)

__all__ = [
    "ClientClosedError",
    "CommitFailedError",
    "ErrorCode",
    "IllegalStateError",
    "KafkaConnectionError",
    "KafkaError",
    "KafkaTimeoutError",
    "NoBrokersAvailableError",
    "RecordTooLargeError",
    "RetriableKafkaError",
    "UnknownErrorCodeError",
    "UnsupportedVersionError",
    "error_for_code",
    "exception_for",
    "is_retriable",
    "raise_for_code",
]


class KafkaConnectionError(RetriableKafkaError):
    """The connection to a broker failed or closed while a request was pending."""

    code = ErrorCode.NETWORK_EXCEPTION


class KafkaTimeoutError(RetriableKafkaError):
    """No response (or no metadata, or no buffer space) within the allowed time."""

    code = ErrorCode.REQUEST_TIMED_OUT


class NoBrokersAvailableError(RetriableKafkaError):
    """None of the bootstrap or known brokers could be reached."""

    code = ErrorCode.NETWORK_EXCEPTION


class UnsupportedVersionError(KafkaError):
    """The broker supports no version of an API in common with us."""

    code = ErrorCode.UNSUPPORTED_VERSION


class RecordTooLargeError(KafkaError):
    """A record is larger than the producer's request_bytes_max or buffer_bytes_max."""

    code = ErrorCode.MESSAGE_TOO_LARGE


class ClientClosedError(KafkaError):
    """The producer, consumer or client was closed."""


class IllegalStateError(KafkaError):
    """The API was used in a state that does not allow it (e.g. position of an unassigned tp)."""


class CommitFailedError(KafkaError):
    """An offset commit failed because the group rebalanced; the work must be redone."""


def exception_for(code: int, message: str | None = None) -> KafkaError:
    """An exception instance for a non-zero error code, with an optional detail message."""
    return error_for_code(code)(message)
