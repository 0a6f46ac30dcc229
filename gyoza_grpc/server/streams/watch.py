"""The watch loops behind WatchEvents and WatchTopic: replay, then live, never a gap or a
duplicate.

Order matters: subscribe to the fan-out first, then read the backlog from the store, then
deliver live items, skipping any position already sent. A live batch that does not start
right after the cursor (an overflow, or commits published out of order) is replaced by a read
of the store at the cursor: the store is the truth, the fan-out only a fast path.

A run's stream ends after an event that leaves the run terminal: an event in a terminal state
with nothing after it (a FAILED followed by its automatic RETRIED goes on). A topic's stream
never ends by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import Unavailable
from gyoza_grpc.domain.model import Event, TopicEvent
from gyoza_grpc.server.config import DEFAULT_HEARTBEAT_S
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.streams.fanout import FanOut, Subscription, run_key, topic_key
from gyoza_grpc.server.streams.memo import Memo

_READ_CHUNK = 1000
# The watchers of a run that reach its terminal event within this many seconds of each other
# share one read of what follows it.
_FINAL_READ_REUSE_S = 1.0

T = TypeVar("T", Event, TopicEvent)
# Awaited when a watch is accepted (the API layer sends the stream's response headers then).
Accepted = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent after a quiet interval; `position` is the last seq (or cursor) delivered."""

    position: int
    server_time: datetime


@dataclass(frozen=True, slots=True)
class _Feed(Generic[T]):
    """How to follow one kind of stream."""

    read_after: Callable[[int, int], Awaitable[tuple[list[T], bool]]]
    position: Callable[[T], int]
    is_final: Callable[[T], bool]
    # What the store holds after a final item (None: a read of this watcher's own).
    after_final: Callable[[int], Awaitable[list[T]]] | None = None


def _seq(e: Event) -> int:
    return e.seq


def _cursor(e: TopicEvent) -> int:
    return e.cursor


def _leaves_run_terminal(e: Event) -> bool:
    return e.state.is_terminal


def _never(_: TopicEvent) -> bool:
    return False


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A shared read whose waiters all left still has its outcome collected."""
    if not task.cancelled():
        task.exception()


def _wire_size(message: Any) -> int:
    size = getattr(message, "ByteSize", None)
    return int(size()) if size is not None else 0


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
        # The wire message of each delivered item, built once for all of its watchers by the
        # API layer (keys: ("run", run_id, seq) and ("topic", topic, cursor)).
        self.wire: Memo[tuple[str, str, int], Any] = Memo(size=_wire_size)
        self._final_reads: dict[tuple[str, int], tuple[float, asyncio.Task[list[Event]]]] = {}

    async def watch(
        self, run_id: str, after: int | None, *, accepted: Accepted = _nothing
    ) -> AsyncIterator[Event | Heartbeat]:
        """A run's events after `after` (all when None), live until the run ends.
        `accepted` is awaited once the watch is subscribed and the run found: from then on
        every event added to the run reaches this stream."""
        cursor = -1 if after is None else max(after, -1)

        async def read(cur: int, limit: int) -> tuple[list[Event], bool]:
            return await self._store.list_events(run_id, after=cur, attempt=0, limit=limit)

        async def after_final(cur: int) -> list[Event]:
            return await self._after_final(run_id, feed, cur)

        feed = _Feed(read, _seq, _leaves_run_terminal, after_final)
        sub = self._fanout.subscribe(run_key(run_id), cursor)
        try:
            run, _ = await self._store.get_run(run_id)  # NOT_FOUND before anything is sent
            await accepted()
            backlog = await self._read_all(feed, cursor)
            if not backlog and run.is_terminal and run.last_seq <= cursor:
                return
            async for item in self._follow(feed, sub, cursor, backlog):
                yield item
        finally:
            self._fanout.unsubscribe(sub)

    async def watch_topic(
        self, topic: str, after: int | None, *, accepted: Accepted = _nothing
    ) -> AsyncIterator[TopicEvent | Heartbeat]:
        """A topic's events after cursor `after` (all when None), live until cancelled;
        `accepted` is awaited once the watch is subscribed."""
        cursor = 0 if after is None else max(after, 0)

        async def read(cur: int, limit: int) -> tuple[list[TopicEvent], bool]:
            return await self._store.list_topic_events(topic, after=cur, limit=limit)

        feed = _Feed(read, _cursor, _never)
        sub = self._fanout.subscribe(topic_key(topic), cursor)
        try:
            await accepted()
            backlog = await self._read_all(feed, cursor)
            async for item in self._follow(feed, sub, cursor, backlog):
                yield item
        finally:
            self._fanout.unsubscribe(sub)

    async def _after_final(self, run_id: str, feed: _Feed[Event], cursor: int) -> list[Event]:
        """What the store holds after a run's terminal event at `cursor`: normally nothing (an
        automatic retry commits, and is published, with the failure it follows). All watchers
        of a run reach that event together, so they share one read, started at most
        _FINAL_READ_REUSE_S earlier, instead of one read each."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        key = (run_id, cursor)
        shared = self._final_reads.get(key)
        if shared is None or now - shared[0] > _FINAL_READ_REUSE_S:
            for k, (started, _) in list(self._final_reads.items()):
                if now - started > _FINAL_READ_REUSE_S:
                    del self._final_reads[k]
            task = loop.create_task(self._read_all(feed, cursor))
            task.add_done_callback(_retrieve)
            shared = self._final_reads[key] = (now, task)
        # Shielded: a watcher that goes away does not cancel the read of the others. The list
        # is shared, never modified.
        return await asyncio.shield(shared[1])

    async def _read_all(self, feed: _Feed[T], cursor: int) -> list[T]:
        out: list[T] = []
        while True:
            found, has_more = await feed.read_after(cursor, _READ_CHUNK)
            out.extend(found)
            if not has_more or not found:
                return out
            cursor = feed.position(found[-1])

    async def _follow(
        self, feed: _Feed[T], sub: Subscription, cursor: int, pending: list[T]
    ) -> AsyncIterator[T | Heartbeat]:
        while True:
            last: T | None = None
            hole = False
            for item in pending:
                pos = feed.position(item)
                if pos <= cursor:
                    continue  # already sent (published while the backlog was read)
                if pos != cursor + 1:
                    hole = True
                    break
                cursor = sub.position = pos
                last = item
                yield item
            if hole:
                pending = await self._read_all(feed, cursor)
                continue
            if last is not None and feed.is_final(last):
                # Final unless something (an automatic retry) came right after it.
                if feed.after_final is not None:
                    pending = await feed.after_final(cursor)
                else:
                    pending = await self._read_all(feed, cursor)
                if not pending:
                    return
                continue
            batch = await self._next_batch(sub, cursor)
            if batch is None:
                yield Heartbeat(position=cursor, server_time=self._clock())
                pending = []
            elif batch.overflowed:
                pending = await self._read_all(feed, cursor)
            else:
                pending = batch.items

    async def _next_batch(self, sub: Subscription, cursor: int) -> _Batch | None:
        """Live items after a wake-up; None when the quiet interval passed first."""
        if not sub.wakeup.is_set():
            sub.start_quiet_timer(self._heartbeat_s)
            await sub.wakeup.wait()
        if sub.closed:
            raise Unavailable(
                f"server is shutting down; resume with after={cursor}",
                metadata={"after": str(cursor)},
            )
        quiet = sub.quiet
        items, overflowed = sub.take()
        if quiet and not items and not overflowed:
            return None
        return _Batch(items, overflowed)


@dataclass(frozen=True, slots=True)
class _Batch:
    items: list[Any]
    overflowed: bool
