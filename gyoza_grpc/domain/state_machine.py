"""The run state machine: (run, command, now) -> Transition. Pure: no I/O, no clock.

Every state change of a run goes through here, whatever RPC asked for it, so the rules live
in one place: which transitions are legal, what each event type does to the run and its
current attempt, when a failure is retried, and how stale workers are fenced off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from gyoza_grpc.domain.errors import FailedPrecondition, InvalidArgument
from gyoza_grpc.domain.ids import uuid7
from gyoza_grpc.domain.limits import check_event_cap
from gyoza_grpc.domain.model import (
    JSON,
    Attempt,
    Event,
    EventType,
    ExecutionSummary,
    Run,
    RunState,
)

# Legal state changes. A terminal run is locked: only a retry (back to PENDING with a new
# attempt) leaves it.
TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.ASSIGNED, RunState.RUNNING, RunState.CANCELLED}),
    RunState.ASSIGNED: frozenset(
        {RunState.PENDING, RunState.RUNNING, RunState.FAILED, RunState.CANCELLED}
    ),
    RunState.RUNNING: frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED}),
    RunState.COMPLETED: frozenset({RunState.PENDING}),
    RunState.FAILED: frozenset({RunState.PENDING}),
    RunState.CANCELLED: frozenset({RunState.PENDING}),
}

# The state each state-changing event type moves a run to (RETRIED: a new attempt).
EVENT_TARGET: Mapping[EventType, RunState] = {
    EventType.ASSIGNED: RunState.ASSIGNED,
    EventType.STARTED: RunState.RUNNING,
    EventType.COMPLETED: RunState.COMPLETED,
    EventType.FAILED: RunState.FAILED,
    EventType.CANCELLED: RunState.CANCELLED,
    EventType.RETRIED: RunState.PENDING,
}

CANCEL_MSG = "Cancelled by user"
MANUAL_RETRY_MSG = "Manual retry"
_INT_MSG = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclass(frozen=True, slots=True)
class EventInput:
    """An event a caller asks to append (AddEvent, and the RPCs built on it)."""

    type: EventType
    msg: str = ""
    progress: int | None = None
    payload: JSON = field(default_factory=dict)
    # The attempt the caller works on; a superseded one is refused.
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The run after a command, the events it appended (in seq order), and the attempt
    a retry closed (None when the current attempt carried on)."""

    run: Run
    events: tuple[Event, ...]
    closed_attempt: Attempt | None = None

    @property
    def started_new_attempt(self) -> bool:
        return self.closed_attempt is not None


class _Builder:
    """Accumulates the events and attempt changes of one transition."""

    def __init__(self, run: Run, now: datetime) -> None:
        self.run = run
        self.now = now
        self.events: list[Event] = []
        self.closed: Attempt | None = None

    def emit(
        self,
        type_: EventType,
        msg: str,
        payload: JSON,
        progress: int | None = None,
    ) -> Event:
        run = self.run
        event = Event(
            run_id=run.id,
            seq=run.last_seq + 1,
            attempt=run.current_attempt,
            type=type_,
            time=self.now,
            state=run.state,
            msg=msg,
            progress=progress,
            payload=payload,
        )
        self.run = replace(run, last_seq=event.seq, updated_at=self.now)
        self.events.append(event)
        return event

    def move(self, state: RunState, **attempt_changes: Any) -> None:
        run = self.run
        attempt = replace(run.attempt, state=state, **attempt_changes)
        self.run = replace(run, state=state, attempt=attempt, updated_at=self.now)

    def start_new_attempt(self, not_before: datetime | None = None) -> None:
        run = self.run
        self.closed = run.attempt
        number = run.current_attempt + 1
        attempt = Attempt(
            run_id=run.id,
            number=number,
            id=uuid7(self.now),
            state=RunState.PENDING,
            created_at=self.now,
        )
        self.run = replace(
            run,
            state=RunState.PENDING,
            current_attempt=number,
            attempt=attempt,
            updated_at=self.now,
            next_attempt_at=not_before,
        )

    def finish(self) -> Transition:
        return Transition(run=self.run, events=tuple(self.events), closed_attempt=self.closed)


def check_transition(run: Run, target: RunState) -> None:
    """Raise FailedPrecondition unless `run` may move to `target`."""
    if target in TRANSITIONS[run.state]:
        return
    if run.is_terminal:
        raise FailedPrecondition(
            f"run is in terminal state {run.state} and cannot move to {target}; "
            "only a retry (to PENDING) leaves a terminal state",
            reason="RUN_LOCKED",
            metadata={"state": run.state, "target_state": target},
        )
    raise FailedPrecondition(
        f"illegal transition from {run.state} to {target}",
        reason="ILLEGAL_TRANSITION",
        metadata={"state": run.state, "target_state": target},
    )


