"""Run and attempt ids: UUIDs version 7 (RFC 9562), time-ordered.

48 bits of Unix milliseconds, then 74 random bits. Time-ordered ids keep every index on a run
or attempt id (the runs' and attempts' primary keys, the attempts' unique id, the events'
(run_id, seq)) growing at its right edge: a batch of new runs dirties a few pages there
instead of one random page per index per run (less store time per CreateRun; the figures are
in docs/benchmarks.md). The millisecond is the time the caller passes (the
run's created_at), so ids made under a test clock are still valid and distinct.
"""

from __future__ import annotations

import os
from datetime import datetime

from gyoza_grpc.domain.clock import to_us

_MS_MASK = (1 << 48) - 1


def _spell(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def uuid7_pair(now: datetime) -> tuple[str, str]:
    """Two ids of `now`, spelled as str(uuid.UUID) spells them, from one read of os.urandom
    (two uuid.uuid4() calls were most of new_run's cost)."""
    ms = (to_us(now) // 1000 & _MS_MASK).to_bytes(6, "big")
    b = bytearray(os.urandom(32))
    b[0:6] = ms
    b[16:22] = ms
    for i in (6, 22):
        b[i] = b[i] & 0x0F | 0x70  # version 7
    for i in (8, 24):
        b[i] = b[i] & 0x3F | 0x80  # RFC 9562 variant
    h = b.hex()
    return _spell(h[:32]), _spell(h[32:])


def uuid7(now: datetime) -> str:
    """One id of `now` (a retry's new attempt)."""
    return uuid7_pair(now)[0]
