"""A cap on the watch streams (WatchEvents, WatchTopic and WatchRuns together) open on one server.

grpc's `maximum_concurrent_rpcs` counts every call, unary ones included, and answers
RESOURCE_EXHAUSTED without a word of why; watchers are the calls that stay open, so they get
their own counter. A stream takes a slot before it reads anything and gives it back however it
ends: the handler's `finally` (completion, an error, cancellation at an await) and the call's
done callback (cancellation while grpc holds the stream at a `yield`) both release it, and a
slot is released once only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from gyoza_grpc.domain.errors import ResourceExhausted


class _Call(Protocol):
    """What `held` needs of a call: grpc.aio's ServicerContext has it."""

    def add_done_callback(self, callback: Callable[[Any], None]) -> None: ...


class WatchSlot:
    """One open stream's slot; `release()` may be called any number of times."""

    __slots__ = ("_owner", "_released")

    def __init__(self, owner: WatchSlots) -> None:
        self._owner = owner
        self._released = False

    def release(self, *_: object) -> None:
        if not self._released:
            self._released = True
            self._owner._open -= 1


class WatchSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    def take(self) -> WatchSlot:
        """A slot for a new stream, or RESOURCE_EXHAUSTED when `limit` streams are open."""
        if self._open >= self.limit:
            raise ResourceExhausted(
                f"this server already has {self._open} open watch streams, the most it "
                f"allows (--max-watch-streams {self.limit}); retry later or on another replica",
                reason="TOO_MANY_WATCHERS",
                metadata={"max_watch_streams": str(self.limit)},
            )
        self._open += 1
        return WatchSlot(self)

    @contextmanager
    def held(self, call: _Call) -> Iterator[WatchSlot]:
        """`take()` a slot for the block; released when the block ends or the call does."""
        slot = self.take()
        call.add_done_callback(slot.release)
        try:
            yield slot
        finally:
            slot.release()
