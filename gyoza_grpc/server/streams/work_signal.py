"""Wakes long-polling ClaimRuns calls when work may have become claimable.

One new claimable run wakes one waiting worker, not all of them (16 waiters woken for every
run cost a claim transaction each, one after another on SQLite). A woken worker that claims
nothing passes the wake-up on to the next waiter, at most once around the queue, so a run that
fits only some workers still reaches one of them. Freed capacity (a heartbeat, a run that
ends) wakes only the worker it belongs to. A waiter remembers the version it claimed at: a
notify between its claim and its wait is never lost. Wake-ups from other replicas come in
through streams/pg_wakeup.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gyoza_grpc.domain.model import Event, Run, TopicEvent
from gyoza_grpc.server.store.wakeups import claim_wakeup


@dataclass(slots=True)
class _Waiter:
    worker_id: str
    # Resolves to the number of further waiters a fruitless wake-up may be passed to.
    woken: asyncio.Future[int]


class WorkSignal:
    def __init__(self) -> None:
        self._version = 0
        self._queue: deque[_Waiter] = deque()
        self.closed = False

    @property
    def version(self) -> int:
        return self._version

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def notify_one(self) -> None:
        """A run became claimable: wake the longest-waiting worker."""
        self._version += 1
        self._wake_next(hops=len(self._queue))

    def wake_one(self) -> None:
        """Wake the longest-waiting worker, not passed on if it claims nothing (a periodic
        check that costs one claim per round; the queue rotates, so each round tries
        another waiter)."""
        self._version += 1
        self._wake_next(hops=1)

    def notify_worker(self, worker_id: str) -> None:
        """`worker_id`'s free capacity changed: wake its own waiters only."""
        self._version += 1
        for w in self._queue:
            if w.worker_id == worker_id and not w.woken.done():
                w.woken.set_result(0)

    def pass_on(self, hops: int) -> None:
        """A woken waiter claimed nothing: give the wake-up to the next one."""
        if hops > 1:
            self._wake_next(hops - 1)

    def _wake_next(self, hops: int) -> None:
        while self._queue:
            w = self._queue.popleft()
            if not w.woken.done():
                w.woken.set_result(hops)
                return

    def close(self) -> None:
        self.closed = True
        self._version += 1
        for w in self._queue:
            if not w.woken.done():
                w.woken.set_result(0)
        self._queue.clear()

    async def wait(self, worker_id: str, version: int, timeout_s: float) -> int | None:
        """Wait for a wake-up newer than `version`: the hops it may be passed on (0 when
        it came for this worker or arrived before the wait), or None after `timeout_s`."""
        if self._version != version or self.closed:
            return 0
        if timeout_s <= 0:
            return None
        waiter = _Waiter(worker_id, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter.woken
        except TimeoutError:
            return None
        finally:
            if not waiter.woken.done():
                waiter.woken.cancel()
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)

    # Store listeners -------------------------------------------------------------------

    def on_created(self, run: Run) -> None:
        self.notify_one()

    def on_events(self, run: Run, events: Sequence[Event], published: Sequence[TopicEvent]) -> None:
        claimable, worker = claim_wakeup(run, events)
        if claimable:
            self.notify_one()
        elif worker:
            self.notify_worker(worker)
