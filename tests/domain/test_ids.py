"""Run and attempt ids: UUIDv7 of the time given, distinct, ordered by that time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from gyoza_grpc.domain.clock import to_us
from gyoza_grpc.domain.ids import uuid7, uuid7_pair


def test_a_pair_is_two_distinct_uuid7_of_the_millisecond() -> None:
    now = datetime(2026, 11, 26, 14, 30, 1, 999999, tzinfo=UTC)
    a, b = uuid7_pair(now)
    assert a != b
    for value in (a, b):
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == value
        assert parsed.int >> 80 == to_us(now) // 1000


def test_ids_sort_by_their_millisecond() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [uuid7(t0 + timedelta(milliseconds=n)) for n in range(0, 5000, 7)]
    assert ids == sorted(ids)


def test_times_outside_48_bits_still_make_valid_ids() -> None:
    for t in (datetime(1960, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)):
        assert uuid.UUID(uuid7(t)).version == 7
