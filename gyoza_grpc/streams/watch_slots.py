"""A cap on the watch streams (WatchEvents and WatchTopic together) open on one server.

grpc's `maximum_concurrent_rpcs` counts every call, unary ones included, and answers
RESOURCE_EXHAUSTED without a word of why; watchers are the calls that stay open, so they get
their own counter. A stream takes a slot before it reads anything and gives it back however it
ends: the handler's `finally` (completion, an error, cancellation at an await) and the call's
done callback (cancellation while grpc holds the stream at a `yield`) both release it, and a
slot is released once only.
"""

from __future__ import annotations

from gyoza_grpc.domain.errors import ResourceExhausted


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
