"""Runs, attempts and events as frozen values.

A run shows its current attempt (`Run.attempt`): its state, progress, outputs and summary.
Values evolve by copying (`dataclasses.replace`), so a transition can be computed, checked
and written without ever exposing a half-changed run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

JSON = dict[str, Any]


class RunState(StrEnum):
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})


class EventType(StrEnum):
    ASSIGNED = "ASSIGNED"
    STARTED = "STARTED"
    INFO = "INFO"
    PROGRESS = "PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ERROR = "ERROR"
    RETRIED = "RETRIED"


DEFAULT_PRIORITY = 5
# The longest any automatic retry waits, whatever the policy says (30 days).
MAX_BACKOFF_S = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Constraints:
    """Resources a run needs; None means no requirement."""

    cpu: int | None = None
    ram_mb: int | None = None
    vram_mb: int | None = None
    gpu_id: int | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """max_attempts counts every attempt, the first included. An automatic retry after
    failed attempt n waits initial_backoff * backoff_multiplier**(n-1), at most max_backoff
    (no backoff by default: retry at once)."""

    max_attempts: int = 1
    initial_backoff: timedelta = timedelta(0)
    backoff_multiplier: float = 1.0
    max_backoff: timedelta | None = None

    def delay_after(self, failed_attempt: int) -> timedelta:
        """How long the retry after `failed_attempt` (1-based) waits before it is claimable."""
        if not self.initial_backoff:
            return timedelta(0)
        try:
            factor = self.backoff_multiplier ** max(0, failed_attempt - 1)
        except OverflowError:
            factor = math.inf
        cap = MAX_BACKOFF_S if self.max_backoff is None else self.max_backoff.total_seconds()
        return timedelta(seconds=min(self.initial_backoff.total_seconds() * factor, cap))


@dataclass(frozen=True, slots=True)
class EventDelivery:
    topic: str = ""
    attributes: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    duration_ms: int = 0
    worker_id: str = ""
    error_message: str = ""
    gpu_id: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    run_id: str
    number: int
    id: str
    state: RunState
    created_at: datetime
    progress: int = 0
    outputs: JSON = field(default_factory=dict)
    summary: ExecutionSummary = ExecutionSummary()
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Event:
    run_id: str
    seq: int
    attempt: int
    type: EventType
    time: datetime
    state: RunState
    msg: str = ""
    progress: int | None = None
    payload: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What a client asks for when it creates a run (validated by `runs.new_run`)."""

    image: str
    priority: int = DEFAULT_PRIORITY
    inputs: JSON = field(default_factory=dict)
    constraints: Constraints = Constraints()
    retry_policy: RetryPolicy = RetryPolicy()
    event_delivery: EventDelivery = EventDelivery()
    op_definition: str = ""
    # The op_definition version the run is made from; empty for ad-hoc runs.
    definition_version: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    state: RunState
    priority: int
    image: str
    inputs: JSON
    constraints: Constraints
    retry_policy: RetryPolicy
    event_delivery: EventDelivery
    op_definition: str
    request_id: str
    current_attempt: int
    # seq of the latest event; -1 before the first. The next event gets last_seq + 1.
    last_seq: int
    created_at: datetime
    updated_at: datetime
    # The current attempt (number == current_attempt).
    attempt: Attempt
    # A PENDING run is not claimable before this (an automatic retry's backoff).
    next_attempt_at: datetime | None = None
    # Attempts that never started because their worker was lost: they do not count
    # against retry_policy.max_attempts.
    uncounted_attempts: int = 0

    @property
    def counted_attempts(self) -> int:
        return self.current_attempt - self.uncounted_attempts

    # The version of op_definition the run was made from; empty for ad-hoc runs.
    definition_version: str = ""

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


@dataclass(frozen=True, slots=True)
class TopicEvent:
    """A run's event as its topic feed delivers it, at the topic's own `cursor`."""

    topic: str
    cursor: int
    event: Event
    attributes: JSON = field(default_factory=dict)
