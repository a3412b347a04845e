"""The metadata group's state machine (Raft group 0) and the way records get proposed to it.

Every node hosts group 0 over the configured voters and applies its committed records to
the `MetadataImage` (see metadata_image.py); its leader is the controller. Any node can
*propose* a record: the controller appends it directly, any other node forwards it to
the controller over the peer transport's control channel. A record carries a request id
(node id, sequence); when any node applies a record whose request id is its own, it
resolves the caller's future with the apply-time result. So the answer a client gets is
the verdict of the replicated state machine itself, whichever node it asked, and a
forwarded proposal that is lost (leader change) is simply retried with the same id: the
first application wins, later copies are no-ops for the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from broker.metadata_image import ApplyResult, MetadataImage, apply_record
from broker.raft_driver import RaftDriver, RaftGroup
from client.protocol.errors import ErrorCode
from raft.errors import ProposalDropped
from raft.types import Entry, EntryKind, Snapshot, SoftState

log = logging.getLogger("raftka.controller")

#: Group id of the peer transport's control channel (forwarded proposals, leader gossip).
CONTROL_GROUP_ID = -1
#: How long one attempt waits before the proposal is sent again (with the same id).
PROPOSAL_RETRY_S = 1.0


class MetadataController:
    """Applies group 0 and proposes to it; see the module docstring."""

    def __init__(
        self,
        node_id: int,
        driver: RaftDriver,
        send_control: Callable[[int, list[Any]], None],
        on_image: Callable[[MetadataImage], None],
        on_leader: Callable[[int], None],
    ) -> None:
        self.node_id = node_id
        self.driver = driver
        self.send_control = send_control
        self.on_image = on_image
        self.on_leader = on_leader
        self.image = MetadataImage()
        self.group: RaftGroup | None = None
        self.leader_id = 0
        self._seq = 0
        self._pending: dict[tuple[int, int], asyncio.Future[ApplyResult]] = {}

    @property
    def is_leader(self) -> bool:
        return self.group is not None and self.group.is_leader

    # -- StateMachine ---------------------------------------------------------------------
    def on_soft_state(self, soft: SoftState, term: int) -> None:
        self.leader_id = soft.leader_id
        self.on_leader(soft.leader_id)

    def apply(self, entries: list[Entry]) -> None:
        image = self.image
        for entry in entries:
            if entry.kind != EntryKind.DATA or not entry.data:
                continue
            try:
                record = msgpack.unpackb(entry.data, raw=False)
            except (ValueError, msgpack.UnpackException) as error:
                log.error("undecodable metadata record at index %d: %s", entry.index, error)
                continue
            if not isinstance(record, dict):
                continue
            request_id = record.pop("req", None)
            image, result = apply_record(image, entry.index, record)
            if (
                isinstance(request_id, list)
                and len(request_id) == 2
                and request_id[0] == self.node_id
            ):
                future = self._pending.pop((request_id[0], request_id[1]), None)
                if future is not None and not future.done():
                    future.set_result(result)
        if image is not self.image:
            self.image = image
            self.on_image(image)

    def apply_snapshot(self, snapshot: Snapshot, state: bytes) -> None:
        # Group 0 is not compacted yet, so no snapshot is ever sent for it.
        log.warning("ignoring a snapshot of the metadata group at index %d", snapshot.meta.index)

    # -- proposing ------------------------------------------------------------------------
    async def propose(self, record: dict[str, Any], timeout_s: float) -> ApplyResult:
        """Get `record` applied by the metadata group; returns the apply-time result."""
        self._seq += 1
        request_id = (self.node_id, self._seq)
        data = msgpack.packb({**record, "req": list(request_id)}, use_bin_type=True)
        future: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                await self._send_once(data)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    return await asyncio.wait_for(
                        asyncio.shield(future), min(PROPOSAL_RETRY_S, remaining)
                    )
                except TimeoutError:
                    continue
        finally:
            self._pending.pop(request_id, None)
        return ApplyResult(
            ErrorCode.REQUEST_TIMED_OUT, "the metadata change was not applied in time"
        )

    async def _send_once(self, data: bytes) -> None:
        proposed = await self._propose_if_leader(data)
        if not proposed and self.leader_id and self.leader_id != self.node_id:
            self.send_control(self.leader_id, ["fwd", data])

    async def on_forwarded(self, data: bytes) -> None:
        """A peer's proposal: append it if we lead (otherwise the peer retries elsewhere)."""
        await self._propose_if_leader(bytes(data))

    async def _propose_if_leader(self, data: bytes) -> bool:
        """Append `data` to the metadata log if this node leads it; False if it does not.
        A dropped proposal counts as handled: the proposer retries on its own timer."""
        group = self.group
        if group is None or not group.is_leader:
            return False
        try:
            await self.driver.propose(group, [data])
        except ProposalDropped as error:
            log.info("metadata proposal dropped: %s", error)
        return True