def _duration_ms(attempt: Attempt, now: datetime) -> int:
    if attempt.started_at is None:
        return 0
    return max(0, int((now - attempt.started_at).total_seconds() * 1000))


def _payload_str(payload: JSON, key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument.field(f"payload.{key}", "must be a string")
    return value


def _payload_gpu_id(payload: JSON) -> int | None:
    value = payload.get("gpu_id")
    if value is None:
        return None
    # Struct carries every number as a double: 1.0 is GPU 1, 1.5 is no GPU at all.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())  # 1.5, inf, nan
    ):
        raise InvalidArgument.field("payload.gpu_id", "must be a whole number")
    if not 0 <= value <= 2**31 - 1:
        raise InvalidArgument.field("payload.gpu_id", "must be between 0 and 2147483647")
    return int(value)


def _progress_of(event: EventInput) -> int:
    if event.progress is not None:
        value, field_name = event.progress, "progress"
    elif _INT_MSG.match(event.msg):
        try:
            value, field_name = int(event.msg), "msg"
        except ValueError:  # more digits than int() takes, or a space it does not strip
            raise InvalidArgument.field(
                "msg", "progress must be an integer between 0 and 100"
            ) from None
    else:
        raise InvalidArgument.field(
            "progress", "a PROGRESS event needs progress (0-100) or an integer msg"
        )
    if not 0 <= value <= 100:
        raise InvalidArgument.field(field_name, f"progress must be between 0 and 100, got {value}")
    return value


def _fence(run: Run, attempt: int | None) -> None:
    if attempt is None or attempt == run.current_attempt:
        return
    if attempt <= 0:
        raise InvalidArgument.field("attempt", f"must be 1 or more, got {attempt}")
    raise FailedPrecondition(
        f"attempt {attempt} is not the current attempt {run.current_attempt} of run '{run.id}'",
        reason="STALE_ATTEMPT",
        metadata={"attempt": str(attempt), "current_attempt": str(run.current_attempt)},
    )


def _locked(run: Run, what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"run is already in terminal state {run.state}; {what} is not allowed",
        reason="RUN_LOCKED",
        metadata={"state": run.state},
    )


def append_event(
    run: Run, event: EventInput, now: datetime, *, max_events: int | None = None
) -> Transition:
    """Apply one event to `run`: the AddEvent rules of the original router. With
    `max_events`, a run at its event cap takes only lifecycle events (domain.limits)."""
    _fence(run, event.attempt)
    if event.progress is not None and event.type is not EventType.PROGRESS:
        raise InvalidArgument.field("progress", "is only allowed on PROGRESS events")
    if event.type is EventType.RETRIED:
        if not run.is_terminal:
            raise FailedPrecondition(
                f"only a terminal run can be retried; run is {run.state}",
                reason="RUN_NOT_TERMINAL",
                metadata={"state": run.state},
            )
        check_event_cap(run, event.type, max_events)
        return _retry(run, event.msg or MANUAL_RETRY_MSG, {**event.payload, "force": True}, now)
    if run.is_terminal:
        raise _locked(run, f"a {event.type} event")
    check_event_cap(run, event.type, max_events)

    b = _Builder(run, now)
    payload = event.payload
    match event.type:
        case EventType.INFO | EventType.ERROR:
            b.emit(event.type, event.msg, payload)
        case EventType.PROGRESS:
            progress = _progress_of(event)
            b.move(run.state, progress=progress)
            b.emit(event.type, event.msg, payload, progress=progress)
        case EventType.ASSIGNED | EventType.STARTED:
            target = EVENT_TARGET[event.type]
            check_transition(run, target)
            worker_id = _payload_str(payload, "worker_id")
            gpu_id = _payload_gpu_id(payload)
            summary = run.attempt.summary
            summary = replace(
                summary,
                worker_id=summary.worker_id if worker_id is None else worker_id,
                gpu_id=summary.gpu_id if gpu_id is None else gpu_id,
            )
            if target is RunState.RUNNING:
                b.move(target, summary=summary, started_at=now)
            else:
                b.move(target, summary=summary)
            b.emit(event.type, event.msg, payload)
        case EventType.COMPLETED:
            check_transition(run, RunState.COMPLETED)
            # No outputs (or null) keeps what the attempt has (UpdateRun may have set some).
            outputs = payload.get("outputs")
            if outputs is None:
                outputs = run.attempt.outputs
            if not isinstance(outputs, dict):
                raise InvalidArgument.field("payload.outputs", "must be an object")
            summary = replace(run.attempt.summary, duration_ms=_duration_ms(run.attempt, now))
            b.move(
                RunState.COMPLETED,
                outputs=outputs,
                progress=100,
                summary=summary,
                finished_at=now,
            )
            b.emit(event.type, event.msg, payload)
        case EventType.FAILED:
            check_transition(run, RunState.FAILED)
            error = _payload_str(payload, "error_message")
            summary = replace(
                run.attempt.summary,
                error_message=event.msg if error is None else error,
                duration_ms=_duration_ms(run.attempt, now),
            )
            b.move(RunState.FAILED, summary=summary, finished_at=now)
            b.emit(event.type, event.msg, payload)
            if run.counted_attempts < run.retry_policy.max_attempts:
                delay = run.retry_policy.delay_after(run.current_attempt)
                retry_payload: JSON = {"force": False, "failed_attempt": run.current_attempt}
                if delay:
                    retry_payload["backoff_ms"] = delay // timedelta(milliseconds=1)
                _append_retry(
                    b,
                    f"Automatic retry: attempt {run.current_attempt} of "
                    f"{run.retry_policy.max_attempts} failed",
                    retry_payload,
                    not_before=now + delay if delay else None,
                )
        case EventType.CANCELLED:
            _append_cancel(b, event.msg or CANCEL_MSG, payload)
    return b.finish()


