"""Time as the domain sees it: aware UTC datetimes, stored as integer microseconds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_us(t: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (exact)."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: gyoza times are aware (UTC)")
    return (t - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)
