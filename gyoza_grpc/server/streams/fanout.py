"""In-process fan-out of committed events to the watchers of each run.

The store calls `publish` after each commit. A subscriber holds a bounded buffer: when a
burst would overflow it, the buffer is dropped and the subscriber marked `overflowed`, and its
watcher catches up from the store at its own cursor. So a slow watcher never blocks a writer
or another watcher, never grows without bound, and never skips an event: the table stays the
source of truth, the fan-out is only a fast path and a wake-up.

With replicas (streams/pg_wakeup.py), events committed elsewhere come in through `offer`
(read once per key from the store, then shared) or `poke` (every subscriber of the key re-reads
at its own cursor); the fan-out remembers the last position it handed out per followed key so
a catch-up can tell which keys fell behind the tables.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from gyoza_grpc.domain.model import Event, Run, TopicEvent

DEFAULT_BUFFER = 256

# What a subscriber follows: ("run", run_id) or ("topic", name).
Key = tuple[str, str]


def run_key(run_id: str) -> Key:
    return ("run", run_id)


def topic_key(topic: str) -> Key:
    return ("topic", topic)


# A quiet-interval timer that fires this early still counts (the loop runs a timer up to its
# clock resolution early).
_TIMER_SLACK_S = 0.001


class Subscription:
    """One watcher's mailbox for one run or topic.

    The watcher waits on `wakeup`; `offer` sets it, and so does the quiet-interval timer (with
    `quiet` set) when a wait has lasted the heartbeat interval. One timer serves many waits: it
    is armed when none is pending and, when it fires early (the watcher was woken meanwhile and
    is waiting again), moves itself to the current wait's deadline, so a busy stream does not
    schedule and cancel a timer per event.
    """

    __slots__ = (
        "_deadline",
        "_loop",
        "_timer",
        "_waiting",
        "buffer",
        "closed",
        "key",
        "limit",
        "overflowed",
        "position",
        "quiet",
        "wakeup",
    )

    def __init__(self, key: Key, limit: int, position: int) -> None:
        self.key = key
        self.limit = limit
        # The last seq (or cursor) its watcher delivered; kept up to date by the watcher.
        self.position = position
        self.buffer: deque[Any] = deque()
        self.overflowed = False
        self.closed = False
        self.quiet = False
        self.wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._waiting = False

    def offer(self, events: Sequence[Any]) -> None:
        if not self.overflowed:
            if len(self.buffer) + len(events) > self.limit:
                self.buffer.clear()
                self.overflowed = True
            else:
                self.buffer.extend(events)
        self.wakeup.set()

    def poke(self) -> None:
        """Something may have been committed that was not offered: re-read the store."""
        self.buffer.clear()
        self.overflowed = True
        self.wakeup.set()

    def take(self) -> tuple[list[Any], bool]:
        """The buffered events and whether some were dropped (then re-read the store)."""
        items, overflowed = list(self.buffer), self.overflowed
        self.buffer.clear()
        self.overflowed = False
        self.quiet = False
        self._waiting = False
        self.wakeup.clear()
        return items, overflowed

    def start_quiet_timer(self, interval_s: float) -> None:
        """The watcher is about to wait: wake it with `quiet` set after `interval_s`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._deadline = loop.time() + interval_s
        self._waiting = True
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._waiting or self.wakeup.is_set():
            return  # not waiting: the next wait arms a timer of its own
        assert self._loop is not None
        if self._loop.time() + _TIMER_SLACK_S >= self._deadline:
            self.quiet = True
            self.wakeup.set()
        else:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class FanOut:
    def __init__(self, *, buffer_limit: int = DEFAULT_BUFFER) -> None:
        self._buffer_limit = buffer_limit
        self._subs: dict[Key, set[Subscription]] = {}
        # The highest position offered per key that has subscribers.
        self._last: dict[Key, int] = {}
        self._closed = False

    @property
    def buffer_limit(self) -> int:
        return self._buffer_limit

    @property
    def closed(self) -> bool:
        return self._closed

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def keys(self) -> list[Key]:
        """Every key with at least one subscriber."""
        return list(self._subs)

    def subscribers(self, key: Key) -> list[Subscription]:
        return list(self._subs.get(key, ()))

    def last_position(self, key: Key) -> int | None:
        """The highest position offered to `key`'s subscribers, None if none yet."""
        return self._last.get(key)

    def note_position(self, key: Key, position: int) -> None:
        """Every subscriber of `key` has been offered (or told to read) up to `position`."""
        if key in self._subs and position > self._last.get(key, position - 1):
            self._last[key] = position

    def subscribe(self, key: Key, position: int = -1) -> Subscription:
        sub = Subscription(key, self._buffer_limit, position)
        if self._closed:
            sub.closed = True
        self._subs.setdefault(key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.cancel_timer()
        subs = self._subs.get(sub.key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.key]
            self._last.pop(sub.key, None)

    def publish(self, run: Run, events: Sequence[Event], published: Sequence[TopicEvent]) -> None:
        """Called after the transaction that wrote `events` committed."""
        self.offer(run_key(run.id), events, events[-1].seq)
        if published:
            self.offer(topic_key(published[0].topic), published, published[-1].cursor)

    def offer(self, key: Key, items: Sequence[Any], last: int) -> None:
        """Hand `items` (committed, in order, ending at position `last`) to `key`'s
        subscribers."""
        subs = self._subs.get(key)
        if not subs:
            return
        for sub in subs:
            sub.offer(items)
        self.note_position(key, last)

    def poke(self, key: Key) -> None:
        """Make every subscriber of `key` re-read the store at its own cursor."""
        for sub in self._subs.get(key, ()):
            sub.poke()

    def close(self) -> None:
        """Shutdown: every watcher wakes up and ends its stream."""
        self._closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub.closed = True
                sub.wakeup.set()