def _append_cancel(b: _Builder, msg: str, payload: JSON) -> None:
    attempt = b.run.attempt
    summary = replace(attempt.summary, duration_ms=_duration_ms(attempt, b.now))
    b.move(RunState.CANCELLED, summary=summary, finished_at=b.now)
    b.emit(EventType.CANCELLED, msg, payload)


def _append_retry(b: _Builder, msg: str, payload: JSON, not_before: datetime | None = None) -> None:
    b.start_new_attempt(not_before)
    b.emit(EventType.RETRIED, msg, payload)


def _retry(run: Run, msg: str, payload: JSON, now: datetime) -> Transition:
    b = _Builder(run, now)
    _append_retry(b, msg, payload)
    return b.finish()


def cancel(run: Run, reason: str, now: datetime) -> Transition:
    """CancelRun: a non-terminal run becomes CANCELLED with a CANCELLED event."""
    if run.is_terminal:
        raise FailedPrecondition(
            f"run is already in terminal state {run.state}",
            reason="RUN_LOCKED",
            metadata={"state": run.state},
        )
    b = _Builder(run, now)
    _append_cancel(b, reason or CANCEL_MSG, {})
    return b.finish()


def retry(run: Run, now: datetime, *, max_events: int | None = None) -> Transition:
    """RetryRun: a forced retry of a terminal run (it ignores max_attempts, not the event cap)."""
    if not run.is_terminal:
        raise FailedPrecondition(
            f"only a COMPLETED, FAILED or CANCELLED run can be retried; run is {run.state}",
            reason="RUN_NOT_TERMINAL",
            metadata={"state": run.state},
        )
    check_event_cap(run, EventType.RETRIED, max_events)
    return _retry(run, MANUAL_RETRY_MSG, {"force": True}, now)


UPDATE_MSG = "Set by UpdateRun"


def set_state(
    run: Run, target: RunState, now: datetime, *, max_events: int | None = None
) -> Transition:
    """UpdateRun's state change: a legal transition, recorded on the timeline like any other.

    Each target maps to the event that normally leads there (RUNNING: STARTED, COMPLETED:
    COMPLETED, ...); FAILED set this way is final (no automatic retry: an operator decided);
    ASSIGNED -> PENDING (unassign) is an INFO event; a terminal run -> PENDING is a retry.
    """
    check_transition(run, target)
    if target is RunState.PENDING:  # a retry or an unassign: neither moves the run forward
        check_event_cap(run, EventType.RETRIED if run.is_terminal else EventType.INFO, max_events)
    if run.is_terminal:
        return _retry(run, UPDATE_MSG, {"force": True}, now)
    b = _Builder(run, now)
    match target:
        case RunState.PENDING:
            b.move(RunState.PENDING, summary=ExecutionSummary())
            b.emit(EventType.INFO, "Unassigned by UpdateRun", {})
        case RunState.ASSIGNED:
            b.move(RunState.ASSIGNED)
            b.emit(EventType.ASSIGNED, UPDATE_MSG, {})
        case RunState.RUNNING:
            b.move(RunState.RUNNING, started_at=now)
            b.emit(EventType.STARTED, UPDATE_MSG, {})
        case RunState.COMPLETED:
            summary = replace(run.attempt.summary, duration_ms=_duration_ms(run.attempt, now))
            b.move(RunState.COMPLETED, progress=100, summary=summary, finished_at=now)
            b.emit(EventType.COMPLETED, UPDATE_MSG, {})
        case RunState.FAILED:
            summary = replace(run.attempt.summary, duration_ms=_duration_ms(run.attempt, now))
            b.move(RunState.FAILED, summary=summary, finished_at=now)
            b.emit(EventType.FAILED, UPDATE_MSG, {})
        case RunState.CANCELLED:
            _append_cancel(b, UPDATE_MSG, {})
    return b.finish()


