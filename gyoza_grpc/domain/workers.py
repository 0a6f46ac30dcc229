"""Workers as the server sees them, and what a heartbeat tells a worker to stop. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.model import Event, EventType, RunState
from gyoza_grpc.domain.placement import Capacity

MAX_WORKER_ID_LEN = 256
MAX_TAGS = 64
MAX_NOT_READY_REASON_LEN = 1024
# Events that leave a run where its holder goes on: the holder's own reports.
_HOLDER_KEEPS_GOING = frozenset(
    {EventType.PROGRESS, EventType.INFO, EventType.ERROR, EventType.STARTED}
)
# Eviction sweeps per lease, at least: their ticks are the clock that tells an outage.
SWEEPS_PER_LEASE = 4


class WorkerState(StrEnum):
    ALIVE = "ALIVE"
    EVICTED = "EVICTED"


@dataclass(frozen=True, slots=True)
class HeldAttempt:
    run_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Worker:
    worker_id: str
    state: WorkerState
    resources: Capacity
    tags: tuple[str, ...]
    registered_at: datetime
    last_heartbeat: datetime
    lease_expires_at: datetime
    not_ready_reason: str = ""


@dataclass(frozen=True, slots=True)
class RunView:
    """The little of a run that decides whether a worker may keep executing it."""

    run_id: str
    state: RunState
    current_attempt: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class StopOrder:
    run_id: str
    attempt: int
    reason: str


def validate_registration(worker_id: str, resources: Capacity, tags: Iterable[str]) -> None:
    violations: list[FieldViolation] = []
    if not worker_id:
        violations.append(FieldViolation("worker_id", "must not be empty"))
    elif len(worker_id) > MAX_WORKER_ID_LEN:
        violations.append(
            FieldViolation("worker_id", f"must be at most {MAX_WORKER_ID_LEN} characters")
        )
    if resources.cpu < 0:
        violations.append(FieldViolation("resources.cpu", "must be >= 0"))
    if resources.ram_mb < 0:
        violations.append(FieldViolation("resources.ram_mb", "must be >= 0"))
    seen: set[int] = set()
    for i, gpu in enumerate(resources.gpus):
        if gpu.gpu_id < 0 or gpu.gpu_id in seen:
            violations.append(
                FieldViolation(f"resources.gpus[{i}].gpu_id", "must be >= 0 and unique")
            )
        seen.add(gpu.gpu_id)
        if gpu.vram_mb < 0:
            violations.append(FieldViolation(f"resources.gpus[{i}].vram_mb", "must be >= 0"))
    if len(list(tags)) > MAX_TAGS:
        violations.append(FieldViolation("tags", f"at most {MAX_TAGS} tags"))
    if violations:
        raise InvalidArgument.for_fields(violations)


def may_stop_holder(events: Sequence[Event]) -> bool:
    """Whether committed `events` may mean that the worker holding the run must abandon it
    (a cancel, a final state, a new attempt, a reassignment, a run handed back to PENDING):
    what wakes that worker's WaitForStopOrders. Its own progress and notes do not."""
    return any(e.type not in _HOLDER_KEEPS_GOING or e.state is RunState.PENDING for e in events)


def stop_orders(
    worker_id: str, running: Iterable[HeldAttempt], runs: Mapping[str, RunView]
) -> list[StopOrder]:
    """The attempts a worker reports executing that it must abandon, and why."""
    out: list[StopOrder] = []
    for held in running:
        view = runs.get(held.run_id)
        if view is None:
            reason = "unknown run"
        elif held.attempt != view.current_attempt:
            reason = f"superseded by attempt {view.current_attempt}"
        elif view.state is RunState.CANCELLED:
            reason = "cancelled"
        elif view.state.is_terminal:
            reason = f"run is {view.state}"
        elif view.state is RunState.PENDING:
            reason = "reassigned: the run went back to PENDING"
        elif view.worker_id != worker_id:
            reason = f"reassigned to worker {view.worker_id or '(none)'}"
        else:
            continue
        out.append(StopOrder(held.run_id, held.attempt, reason))
    return out


def sweep_interval(requested: timedelta, lease: timedelta) -> timedelta:
    """How often to sweep: as asked, but at least SWEEPS_PER_LEASE times a lease, so that the
    sweeps' ticks come far closer together than `outage_credit`'s threshold."""
    return min(requested, lease / SWEEPS_PER_LEASE)


def outage_credit(since_last_tick: timedelta, lease: timedelta) -> timedelta:
    """What of the time since the last recorded sweep does not count against leases.

    Sweeps run on every server and record their time in the database, at least four times a
    lease. A gap of more than half a lease means no sweep could commit: the database was out
    of reach (or no server ran), so no heartbeat could be recorded either, and a lease must
    not run out for it. Then all of the gap is credited (a fresh heartbeat's full lease is the
    most a worker gets back, see WorkerStore.evict_expired); a shorter one is ordinary, and a
    healthy worker, heartbeating three times a lease, outlives it anyway.
    """
    return since_last_tick if since_last_tick > lease / 2 else timedelta(0)
