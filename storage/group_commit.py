"""GroupCommitter: one fsync covers every append that is ready when it starts.

The broker appends on its event loop thread and calls `request_sync()`, which returns a
concurrent.futures.Future resolving to the log's flushed index once an fsync covering
everything written before the call has completed (wrap it with asyncio.wrap_future).
At most one sync per log is in flight; requests arriving meanwhile wait for the next
one, so N concurrent appenders cost about one fsync per fsync-duration, not N.

fsync runs on an executor thread (a shared ThreadPoolExecutor may serve many logs),
never on the caller's thread.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from storage.config import FsyncPolicy
from storage.errors import LogClosedError
from storage.log import PartitionLog


class GroupCommitter:
    """Batches sync requests of one PartitionLog onto an executor thread.

    Invariant: at most one `_run` loop per committer is active; every future handed out
    is resolved (with the flushed index or the sync's exception) by that loop or by
    `close()`.
    """

    def __init__(self, log: PartitionLog, executor: Executor | None = None) -> None:
        self.log = log
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="raftka-fsync")
        self._lock = threading.Lock()
        self._waiting: list[Future[int]] = []
        self._running = False
        self._closed = False
        self.sync_count = 0

    @property
    def appended_index(self) -> int:
        return self.log.appended_index

    @property
    def written_index(self) -> int:
        return self.log.written_index

    @property
    def flushed_index(self) -> int:
        return self.log.flushed_index

    def request_sync(self) -> Future[int]:
        """A future of the flushed index, covering every entry written before this call."""
        future: Future[int] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(LogClosedError(self.log.directory))
                return future
            if self.log.config.fsync_policy is FsyncPolicy.NEVER:
                future.set_result(self.log.sync())
                return future
            flushed_index = self.log.flushed_index
            if not self._running and flushed_index >= self.log.written_index:
                future.set_result(flushed_index)  # nothing new since the last fsync
                return future
            self._waiting.append(future)
            if not self._running:
                self._running = True
                self._executor.submit(self._run)
        return future

    def _run(self) -> None:
        """Sync until no request is waiting; each round serves everyone who asked before it."""
        while True:
            with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._running = False
                    return
            try:
                flushed_index = self.log.sync()
            except BaseException as error:
                for future in batch:
                    future.set_exception(error)
                continue
            self.sync_count += 1
            for future in batch:
                future.set_result(flushed_index)

    def close(self) -> None:
        """Stop accepting requests; pending ones still complete. Shuts an owned executor."""
        with self._lock:
            self._closed = True
        if self._owns_executor:
            self._executor.shutdown(wait=True)
