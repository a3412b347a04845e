"""Configuration of one Raft node. Time is counted in ticks; the driver decides what a tick is.

Randomness (the election jitter) comes in as a `random.Random` so a seed replays a run exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


class Logger(Protocol):
    """What the core logs through; `logging.Logger` fits, and so does a test recorder."""

    def debug(self, msg: str, /) -> None: ...

    def info(self, msg: str, /) -> None: ...

    def warning(self, msg: str, /) -> None: ...


@dataclass(slots=True)
class Config:
    """Per-node settings. `validate()` is called by RawNode; invalid values raise ValueError."""

    node_id: int
    #: A follower that hears nothing for a random time in [election_ticks, 2*election_ticks)
    #: campaigns; a leader checks its quorum every election_ticks.
    election_ticks: int = 10
    #: The leader sends heartbeats every heartbeat_ticks. Must be < election_ticks.
    heartbeat_ticks: int = 1
    #: Most append messages in flight to one follower in the replicate state.
    inflight_msgs_max: int = 256
    #: Most payload bytes in flight to one follower (0 = no byte limit beyond the count).
    inflight_bytes_max: int = 0
    #: Most payload bytes in one append message (at least one entry is always sent).
    msg_bytes_max: int = 1 << 20
    #: Most payload bytes of proposed but uncommitted entries at the leader (0 = unlimited).
    uncommitted_bytes_max: int = 0
    #: Most payload bytes of committed entries handed out in one Ready.
    apply_bytes_max: int = 64 << 20
    #: Run a pre-election first so a node that was partitioned away cannot bump the term (§9.6).
    pre_vote: bool = True
    #: A leader steps down when it has not heard from a quorum for election_ticks; followers
    #: that heard from a leader recently ignore vote requests (leader stickiness, §4.2.3).
    check_quorum: bool = True
    #: Source of the election jitter. Seed it for reproducible runs.
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    #: Index already applied by the state machine when the node starts (restart). If storage
    #: holds a snapshot past it, the driver must load that snapshot into the state machine
    #: first and pass its index here: entries before the log start cannot be handed out again.
    applied_index: int = 0
    logger: Logger | None = None

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ValueError("node_id must be >= 1 (0 means 'nobody')")
        if self.heartbeat_ticks <= 0:
            raise ValueError("heartbeat_ticks must be > 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        if self.inflight_msgs_max <= 0:
            raise ValueError("inflight_msgs_max must be > 0")
        if self.msg_bytes_max <= 0 or self.apply_bytes_max <= 0:
            raise ValueError("msg_bytes_max and apply_bytes_max must be > 0")
        if self.uncommitted_bytes_max < 0 or self.inflight_bytes_max < 0:
            raise ValueError("byte limits must be >= 0")
