"""Wakes WaitForStopOrders long-polls when a run one of them watches changes.

A waiter watches the runs its worker reported executing. A committed change to one of them that
may stop its holder (`domain.workers.may_stop_holder`: a cancel, a final state, a new attempt,
a reassignment) wakes every waiter watching that run; the waiter then reads the runs again and
answers with the stop orders, if any (the tables decide, the signal only wakes). A waiter is
registered before its first read, so a change committed between that read and the wait is
never lost. Changes on other replicas come in through streams/pg_wakeup.py (the notification's
`x` runs, and its periodic catch-up for a lost notification).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from gyoza_grpc.domain.model import Event, Run, TopicEvent
from gyoza_grpc.domain.workers import HeldAttempt, may_stop_holder


class StopWaiter:
    """One long-poll: the worker, the attempts it runs, and its wake-up."""

    def __init__(self, worker_id: str, running: Sequence[HeldAttempt]) -> None:
        self.worker_id = worker_id
        self.running = tuple(running)
        self.run_ids = frozenset(h.run_id for h in running)
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    def clear(self) -> None:
        """Forget earlier wake-ups: called right before the waiter reads the runs."""
        self._woken.clear()

    async def wait(self, timeout_s: float) -> bool:
        """True when woken (since the last `clear`), False after `timeout_s`."""
        if timeout_s <= 0:
            return self._woken.is_set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._woken.wait()
        except TimeoutError:
            return False
        return True


class StopSignal:
    def __init__(self) -> None:
        self._by_run: dict[str, set[StopWaiter]] = {}
        self._waiters: set[StopWaiter] = set()
        self.closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def waiters(self) -> list[StopWaiter]:
        return list(self._waiters)

    @contextmanager
    def watch(self, worker_id: str, running: Sequence[HeldAttempt]) -> Iterator[StopWaiter]:
        """A waiter for these attempts for the block, woken by changes to their runs."""
        waiter = StopWaiter(worker_id, running)
        self._waiters.add(waiter)
        for run_id in waiter.run_ids:
            self._by_run.setdefault(run_id, set()).add(waiter)
        if self.closed:
            waiter.wake()
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)
            for run_id in waiter.run_ids:
                found = self._by_run.get(run_id)
                if found is not None:
                    found.discard(waiter)
                    if not found:
                        del self._by_run[run_id]

    def touched(self, run_ids: Iterable[str]) -> None:
        """These runs changed in a way that may stop their holders: wake their waiters."""
        for run_id in run_ids:
            for waiter in self._by_run.get(run_id, ()):
                waiter.wake()

    def wake_all(self) -> None:
        for waiter in self._waiters:
            waiter.wake()

    def close(self) -> None:
        """Shutdown: every waiter answers now (with what it finds)."""
        self.closed = True
        self.wake_all()

    # Store listener ----------------------------------------------------------------------

    def on_events(self, run: Run, events: Sequence[Event], published: Sequence[TopicEvent]) -> None:
        if run.id in self._by_run and may_stop_holder(events):
            self.touched((run.id,))
