"""Wakes long-polling ClaimRuns calls when work may have become claimable.

Set after commit when a run is created, goes back to PENDING (a retry), or ends (capacity
freed). A waiter that misses nothing checks its version first, so a signal between its claim
attempt and its wait is never lost. A later issue extends the wake-up across replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gyoza_grpc.domain.model import Event, Run, RunState, TopicEvent


class WorkSignal:
    def __init__(self) -> None:
        self._version = 0
        self._event = asyncio.Event()
        self.closed = False

    @property
    def version(self) -> int:
        return self._version

    def notify(self) -> None:
        self._version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self.notify()

    async def wait(self, version: int, timeout_s: float) -> None:
        """Return after a notify newer than `version`, or after `timeout_s`."""
        if self._version != version or timeout_s <= 0:
            return
        event = self._event
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            pass

    # Store listeners -------------------------------------------------------------------

    def on_created(self, run: Run) -> None:
        self.notify()

    def on_events(self, run: Run, events: Sequence[Event], published: Sequence[TopicEvent]) -> None:
        if any(e.state is RunState.PENDING or e.state.is_terminal for e in events):
            self.notify()
