"""Typed operating errors of the Raft core.

Bugs are AssertionErrors; everything a caller can cause or must handle has a class here.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error the core raises on purpose."""


class ProposalDropped(RaftError):
    """A proposal was not appended: not leader, leader transfer in progress, or too many
    uncommitted bytes. The caller should retry (possibly against another node)."""


class StepLocalMessage(RaftError):
    """A message type that only the node itself may create arrived from the network."""


class PeerNotFound(RaftError):
    """A response arrived from a node that is not in the configuration."""


class MessageDecodeError(RaftError):
    """A peer sent something that is not a well-formed message."""


class Compacted(RaftError):
    """The requested index lies before the first index kept in the log (a snapshot covers it)."""


class Unavailable(RaftError):
    """The requested index lies after the last index in the log."""


class SnapshotTemporarilyUnavailable(RaftError):
    """Storage cannot produce a snapshot right now; the core retries later."""


class InvalidConfChange(RaftError):
    """A membership change that would break the configuration (e.g. remove the last voter)."""
