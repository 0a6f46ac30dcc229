"""A small bounded memo for what every watcher of a fan-out would otherwise build again.

When one event reaches N watchers, each watch handler turns it into the same wire message.
Events are immutable once committed and (run id, seq) or (topic, cursor) names one for good,
so the handlers convert it once per server and share the result (which nothing mutates).
The memo keeps the most recently added entries, bounded by count and by approximate size, so
a burst of large payloads cannot make it grow without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
A = TypeVar("A")

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class Memo(Generic[K, V]):
    """Oldest-first eviction; `size` weighs an entry (bytes), 0 when not given."""

    __slots__ = ("_data", "_max_bytes", "_max_entries", "_size", "_total")

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        size: Callable[[V], int] | None = None,
    ) -> None:
        self._data: dict[K, tuple[V, int]] = {}
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._size = size
        self._total = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def total_bytes(self) -> int:
        return self._total

    def get(self, key: K, make: Callable[[A], V], arg: A) -> V:
        """The value for `key`: `make(arg)` on first use, kept if it fits."""
        found = self._data.get(key)
        if found is not None:
            return found[0]
        value = make(arg)
        weight = self._size(value) if self._size is not None else 0
        if weight > self._max_bytes:
            return value  # too big to keep: every caller builds its own
        data = self._data
        while data and (len(data) >= self._max_entries or self._total + weight > self._max_bytes):
            _, dropped = data.pop(next(iter(data)))  # the oldest
            self._total -= dropped
        data[key] = (value, weight)
        self._total += weight
        return value