def set_fields(
    run: Run, now: datetime, *, outputs: JSON | None = None, priority: int | None = None
) -> Run:
    """UpdateRun's direct edits: outputs (replaced) and priority. Allowed in every state,
    terminal included: they correct the record and do not touch the timeline."""
    if outputs is not None:
        run = replace(run, attempt=replace(run.attempt, outputs=outputs))
    if priority is not None:
        run = replace(run, priority=priority)
    return replace(run, updated_at=now)


def update(
    run: Run,
    now: datetime,
    *,
    state: RunState | None = None,
    outputs: JSON | None = None,
    priority: int | None = None,
    max_events: int | None = None,
) -> Transition:
    """UpdateRun: the state change first (a legal transition, with its event), then the
    direct edits, which apply to the attempt that is current afterwards."""
    transition = (
        Transition(run=run, events=())
        if state is None
        else set_state(run, state, now, max_events=max_events)
    )
    if outputs is None and priority is None:
        return transition
    edited = set_fields(transition.run, now, outputs=outputs, priority=priority)
    return replace(transition, run=edited)


def release(run: Run, worker_id: str, attempt: int, now: datetime) -> Transition:
    """ReleaseRun: a worker hands back an attempt it was assigned and never started. The run
    goes back to PENDING on the same attempt (never run, so not counted as a try), with an
    INFO event. Only the worker holding that very attempt may, and only while it is ASSIGNED:
    a started attempt is reported FAILED instead, so the retry policy applies."""
    held = run.current_attempt == attempt and run.attempt.summary.worker_id == worker_id
    if not held or run.state not in (RunState.ASSIGNED, RunState.RUNNING):
        raise FailedPrecondition(
            f"run '{run.id}' attempt {attempt} is not held by worker '{worker_id}'",
            reason="NOT_HELD",
            metadata={"run_id": run.id, "attempt": str(attempt), "worker_id": worker_id},
        )
    if run.state is not RunState.ASSIGNED:
        raise FailedPrecondition(
            f"run '{run.id}' is {run.state.value}: only an attempt that never started can be "
            "released; report it FAILED instead",
            reason="ALREADY_STARTED",
            metadata={"run_id": run.id, "state": run.state.value},
        )
    b = _Builder(run, now)
    b.move(RunState.PENDING, summary=ExecutionSummary())
    b.emit(EventType.INFO, f"Released by worker {worker_id}", {"released_by": worker_id})
    return b.finish()


def lose_worker(run: Run, worker_id: str, now: datetime) -> Transition:
    """A worker holding `run` was evicted. An ASSIGNED run goes back to PENDING with a new
    attempt (it never started, so the retry is not counted against max_attempts); a RUNNING
    attempt FAILS with "worker <id> lost", so the retry policy applies. Any other state is
    left alone (an empty transition)."""
    message = f"worker {worker_id} lost"
    if run.state is RunState.ASSIGNED:
        return _hand_back(
            run,
            now,
            f"{message} before it started",
            f"{message} before it started the run",
            {"lost_worker": worker_id},
        )
    if run.state is RunState.RUNNING:
        failed = EventInput(
            EventType.FAILED, message, payload={"error_message": message, "lost_worker": worker_id}
        )
        return append_event(run, failed, now)
    return Transition(run=run, events=())


def forget_unreported(run: Run, worker_id: str, now: datetime) -> Transition:
    """An ASSIGNED attempt that its worker's heartbeats stopped reporting: the claim answer
    never reached the worker (or it lost it). The run goes back to PENDING with a new attempt,
    not counted against max_attempts (it never started); the old attempt is fenced, so a late
    start of it is refused. Any other state, or another worker's attempt, is left alone."""
    if run.state is not RunState.ASSIGNED or run.attempt.summary.worker_id != worker_id:
        return Transition(run=run, events=())
    return _hand_back(
        run,
        now,
        f"worker {worker_id} did not report it",
        f"worker {worker_id} never reported the run it was assigned (the claim answer did "
        "not reach it)",
        {"unreported_by": worker_id},
    )


def _hand_back(run: Run, now: datetime, error: str, msg: str, payload: JSON) -> Transition:
    """An ASSIGNED run back to PENDING on a new attempt that does not count as a try."""
    b = _Builder(run, now)
    # The attempt never ran; it ends FAILED so that nothing counts it as held any more.
    summary = replace(run.attempt.summary, error_message=error)
    b.run = replace(
        b.run,
        attempt=replace(run.attempt, state=RunState.FAILED, summary=summary, finished_at=now),
    )
    _append_retry(b, msg, payload)
    b.run = replace(b.run, uncounted_attempts=run.uncounted_attempts + 1)
    return b.finish()
