"""The runs feed behind WatchRuns: every run this server creates or changes, handed to the
watchers whose filter it matches, as the run right after the change.

Unlike a run's timeline, the feed has no cursor to replay from: runs change in no global order
(PostgreSQL commits out of sequence order), so a watcher lists the runs after subscribing and
then takes changes. A watcher keeps only the newest copy of each run it has not yet sent
(newest by last_seq, then updated_at), so a run changing fast while the watcher is slow costs
one slot, not one per event. A watcher that falls behind by more runs than its buffer holds,
or that may have missed changes for another reason (the replicas' wake-ups were lost for a
while: streams/run_feed_replicas.py), gets a resync instead, and lists again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import Unavailable
from gyoza_grpc.domain.model import Run

DEFAULT_BUFFER = 1024


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What a watcher follows: properties a run never changes, so a run either always or
    never matches (its state is no filter: a watcher must see a run leave a state)."""

    op_definition: str = ""
    image: str = ""
    topic: str = ""

    def matches(self, run: Run) -> bool:
        return (
            (not self.op_definition or run.op_definition == self.op_definition)
            and (not self.image or run.image == self.image)
            and (not self.topic or run.event_delivery.topic == self.topic)
        )


def _newer(a: Run, b: Run) -> bool:
    """Whether copy `a` of a run is newer than copy `b`."""
    return (a.last_seq, a.updated_at) > (b.last_seq, b.updated_at)


@dataclass(frozen=True, slots=True)
class Resync:
    """The watcher may have missed changes: list the runs again."""

    reason: str


class RunWatch:
    """One watcher's mailbox: the newest copy of each run not yet sent, or a resync."""

    __slots__ = ("closed", "filter", "limit", "pending", "resync", "wakeup")

    def __init__(self, run_filter: RunFilter, limit: int) -> None:
        self.filter = run_filter
        self.limit = limit
        self.pending: dict[str, Run] = {}
        self.resync: Resync | None = None
        self.closed = False
        self.wakeup = asyncio.Event()

    def offer(self, run: Run) -> None:
        if self.resync is not None or not self.filter.matches(run):
            return
        held = self.pending.get(run.id)
        if held is not None:
            if _newer(run, held):
                self.pending[run.id] = run
            return
        if len(self.pending) >= self.limit:
            self.lose(f"this watcher fell behind by more than {self.limit} runs")
            return
        self.pending[run.id] = run
        self.wakeup.set()

    def lose(self, reason: str) -> None:
        """Changes may have been missed: drop what is held; the watcher is told to resync."""
        self.pending.clear()
        if self.resync is None:
            self.resync = Resync(reason)
        self.wakeup.set()

    def take(self) -> list[Run | Resync]:
        """What to send now: a resync alone, or the runs held, in the order they came."""
        self.wakeup.clear()
        if self.resync is not None:
            out: list[Run | Resync] = [self.resync]
            self.resync = None
            return out
        runs: list[Run | Resync] = list(self.pending.values())
        self.pending.clear()
        return runs


class RunFeed:
    def __init__(self, *, buffer_limit: int = DEFAULT_BUFFER) -> None:
        self._buffer_limit = buffer_limit
        self._watches: set[RunWatch] = set()
        self._closed = False

    @property
    def watching(self) -> bool:
        return bool(self._watches)

    @property
    def closed(self) -> bool:
        return self._closed

    def watcher_count(self) -> int:
        return len(self._watches)

    def subscribe(self, run_filter: RunFilter) -> RunWatch:
        watch = RunWatch(run_filter, self._buffer_limit)
        if self._closed:
            watch.closed = True
            watch.wakeup.set()
        self._watches.add(watch)
        return watch

    def unsubscribe(self, watch: RunWatch) -> None:
        self._watches.discard(watch)

    def publish(self, run: Run) -> None:
        """`run` as a committed change (a create, events, an edit) left it."""
        for watch in self._watches:
            watch.offer(run)

    def lose_all(self, reason: str) -> None:
        """Every watcher may have missed changes (wake-ups from other replicas were lost)."""
        for watch in self._watches:
            watch.lose(reason)

    def close(self) -> None:
        """Shutdown: every watcher wakes up and ends its stream."""
        self._closed = True
        for watch in self._watches:
            watch.closed = True
            watch.wakeup.set()


@dataclass(frozen=True, slots=True)
class Quiet:
    """Nothing happened for a heartbeat interval."""

    server_time: datetime


async def follow(
    feed: RunFeed, watch: RunWatch, *, heartbeat_s: float, clock: Clock = utc_now
) -> AsyncIterator[Run | Resync | Quiet]:
    """What `watch` (subscribed by the caller, so that it can say so before the first item)
    receives, until the feed closes; unsubscribes however it ends."""
    try:
        while True:
            if not watch.wakeup.is_set():
                try:
                    async with asyncio.timeout(heartbeat_s):
                        await watch.wakeup.wait()
                except TimeoutError:
                    yield Quiet(clock())
                    continue
            if watch.closed:
                raise Unavailable("server is shutting down; watch anew, then list the runs again")
            for item in watch.take():
                yield item
    finally:
        feed.unsubscribe(watch)
