"""ReadIndex bookkeeping (thesis §6.4): linearizable reads without writing to the log.

The leader records its commit index when a read arrives, then confirms it is still leader by
a round of heartbeats carrying the request's context. Once a quorum answers, every read queued
up to that context may be served after the state machine applies the recorded index.
Requests are answered in arrival order, so one quorum answer releases all earlier reads too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raft.messages import Message


@dataclass(slots=True)
class ReadIndexStatus:
    request: Message
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    """Pending ReadIndex requests, keyed by their (caller-unique) context."""

    __slots__ = ("pending", "queue")

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, request: Message) -> None:
        ctx = request.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(request, index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, context: bytes) -> dict[int, bool] | None:
        status = self.pending.get(context)
        if status is None:
            return None
        status.acks[node_id] = True
        return status.acks

    def advance(self, context: bytes) -> list[ReadIndexStatus]:
        """Release every request up to and including `context`."""
        if context not in self.pending:
            return []
        released = []
        n = 0
        for ctx in self.queue:
            n += 1
            released.append(self.pending.pop(ctx))
            if ctx == context:
                break
        del self.queue[:n]
        return released

    def last_pending_context(self) -> bytes | None:
        return self.queue[-1] if self.queue else None
