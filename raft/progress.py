"""Per-follower replication progress and flow control, as the leader sees it.

A follower is in one of three states (etcd's design.md):

    PROBE      we do not know its match index; send one append per heartbeat interval and
               wait for the answer (a rejection moves `next_index` back using the hint).
    REPLICATE  its log matches ours up to match_index; stream appends optimistically,
               bounded by `Inflights` (count and bytes) so a slow follower cannot make the
               leader buffer without bound.
    SNAPSHOT   it needs entries we compacted; a snapshot is on its way and appends pause
               until the driver reports the outcome (report_snapshot).

    PROBE --append ack--> REPLICATE --reject / unreachable--> PROBE
    PROBE/REPLICATE --needs compacted entries--> SNAPSHOT --report_snapshot--> PROBE

Invariant: 0 <= match_index < next_index.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Bounded FIFO of (last index, bytes) of appends sent but not yet acknowledged."""

    __slots__ = ("bytes", "bytes_max", "count_max", "ring")

    def __init__(self, count_max: int, bytes_max: int = 0) -> None:
        self.count_max = count_max
        #: 0 means no byte limit.
        self.bytes_max = bytes_max
        self.ring: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def add(self, last_index: int, size_bytes: int) -> None:
        assert not self.full(), "adding to a full Inflights"
        self.ring.append((last_index, size_bytes))
        self.bytes += size_bytes

    def free_le(self, index: int) -> None:
        """Forget every append whose last index is <= index (acknowledged)."""
        ring = self.ring
        while ring and ring[0][0] <= index:
            self.bytes -= ring.popleft()[1]

    def free_first(self) -> None:
        if self.ring:
            self.bytes -= self.ring.popleft()[1]

    def full(self) -> bool:
        return len(self.ring) >= self.count_max or (
            self.bytes_max > 0 and self.bytes >= self.bytes_max
        )

    def count(self) -> int:
        return len(self.ring)

    def reset(self) -> None:
        self.ring.clear()
        self.bytes = 0


class Progress:
    """What the leader knows about one peer's log."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match_index",
        "msg_app_flow_paused",
        "next_index",
        "pending_snapshot",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, inflights: Inflights, is_learner: bool = False) -> None:
        #: Highest index known to be replicated on the peer.
        self.match_index = 0
        #: Next index to send.
        self.next_index = next_index
        self.state = ProgressState.PROBE
        #: In PROBE: an append is outstanding, wait for a reply or a heartbeat response.
        self.msg_app_flow_paused = False
        #: In SNAPSHOT: the index of the snapshot being sent.
        self.pending_snapshot = 0
        #: Heard from within the current election timeout (for CheckQuorum).
        self.recent_active = False
        self.inflights = inflights
        self.is_learner = is_learner

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next_index = max(self.match_index + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next_index = self.match_index + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next_index = self.match_index + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, size_bytes: int) -> None:
        """Bookkeeping after sending an append with `count` entries."""
        if self.state == ProgressState.REPLICATE:
            if count:
                last = self.next_index + count - 1
                self.next_index = last + 1
                self.inflights.add(last, size_bytes)
        elif self.state == ProgressState.PROBE:
            # One probe at a time: wait for its answer (or the next heartbeat response).
            self.msg_app_flow_paused = True

    def maybe_update(self, index: int) -> bool:
        """An ack for `index` arrived; returns True if match_index moved."""
        updated = False
        if self.match_index < index:
            self.match_index = index
            updated = True
            self.msg_app_flow_paused = False
        if self.next_index < index + 1:
            self.next_index = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append after `rejected`; returns False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False  # stale: we already know a later match
            self.next_index = self.match_index + 1
            return True
        if self.next_index - 1 != rejected:
            return False  # not the probe we are waiting for
        self.next_index = max(min(rejected, match_hint + 1), self.match_index + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.msg_app_flow_paused
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        s = f"{self.state.name} match={self.match_index} next={self.next_index}"
        if self.is_learner:
            s += " learner"
        if self.state == ProgressState.SNAPSHOT:
            s += f" pending_snap={self.pending_snapshot}"
        if self.msg_app_flow_paused:
            s += " paused"
        if self.inflights.count():
            s += f" inflight={self.inflights.count()}"
        return s
