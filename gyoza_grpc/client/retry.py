"""When a call that failed with UNAVAILABLE is tried again: a policy and its pure backoff.

Only UNAVAILABLE is retried (the server was unreachable, restarting, or shedding load), and
only for calls that are safe to send twice (reads, idempotent writes: see `docs/client.md`).
The waits grow exponentially with jitter, so clients that lost the same server do not all
come back at the same instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """How a failed call, or a broken watch stream, is tried again.

    A unary call makes at most `max_attempts` attempts, all within its deadline. A watch
    stream resumes after at most `max_attempts - 1` failures in a row: any message from the
    server (an event or a heartbeat) starts the count again.
    """

    max_attempts: int = 10
    """Attempts in all, the first included; 1 never retries."""
    initial_backoff: timedelta = timedelta(milliseconds=100)
    """The wait before the second attempt."""
    multiplier: float = 2.0
    """Each wait is this many times the one before..."""
    max_backoff: timedelta = timedelta(seconds=5)
    """...up to this."""
    jitter: float = 0.2
    """Each wait is scaled by a random factor in [1 - jitter, 1 + jitter]."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < timedelta(0) or self.max_backoff < timedelta(0):
            raise ValueError("initial_backoff and max_backoff must not be negative")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def backoff_s(self, failures: int, rand: float) -> float | None:
        """Seconds to wait after `failures` failed attempts in a row, or None when no attempt
        is left. `rand` in [0, 1) picks the jitter (a pure function: tests pass it in)."""
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        if failures >= self.max_attempts:
            return None
        base = self.initial_backoff.total_seconds()
        try:
            grown = base * self.multiplier ** (failures - 1) if base else 0.0
        except OverflowError:  # a float power past 1e308 raises instead of giving inf
            grown = math.inf
        wait = min(grown, self.max_backoff.total_seconds())
        return wait * (1 - self.jitter + 2 * self.jitter * rand)


NO_RETRY = RetryConfig(max_attempts=1)
"""Never try again: every failure is raised as it comes."""
