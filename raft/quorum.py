"""Quorum arithmetic: the commit index a set of voters has reached, and election results.

`JointConfig` is a pair of majority configurations (incoming, outgoing); with an empty
outgoing half it is plain majority voting. Joint consensus (§4.3) only needs the outgoing half
filled in: every caller already goes through the joint form.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed_index(voters: Collection[int], acked: Mapping[int, int]) -> int:
    """Largest index acknowledged by a majority of `voters` (unbounded if there are none)."""
    n = len(voters)
    if n == 0:
        return 1 << 63  # an empty config does not constrain a joint one
    if n == 1:
        for v in voters:
            return acked.get(v, 0)
    idx = sorted((acked.get(v, 0) for v in voters), reverse=True)
    return idx[n // 2]


def majority_vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            granted += 1
        elif got is False:
            rejected += 1
    quorum = len(voters) // 2 + 1
    if granted >= quorum:
        return VoteResult.WON
    if len(voters) - rejected >= quorum:
        return VoteResult.PENDING
    return VoteResult.LOST


class JointConfig:
    """Voters as (incoming, outgoing); outgoing is empty outside joint consensus."""

    __slots__ = ("incoming", "outgoing")

    def __init__(self, incoming: frozenset[int], outgoing: frozenset[int] = frozenset()) -> None:
        self.incoming = incoming
        self.outgoing = outgoing

    def ids(self) -> frozenset[int]:
        return self.incoming | self.outgoing

    def committed_index(self, acked: Mapping[int, int]) -> int:
        idx = majority_committed_index(self.incoming, acked)
        if self.outgoing:
            idx = min(idx, majority_committed_index(self.outgoing, acked))
        return idx

    def vote_result(self, votes: Mapping[int, bool]) -> VoteResult:
        r1 = majority_vote_result(self.incoming, votes)
        if not self.outgoing:
            return r1
        r2 = majority_vote_result(self.outgoing, votes)
        if r1 == r2:
            return r1
        if VoteResult.LOST in (r1, r2):
            return VoteResult.LOST
        return VoteResult.PENDING
