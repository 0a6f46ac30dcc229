"""The watch loop behind WatchEvents: replay, then live, never a gap or a duplicate.

Order matters: subscribe to the fan-out first, then read the backlog from the store, then
deliver live events, skipping any seq already sent. A live batch that does not start right
after the cursor (an overflow, or commits published out of order) is replaced by a read of
the store at the cursor. The stream ends after an event that leaves the run terminal (an
event in a terminal state with no event after it: a FAILED followed by its automatic
RETRIED goes on).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import Unavailable
from gyoza_grpc.domain.model import Event
from gyoza_grpc.store.run_store import RunStore
from gyoza_grpc.streams.fanout import FanOut, Subscription

DEFAULT_HEARTBEAT_S = 15.0
_READ_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Heartbeat:
    last_seq: int
    server_time: datetime


class EventWatcher:
    def __init__(
        self,
        store: RunStore,
        fanout: FanOut,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._fanout = fanout
        self._heartbeat_s = heartbeat_s
        self._clock = clock

    async def _read_after(self, run_id: str, cursor: int) -> list[Event]:
        out: list[Event] = []
        while True:
            found, has_more = await self._store.list_events(
                run_id, after=cursor, attempt=0, limit=_READ_CHUNK
            )
            out.extend(found)
            if not has_more:
                return out
            cursor = found[-1].seq

    async def watch(self, run_id: str, after: int | None) -> AsyncIterator[Event | Heartbeat]:
        sub = self._fanout.subscribe(run_id)
        try:
            async for item in self._watch(sub, run_id, -1 if after is None else max(after, -1)):
                yield item
        finally:
            self._fanout.unsubscribe(sub)

    async def _watch(
        self, sub: Subscription, run_id: str, cursor: int
    ) -> AsyncIterator[Event | Heartbeat]:
        run, _ = await self._store.get_run(run_id)
        pending = await self._read_after(run_id, cursor)
        if not pending and run.is_terminal and run.last_seq <= cursor:
            return
        while True:
            last: Event | None = None
            hole = False
            for event in pending:
                if event.seq <= cursor:
                    continue  # already sent (published while the backlog was read)
                if event.seq != cursor + 1:
                    hole = True
                    break
                cursor = event.seq
                last = event
                yield event
            if hole:
                pending = await self._read_after(run_id, cursor)
                continue
            if last is not None and last.state.is_terminal:
                # Terminal unless something (an automatic retry) came after it.
                pending = await self._read_after(run_id, cursor)
                if not pending:
                    return
                continue
            batch = await self._next_batch(sub, cursor)
            if batch is None:
                yield Heartbeat(last_seq=cursor, server_time=self._clock())
                pending = []
            else:
                pending = batch

    async def _next_batch(self, sub: Subscription, cursor: int) -> list[Event] | None:
        """Live events after a wake-up; None when the quiet interval passed first."""
        if not sub.wakeup.is_set():
            try:
                async with asyncio.timeout(self._heartbeat_s):
                    await sub.wakeup.wait()
            except TimeoutError:
                if sub.closed:
                    raise Unavailable("server is shutting down; resume with after") from None
                return None
        if sub.closed:
            raise Unavailable(
                f"server is shutting down; resume with after={cursor}",
                metadata={"after": str(cursor)},
            )
        events, overflowed = sub.take()
        if overflowed:
            return await self._read_after(sub.key, cursor)
        return events
