"""Typed errors of the wire layer: who is at fault decides what the caller does.

LocalProtocolError means *we* tried to send something invalid (a bug on our side);
RemoteProtocolError means the peer sent bytes we cannot accept (close that
connection, keep the node alive). Decoders raise only these, never IndexError,
struct.error or UnicodeDecodeError.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error the wire layer raises on purpose."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode or send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid Kafka protocol."""


class CorruptRecordError(RemoteProtocolError):
    """A record batch failed validation (bad CRC, bad lengths, bad varints, bad magic)."""


class UnsupportedCodecError(RemoteProtocolError):
    """A record batch names a compression codec that this build cannot decode."""
