"""Group commit: the writes that arrive close together share one SQLite transaction.

Each queued write is a synchronous `Work(conn)` function. A batch runs them in arrival order in
one transaction, each inside its own SAVEPOINT: a write that raises is rolled back to its
savepoint and answered with its error, while its neighbours go on. Every caller is answered
only after the batch's COMMIT (or with the COMMIT's error: then none of them was written).

Why a time window and not "whatever queued during one turn of the loop": grpc.aio accepts one
call per turn, so a per-turn batch holds about one write (docs/benchmarks.md). A batch is sent
once no write has joined it for `quiet_s`, or `max_wait_s` after its first write, or when it
holds `max_batch`. Meanwhile the loop goes on accepting calls, whose writes join. A window that
caught no other write makes the next batches go at once (1, 2, 4... up to 64 of them): a lone
caller writing in a loop, whose next write cannot come before this one is answered, seldom
waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_MAX_SKIP = 64


@dataclass(slots=True)
class Queued(Generic[T]):
    """One write waiting for its batch, and the future its caller awaits."""

    work: Callable[[Any], T]
    future: asyncio.Future[T]


# Runs one batch in one transaction and answers each queued future (see RunStore).
CommitBatch = Callable[[Sequence[Queued[Any]]], Awaitable[None]]


class GroupCommit:
    """Queues writes and hands them to `commit_batch`, at most `max_batch` at a time, one batch
    after another, under `lock` (the store's writer lock, which the other writers take too)."""

    def __init__(
        self,
        commit_batch: CommitBatch,
        lock: asyncio.Lock,
        *,
        quiet_s: float = 0.0005,
        max_wait_s: float = 0.002,
        max_batch: int = 64,
    ) -> None:
        self._commit_batch = commit_batch
        self._lock = lock
        self._quiet_s = quiet_s
        self._max_wait_s = max_wait_s
        self._deadline = 0.0
        self._max_batch = max_batch
        self._pending: list[Queued[Any]] = []
        self._timer: asyncio.Handle | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._last_arrival = float("-inf")
        # After a window that caught nothing: how many batches go without waiting, and the
        # count left.
        self._skip = 0
        self._skips_left = 0
        self._windowed = False
        # Batches and writes since the start, for tests and diagnostics.
        self.batches = 0
        self.writes = 0

    async def submit(self, work: Callable[[Any], T]) -> T:
        """Queue `work`; returns its result once its batch has committed, or raises its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(Queued(work, future))
        now = self._last_arrival = loop.time()
        if len(self._pending) >= self._max_batch:
            self._start()
        elif self._timer is None and self._drain_task is None:
            if self._skips_left:
                self._skips_left -= 1
                self._timer = loop.call_soon(self._start)
            else:
                self._windowed = True
                self._deadline = now + self._max_wait_s
                self._timer = loop.call_at(now + self._quiet_s, self._check)
        return await future

    def _check(self) -> None:
        """Send the batch once no write has come for quiet_s, or max_wait_s after its first."""
        self._timer = None
        wake = min(self._last_arrival + self._quiet_s, self._deadline)
        loop = asyncio.get_running_loop()
        if wake > loop.time():
            self._timer = loop.call_at(wake, self._check)
        else:
            self._start()

    def _start(self) -> None:
        if self._windowed:
            self._windowed = False
            if len(self._pending) > 1:
                self._skip = 0
            else:  # waited for nothing: wait less often
                self._skip = min(max(1, 2 * self._skip), _MAX_SKIP)
                self._skips_left = self._skip
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drain_task is None:
            # A running drain takes whatever is pending when it next holds the lock.
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        batch: list[Queued[Any]] = []
        try:
            while self._pending:
                async with self._lock:
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    self.batches += 1
                    self.writes += len(batch)
                    await self._commit_batch(batch)
                    batch = []
        except BaseException as err:
            # Only an error that escaped commit_batch (which answers every future itself).
            for q in batch:
                if not q.future.done():
                    q.future.set_exception(RuntimeError("the write batch was interrupted"))
            if self._pending and not isinstance(err, asyncio.CancelledError):
                self._timer = asyncio.get_running_loop().call_soon(self._start)
            raise
        finally:
            self._drain_task = None
