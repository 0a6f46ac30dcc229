"""Pure, table-driven tests of the run state machine (no I/O, no grpc, no database).

Runs are built directly as frozen values (see `make_run`), independently of the code under
test, and every function gets the fixed `NOW`: a time far from the wall clock, so any stray
use of the real clock shows up as a wrong timestamp.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest

from gyoza_grpc.domain import state_machine as sm
from gyoza_grpc.domain.errors import FailedPrecondition, GyozaError, InvalidArgument
from gyoza_grpc.domain.model import (
    JSON,
    Attempt,
    Constraints,
    Event,
    EventDelivery,
    EventType,
    ExecutionSummary,
    RetryPolicy,
    Run,
    RunState,
)
from gyoza_grpc.domain.state_machine import EventInput, Transition

P, A, R = RunState.PENDING, RunState.ASSIGNED, RunState.RUNNING
C, F, X = RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED
NON_TERMINAL = (P, A, R)
TERMINAL = (C, F, X)
ALL_STATES = tuple(RunState)
ALL_TYPES = tuple(EventType)

NOW = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
CREATED = NOW - timedelta(hours=1)
STARTED = NOW - timedelta(milliseconds=1500)  # a run started here has run 1500 ms at NOW
FINISHED = NOW - timedelta(seconds=1)
RUN_ID = "run-1"
LAST_SEQ = 9  # the next event gets seq 10

# -- building runs -----------------------------------------------------------------------------


def make_run(
    state: RunState = P,
    *,
    attempt: int = 1,
    max_attempts: int = 1,
    last_seq: int = LAST_SEQ,
    progress: int | None = None,
    outputs: JSON | None = None,
    summary: ExecutionSummary | None = None,
    started_at: datetime | bool | None = True,
) -> Run:
    """A run in `state` on attempt `attempt`, shaped as if it got there the usual way:
    ASSIGNED and later have a worker, RUNNING and later (but CANCELLED) were started,
    terminal runs are finished, a COMPLETED run has outputs and progress 100."""
    if summary is None:
        summary = ExecutionSummary(
            worker_id="" if state is P else "w-1",
            gpu_id=None if state is P else 0,
            error_message="boom" if state is F else "",
            duration_ms=500 if state.is_terminal else 0,
        )
    if started_at is True:
        started_at = STARTED if state in (R, C, F) else None
    elif started_at is False:
        started_at = None
    att = Attempt(
        run_id=RUN_ID,
        number=attempt,
        id=f"attempt-{attempt}",
        state=state,
        created_at=CREATED,
        progress=(100 if state is C else 30 if state is R else 0) if progress is None else progress,
        outputs=({"old": 1} if state is C else {}) if outputs is None else outputs,
        summary=summary,
        started_at=started_at,
        finished_at=FINISHED if state.is_terminal else None,
    )
    return Run(
        id=RUN_ID,
        state=state,
        priority=5,
        image="alpine:3",
        inputs={"x": 1.0},
        constraints=Constraints(cpu=1),
        retry_policy=RetryPolicy(max_attempts=max_attempts),
        event_delivery=EventDelivery(topic="t"),
        op_definition="",
        request_id="",
        current_attempt=attempt,
        last_seq=last_seq,
        created_at=CREATED,
        updated_at=CREATED,
        attempt=att,
    )


def ev(type_: EventType, msg: str = "", **kw: Any) -> EventInput:
    return EventInput(type=type_, msg=msg, **kw)


# A valid input of each type, for the matrices.
DEFAULT_INPUT: dict[EventType, EventInput] = {
    EventType.ASSIGNED: ev(EventType.ASSIGNED, payload={"worker_id": "w-9"}),
    EventType.STARTED: ev(EventType.STARTED, payload={"worker_id": "w-9", "gpu_id": 2.0}),
    EventType.INFO: ev(EventType.INFO, "hello"),
    EventType.PROGRESS: ev(EventType.PROGRESS, progress=42),
    EventType.COMPLETED: ev(EventType.COMPLETED, payload={"outputs": {"y": 2.0}}),
    EventType.FAILED: ev(EventType.FAILED, payload={"error_message": "oom"}),
    EventType.CANCELLED: ev(EventType.CANCELLED, "stop"),
    EventType.ERROR: ev(EventType.ERROR, "warning"),
    EventType.RETRIED: ev(EventType.RETRIED),
}


def precondition(
    excinfo: pytest.ExceptionInfo[FailedPrecondition], reason: str, *words: str
) -> None:
    err = excinfo.value
    assert err.code == "FAILED_PRECONDITION"
    assert err.reason == reason
    for word in words:
        assert word in err.message, (word, err.message)


def invalid(excinfo: pytest.ExceptionInfo[InvalidArgument], field: str) -> None:
    err = excinfo.value
    assert err.code == "INVALID_ARGUMENT"
    assert [v.field for v in err.violations] == [field]
    assert field in err.message


def assert_timeline(before: Run, t: Transition) -> None:
    """Invariants of every transition: gap-free seqs after before.last_seq, stamped NOW,
    last_seq and updated_at advanced, and (single-event) the event's state is the run's."""
    seqs = [e.seq for e in t.events]
    assert seqs == list(range(before.last_seq + 1, before.last_seq + 1 + len(t.events)))
    assert t.run.last_seq == (seqs[-1] if seqs else before.last_seq)
    assert all(e.time == NOW and e.run_id == before.id for e in t.events)
    if t.events:
        assert t.run.updated_at == NOW
        # The last event carries the run's final state and belongs to its current attempt.
        assert t.events[-1].state is t.run.state
        assert t.events[-1].attempt == t.run.current_attempt
    assert t.run.attempt.number == t.run.current_attempt
    assert t.run.attempt.state is t.run.state
    assert t.run.attempt.run_id == t.run.id


# -- the transition table ---------------------------------------------------------------------

EXPECTED_TRANSITIONS = {
    P: {A, R, X},
    A: {P, R, F, X},
    R: {C, F, X},
    C: {P},
    F: {P},
    X: {P},
}
ALLOWED = [(s, t) for s in ALL_STATES for t in ALL_STATES if t in EXPECTED_TRANSITIONS[s]]
FORBIDDEN = [(s, t) for s in ALL_STATES for t in ALL_STATES if t not in EXPECTED_TRANSITIONS[s]]


def test_transition_table_is_as_documented() -> None:
    assert {s: set(ts) for s, ts in sm.TRANSITIONS.items()} == EXPECTED_TRANSITIONS
    assert len(ALLOWED) + len(FORBIDDEN) == 36


def test_terminal_states() -> None:
    assert [s for s in ALL_STATES if s.is_terminal] == [C, F, X]
    assert all(make_run(s).is_terminal == s.is_terminal for s in ALL_STATES)


@pytest.mark.parametrize(("state", "target"), ALLOWED)
def test_check_transition_allows(state: RunState, target: RunState) -> None:
    sm.check_transition(make_run(state), target)  # does not raise


@pytest.mark.parametrize(("state", "target"), FORBIDDEN)
def test_check_transition_forbids_naming_both_states(state: RunState, target: RunState) -> None:
    with pytest.raises(FailedPrecondition) as excinfo:
        sm.check_transition(make_run(state), target)
    if state.is_terminal:
        precondition(excinfo, "RUN_LOCKED", "terminal", state, target)
    else:
        precondition(excinfo, "ILLEGAL_TRANSITION", f"from {state} to {target}")
    assert excinfo.value.metadata == {"state": state, "target_state": target}


# -- set_state (UpdateRun's state change) ------------------------------------------------------

# The event each allowed (state, target) records.
SET_STATE_EVENT = {
    (P, A): EventType.ASSIGNED,
    (P, R): EventType.STARTED,
    (P, X): EventType.CANCELLED,
    (A, P): EventType.INFO,
    (A, R): EventType.STARTED,
    (A, F): EventType.FAILED,
    (A, X): EventType.CANCELLED,
    (R, C): EventType.COMPLETED,
    (R, F): EventType.FAILED,
    (R, X): EventType.CANCELLED,
    (C, P): EventType.RETRIED,
    (F, P): EventType.RETRIED,
    (X, P): EventType.RETRIED,
}


def test_set_state_event_table_covers_every_allowed_transition() -> None:
    assert sorted(SET_STATE_EVENT) == sorted(ALLOWED)


@pytest.mark.parametrize(("state", "target"), ALLOWED)
def test_set_state_allowed(state: RunState, target: RunState) -> None:
    run = make_run(state, attempt=2, max_attempts=5)
    t = sm.set_state(run, target, NOW)
    assert t.run.state is target
    assert [e.type for e in t.events] == [SET_STATE_EVENT[state, target]]
    (event,) = t.events
    assert event.state is target
    assert event.progress is None
    assert_timeline(run, t)
    if state.is_terminal:  # a retry: a new attempt
        assert t.started_new_attempt
        assert t.closed_attempt == run.attempt
        assert t.run.current_attempt == event.attempt == 3
        assert event.payload == {"force": True}
    else:
        assert not t.started_new_attempt
        assert t.closed_attempt is None
        assert t.run.current_attempt == event.attempt == 2
        assert t.run.attempt.id == run.attempt.id


@pytest.mark.parametrize(("state", "target"), FORBIDDEN)
def test_set_state_forbidden(state: RunState, target: RunState) -> None:
    with pytest.raises(FailedPrecondition) as excinfo:
        sm.set_state(make_run(state), target, NOW)
    precondition(
        excinfo, "RUN_LOCKED" if state.is_terminal else "ILLEGAL_TRANSITION", state, target
    )


@pytest.mark.parametrize("state", [A, R])
def test_set_state_failed_is_final_even_with_attempts_left(state: RunState) -> None:
    run = make_run(state, attempt=1, max_attempts=3)
    t = sm.set_state(run, F, NOW)
    assert t.run.state is F
    assert t.run.current_attempt == 1
    assert [e.type for e in t.events] == [EventType.FAILED]
    assert t.run.attempt.finished_at == NOW


def test_set_state_running_starts_the_attempt() -> None:
    t = sm.set_state(make_run(A), R, NOW)
    assert t.run.attempt.started_at == NOW
    assert t.run.attempt.finished_at is None


def test_set_state_completed_finishes_the_attempt() -> None:
    t = sm.set_state(make_run(R, outputs={"keep": True}), C, NOW)
    att = t.run.attempt
    assert (att.progress, att.finished_at, att.summary.duration_ms) == (100, NOW, 1500)
    assert att.outputs == {"keep": True}
    assert att.summary.worker_id == "w-1"


def test_set_state_unassign_clears_the_worker() -> None:
    t = sm.set_state(make_run(A), P, NOW)
    assert t.run.attempt.summary == ExecutionSummary()
    assert t.events[0].msg == "Unassigned by UpdateRun"


@pytest.mark.parametrize("state", NON_TERMINAL)
def test_set_state_cancelled(state: RunState) -> None:
    t = sm.set_state(make_run(state), X, NOW)
    assert t.run.attempt.finished_at == NOW
    assert t.run.attempt.summary.duration_ms == (1500 if state is R else 0)
    assert t.events[0].msg == sm.UPDATE_MSG


# -- append_event: the full (event type, state) matrix ----------------------------------------

# The state a run ends in after the DEFAULT_INPUT event (max_attempts 1), or the reason of the
# FailedPrecondition it raises.
APPEND_TABLE: dict[EventType, dict[RunState, RunState | str]] = {
    EventType.ASSIGNED: {P: A, A: "ILLEGAL_TRANSITION", R: "ILLEGAL_TRANSITION"},
    EventType.STARTED: {P: R, A: R, R: "ILLEGAL_TRANSITION"},
    EventType.INFO: {P: P, A: A, R: R},
    EventType.PROGRESS: {P: P, A: A, R: R},
    EventType.COMPLETED: {P: "ILLEGAL_TRANSITION", A: "ILLEGAL_TRANSITION", R: C},
    EventType.FAILED: {P: "ILLEGAL_TRANSITION", A: F, R: F},
    EventType.CANCELLED: {P: X, A: X, R: X},
    EventType.ERROR: {P: P, A: A, R: R},
    EventType.RETRIED: {P: "RUN_NOT_TERMINAL", A: "RUN_NOT_TERMINAL", R: "RUN_NOT_TERMINAL"},
}
for _type, _row in APPEND_TABLE.items():  # terminal runs: locked, but for a retry
    for _state in TERMINAL:
        _row[_state] = P if _type is EventType.RETRIED else "RUN_LOCKED"

MATRIX = list(product(ALL_TYPES, ALL_STATES))


def test_append_table_is_complete() -> None:
    assert sorted(APPEND_TABLE) == sorted(ALL_TYPES)
    assert all(sorted(row) == sorted(ALL_STATES) for row in APPEND_TABLE.values())


@pytest.mark.parametrize(("type_", "state"), MATRIX)
def test_append_event_matrix(type_: EventType, state: RunState) -> None:
    run = make_run(state)
    expected = APPEND_TABLE[type_][state]
    if not isinstance(expected, RunState):
        with pytest.raises(FailedPrecondition) as excinfo:
            sm.append_event(run, DEFAULT_INPUT[type_], NOW)
        precondition(excinfo, expected, state)
        if expected == "RUN_LOCKED":
            precondition(excinfo, expected, "terminal", type_)
        return
    t = sm.append_event(run, DEFAULT_INPUT[type_], NOW)
    assert t.run.state is expected
    assert [e.type for e in t.events] == [type_]
    assert t.events[0].state is expected
    assert_timeline(run, t)
    assert t.started_new_attempt == (type_ is EventType.RETRIED)


@pytest.mark.parametrize(("type_", "state"), MATRIX)
def test_append_event_with_the_current_attempt_behaves_the_same(
    type_: EventType, state: RunState
) -> None:
    run = make_run(state, attempt=4, max_attempts=4)
    fenced = dataclasses.replace(DEFAULT_INPUT[type_], attempt=4)
    if not isinstance(APPEND_TABLE[type_][state], RunState):
        with pytest.raises(FailedPrecondition):
            sm.append_event(run, fenced, NOW)
    else:
        t = sm.append_event(run, fenced, NOW)
        assert t.run.state is APPEND_TABLE[type_][state]


# -- ASSIGNED and STARTED ---------------------------------------------------------------------


def test_assigned_records_worker_and_gpu() -> None:
    run = make_run(P)
    t = sm.append_event(run, ev(EventType.ASSIGNED, payload={"worker_id": "w-7", "gpu_id": 3}), NOW)
    att = t.run.attempt
    assert (att.summary.worker_id, att.summary.gpu_id) == ("w-7", 3)
    assert att.started_at is None
    assert t.events[0].payload == {"worker_id": "w-7", "gpu_id": 3}


@pytest.mark.parametrize("state", [P, A])
def test_started_runs_and_records_worker(state: RunState) -> None:
    run = make_run(state)
    payload = {"worker_id": "w-8", "gpu_id": 1.0}
    t = sm.append_event(run, ev(EventType.STARTED, "go", payload=payload), NOW)
    att = t.run.attempt
    assert t.run.state is R
    assert att.started_at == NOW
    assert (att.summary.worker_id, att.summary.gpu_id) == ("w-8", 1)
    assert isinstance(att.summary.gpu_id, int)
    assert (t.events[0].msg, t.events[0].payload) == ("go", payload)


def test_started_without_payload_keeps_what_assigned_recorded() -> None:
    run = make_run(A, summary=ExecutionSummary(worker_id="w-1", gpu_id=4))
    t = sm.append_event(run, ev(EventType.STARTED), NOW)
    assert (t.run.attempt.summary.worker_id, t.run.attempt.summary.gpu_id) == ("w-1", 4)


@pytest.mark.parametrize("type_", [EventType.ASSIGNED, EventType.STARTED])
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"worker_id": 5.0}, "payload.worker_id"),
        ({"worker_id": ["w"]}, "payload.worker_id"),
        ({"gpu_id": 1.5}, "payload.gpu_id"),
        ({"gpu_id": "1"}, "payload.gpu_id"),
        ({"gpu_id": True}, "payload.gpu_id"),
        ({"gpu_id": -1.0}, "payload.gpu_id"),
        ({"gpu_id": float(2**31)}, "payload.gpu_id"),
        ({"gpu_id": float("inf")}, "payload.gpu_id"),
        ({"gpu_id": float("-inf")}, "payload.gpu_id"),
        ({"gpu_id": float("nan")}, "payload.gpu_id"),
    ],
)
def test_assigned_and_started_reject_bad_payload(
    type_: EventType, payload: JSON, field: str
) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        sm.append_event(make_run(P), ev(type_, payload=payload), NOW)
    invalid(excinfo, field)


@pytest.mark.parametrize("gpu_id", [0, 0.0, 2**31 - 1, float(2**31 - 1)])
def test_gpu_id_bounds_accepted(gpu_id: float) -> None:
    t = sm.append_event(make_run(P), ev(EventType.STARTED, payload={"gpu_id": gpu_id}), NOW)
    assert t.run.attempt.summary.gpu_id == int(gpu_id)


# -- PROGRESS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "msg", "expected"),
    [
        (0, "", 0),
        (42, "", 42),
        (100, "", 100),
        (10, "20", 10),  # progress wins over msg
        (None, "0", 0),
        (None, "100", 100),
        (None, "57", 57),
        (None, " 7 ", 7),
        (None, "+5", 5),
        (None, "-0", 0),
        (None, "007", 7),
    ],
)
@pytest.mark.parametrize("state", NON_TERMINAL)
def test_progress_sets_progress(
    state: RunState, progress: int | None, msg: str, expected: int
) -> None:
    run = make_run(state)
    t = sm.append_event(run, ev(EventType.PROGRESS, msg, progress=progress), NOW)
    assert t.run.state is state
    assert t.run.attempt.progress == expected
    (event,) = t.events
    assert (event.type, event.progress, event.msg, event.state) == (
        EventType.PROGRESS,
        expected,
        msg,
        state,
    )
    assert_timeline(run, t)


@pytest.mark.parametrize(
    ("progress", "msg", "field"),
    [
        (-1, "", "progress"),
        (101, "", "progress"),
        (2**31 - 1, "", "progress"),
        (101, "50", "progress"),  # an out-of-range progress is not rescued by the msg
        (None, "101", "msg"),
        (None, "-1", "msg"),
        (None, "9" * 30, "msg"),
        (None, "", "progress"),
        (None, "abc", "progress"),
        (None, "4.5", "progress"),
        (None, "1e2", "progress"),
        (None, "50%", "progress"),
        (None, "1" * 5000, "msg"),  # longer than int() accepts by default
        (None, "5\x1c", "msg"),  # whitespace to the regex, not to int()
    ],
)
def test_progress_rejects_bad_values_naming_the_field(
    progress: int | None, msg: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        sm.append_event(make_run(R), ev(EventType.PROGRESS, msg, progress=progress), NOW)
    invalid(excinfo, field)


@pytest.mark.parametrize("type_", [t for t in ALL_TYPES if t is not EventType.PROGRESS])
@pytest.mark.parametrize("state", ALL_STATES)
def test_progress_field_only_on_progress_events(type_: EventType, state: RunState) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        sm.append_event(make_run(state), dataclasses.replace(DEFAULT_INPUT[type_], progress=5), NOW)
    invalid(excinfo, "progress")


@pytest.mark.parametrize("type_", [t for t in ALL_TYPES if t is not EventType.PROGRESS])
def test_integer_msg_on_other_events_is_just_a_msg(type_: EventType) -> None:
    state = {EventType.ASSIGNED: P, EventType.STARTED: P, EventType.RETRIED: F}.get(type_, R)
    run = make_run(state)
    t = sm.append_event(run, dataclasses.replace(DEFAULT_INPUT[type_], msg="77"), NOW)
    assert t.run.attempt.progress != 77
    assert all(e.progress is None for e in t.events)


# -- INFO and ERROR ---------------------------------------------------------------------------


@pytest.mark.parametrize("type_", [EventType.INFO, EventType.ERROR])
@pytest.mark.parametrize("state", NON_TERMINAL)
def test_info_and_error_change_nothing_but_the_timeline(type_: EventType, state: RunState) -> None:
    run = make_run(state)
    payload = {"detail": {"k": [1.0, "two"]}}
    t = sm.append_event(run, ev(type_, "note", payload=payload), NOW)
    assert t.run.attempt == run.attempt
    assert dataclasses.replace(t.run, last_seq=run.last_seq, updated_at=run.updated_at) == run
    (event,) = t.events
    assert (event.type, event.msg, event.payload, event.state) == (type_, "note", payload, state)
    assert event.progress is None


# -- COMPLETED --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "outputs"),
    [
        ({"outputs": {"y": 2.0, "nested": {"z": [1.0]}}}, {"y": 2.0, "nested": {"z": [1.0]}}),
        ({"outputs": {}}, {}),
        # No outputs (or null) keeps what the attempt has, e.g. set earlier by UpdateRun.
        ({}, {"partial": 1.0}),
        ({"outputs": None}, {"partial": 1.0}),
        ({"other": 1.0}, {"partial": 1.0}),
    ],
)
def test_completed(payload: JSON, outputs: JSON) -> None:
    run = make_run(R, progress=30, outputs={"partial": 1.0})
    t = sm.append_event(run, ev(EventType.COMPLETED, "done", payload=payload), NOW)
    att = t.run.attempt
    assert t.run.state is C
    assert att.outputs == outputs  # replaced when given, never merged
    assert att.progress == 100
    assert att.summary.duration_ms == 1500
    assert att.finished_at == NOW
    assert att.summary.worker_id == "w-1"
    assert (t.events[0].msg, t.events[0].payload) == ("done", payload)
    assert_timeline(run, t)


@pytest.mark.parametrize("outputs", [[1.0], "x", 3.0, True])
def test_completed_rejects_non_object_outputs(outputs: Any) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        sm.append_event(make_run(R), ev(EventType.COMPLETED, payload={"outputs": outputs}), NOW)
    invalid(excinfo, "payload.outputs")


@pytest.mark.parametrize(
    ("started_at", "duration_ms"),
    [
        (None, 0),
        (NOW, 0),
        (NOW - timedelta(milliseconds=1), 1),
        (NOW - timedelta(hours=2), 7_200_000),
        (NOW + timedelta(seconds=5), 0),  # a clock that went backwards never yields < 0
    ],
)
def test_duration_ms(started_at: datetime | None, duration_ms: int) -> None:
    run = make_run(R, started_at=started_at)
    for t in (
        sm.append_event(run, DEFAULT_INPUT[EventType.COMPLETED], NOW),
        sm.append_event(run, DEFAULT_INPUT[EventType.FAILED], NOW),
        sm.append_event(run, DEFAULT_INPUT[EventType.CANCELLED], NOW),
        sm.cancel(run, "", NOW),
        sm.set_state(run, C, NOW),
        sm.set_state(run, F, NOW),
    ):
        assert t.run.attempt.summary.duration_ms == duration_ms


# -- FAILED and automatic retries --------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "msg", "error_message"),
    [
        ({"error_message": "oom"}, "", "oom"),
        ({"error_message": "oom"}, "ignored for the summary", "oom"),
        ({}, "from msg", "from msg"),
        ({}, "", ""),
        ({"error_message": ""}, "from msg", ""),
    ],
)
@pytest.mark.parametrize("state", [A, R])
def test_failed_final(state: RunState, payload: JSON, msg: str, error_message: str) -> None:
    run = make_run(state, attempt=1, max_attempts=1)
    t = sm.append_event(run, ev(EventType.FAILED, msg, payload=payload), NOW)
    assert t.run.state is F
    assert t.run.current_attempt == 1
    assert not t.started_new_attempt
    att = t.run.attempt
    assert att.summary.error_message == error_message
    assert att.finished_at == NOW
    assert att.summary.duration_ms == (1500 if state is R else 0)
    assert [(e.type, e.state, e.attempt, e.msg) for e in t.events] == [
        (EventType.FAILED, F, 1, msg)
    ]
    assert_timeline(run, t)


def test_failed_rejects_non_string_error_message() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        sm.append_event(make_run(R), ev(EventType.FAILED, payload={"error_message": 1.0}), NOW)
    invalid(excinfo, "payload.error_message")


@pytest.mark.parametrize(
    ("current", "max_attempts", "retried"),
    [
        (1, 1, False),
        (1, 2, True),
        (2, 2, False),
        (1, 3, True),
        (2, 3, True),
        (3, 3, False),
        (4, 2, False),  # past max_attempts after manual retries: no automatic one
    ],
)
def test_failed_retries_while_attempts_remain(
    current: int, max_attempts: int, retried: bool
) -> None:
    run = make_run(R, attempt=current, max_attempts=max_attempts, progress=60, outputs={"o": 1})
    t = sm.append_event(run, ev(EventType.FAILED, payload={"error_message": "oom"}), NOW)
    assert_timeline(run, t)
    if not retried:
        assert (t.run.state, t.run.current_attempt, len(t.events)) == (F, current, 1)
        return
    failed, retry = t.events
    assert (failed.type, failed.state, failed.attempt) == (EventType.FAILED, F, current)
    assert (retry.type, retry.state, retry.attempt) == (EventType.RETRIED, P, current + 1)
    assert retry.payload == {"force": False, "failed_attempt": current}
    assert f"attempt {current} of {max_attempts}" in retry.msg
    # The failed attempt is closed as FAILED, with its error.
    closed = t.closed_attempt
    assert closed is not None
    assert (closed.number, closed.state, closed.finished_at) == (current, F, NOW)
    assert closed.summary.error_message == "oom"
    assert closed.outputs == {"o": 1}
    assert closed.id == run.attempt.id
    # The run is PENDING on a fresh attempt.
    assert (t.run.state, t.run.current_attempt) == (P, current + 1)
    assert_fresh_attempt(t.run.attempt, current + 1)
    assert t.run.attempt.id != run.attempt.id


def assert_fresh_attempt(att: Attempt, number: int) -> None:
    assert (att.number, att.state, att.progress, att.outputs) == (number, P, 0, {})
    assert att.summary == ExecutionSummary()
    assert (att.started_at, att.finished_at, att.created_at) == (None, None, NOW)
    assert att.run_id == RUN_ID


# -- CANCELLED --------------------------------------------------------------------------------


@pytest.mark.parametrize(("msg", "expected"), [("", "Cancelled by user"), ("stop", "stop")])
@pytest.mark.parametrize("state", NON_TERMINAL)
def test_cancelled_event(state: RunState, msg: str, expected: str) -> None:
    run = make_run(state, max_attempts=5)
    t = sm.append_event(run, ev(EventType.CANCELLED, msg, payload={"by": "op"}), NOW)
    assert t.run.state is X
    assert t.run.current_attempt == 1  # never retried automatically
    assert [(e.type, e.msg, e.state, e.payload) for e in t.events] == [
        (EventType.CANCELLED, expected, X, {"by": "op"})
    ]
    assert t.run.attempt.finished_at == NOW
    assert_timeline(run, t)


# -- RETRIED ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "payload", "expected_msg", "expected_payload"),
    [
        ("", {}, "Manual retry", {"force": True}),
        ("again", {"force": True, "who": "op"}, "again", {"force": True, "who": "op"}),
        # A RETRIED event is always a manual, forced retry, whatever its payload says.
        ("again", {"who": "op", "force": False}, "again", {"force": True, "who": "op"}),
    ],
)
@pytest.mark.parametrize("state", TERMINAL)
def test_retried_event(
    state: RunState, msg: str, payload: JSON, expected_msg: str, expected_payload: JSON
) -> None:
    run = make_run(state, attempt=1, max_attempts=1)  # a manual retry ignores max_attempts
    t = sm.append_event(run, ev(EventType.RETRIED, msg, payload=payload), NOW)
    assert (t.run.state, t.run.current_attempt) == (P, 2)
    (event,) = t.events
    assert (event.type, event.state, event.attempt) == (EventType.RETRIED, P, 2)
    assert (event.msg, event.payload) == (expected_msg, expected_payload)
    assert t.closed_attempt == run.attempt
    assert_fresh_attempt(t.run.attempt, 2)
    assert_timeline(run, t)


# -- fencing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stale", [1, 2, 4, 99])
@pytest.mark.parametrize(("type_", "state"), MATRIX)
def test_stale_attempt_is_fenced_off(type_: EventType, state: RunState, stale: int) -> None:
    run = make_run(state, attempt=3, max_attempts=9)
    with pytest.raises(FailedPrecondition) as excinfo:
        sm.append_event(run, dataclasses.replace(DEFAULT_INPUT[type_], attempt=stale), NOW)
    precondition(excinfo, "STALE_ATTEMPT", str(stale), "3", RUN_ID)
    assert excinfo.value.metadata == {"attempt": str(stale), "current_attempt": "3"}


@pytest.mark.parametrize("bad", [0, -1, -(2**31)])
@pytest.mark.parametrize(("type_", "state"), MATRIX)
def test_non_positive_attempt_is_invalid(type_: EventType, state: RunState, bad: int) -> None:
    run = make_run(state, attempt=3)
    with pytest.raises(InvalidArgument) as excinfo:
        sm.append_event(run, dataclasses.replace(DEFAULT_INPUT[type_], attempt=bad), NOW)
    invalid(excinfo, "attempt")


# -- seqs and attempts across a whole life ------------------------------------------------------


def test_a_whole_life_has_gap_free_seqs_across_attempts() -> None:
    run = make_run(P, last_seq=-1, max_attempts=2)
    steps: list[Callable[[Run], Transition]] = [
        lambda r: sm.append_event(r, ev(EventType.ASSIGNED, payload={"worker_id": "a"}), NOW),
        lambda r: sm.append_event(r, ev(EventType.STARTED, attempt=1), NOW),
        lambda r: sm.append_event(r, ev(EventType.PROGRESS, "50", attempt=1), NOW),
        lambda r: sm.append_event(r, ev(EventType.INFO, "log"), NOW),
        lambda r: sm.append_event(r, ev(EventType.FAILED, "x", attempt=1), NOW),  # + RETRIED
        lambda r: sm.append_event(r, ev(EventType.STARTED, attempt=2), NOW),
        lambda r: sm.append_event(r, ev(EventType.ERROR, "hmm", attempt=2), NOW),
        lambda r: sm.append_event(r, ev(EventType.COMPLETED, attempt=2), NOW),
        lambda r: sm.retry(r, NOW),
        lambda r: sm.update(r, NOW, state=RunState.ASSIGNED),
        lambda r: sm.update(r, NOW, priority=1),  # no event
        lambda r: sm.cancel(r, "", NOW),
        lambda r: sm.append_event(r, ev(EventType.RETRIED), NOW),
    ]
    events: list[Event] = []
    for step in steps:
        t = step(run)
        assert_timeline(run, t)
        events.extend(t.events)
        run = t.run
    assert [e.seq for e in events] == list(range(len(events)))
    assert run.last_seq == len(events) - 1
    assert [(e.type, e.attempt, e.state) for e in events] == [
        (EventType.ASSIGNED, 1, A),
        (EventType.STARTED, 1, R),
        (EventType.PROGRESS, 1, R),
        (EventType.INFO, 1, R),
        (EventType.FAILED, 1, F),
        (EventType.RETRIED, 2, P),
        (EventType.STARTED, 2, R),
        (EventType.ERROR, 2, R),
        (EventType.COMPLETED, 2, C),
        (EventType.RETRIED, 3, P),
        (EventType.ASSIGNED, 3, A),
        (EventType.CANCELLED, 3, X),
        (EventType.RETRIED, 4, P),
    ]
    assert (run.state, run.current_attempt, run.priority) == (P, 4, 1)


@pytest.mark.parametrize("last_seq", [-1, 0, 41, 2**40])
def test_next_seq_follows_last_seq(last_seq: int) -> None:
    run = make_run(R, last_seq=last_seq, max_attempts=2)
    t = sm.append_event(run, ev(EventType.FAILED), NOW)
    assert [e.seq for e in t.events] == [last_seq + 1, last_seq + 2]
    assert t.run.last_seq == last_seq + 2


# -- cancel() ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "msg"), [("", "Cancelled by user"), ("no longer needed", None)])
@pytest.mark.parametrize("state", NON_TERMINAL)
def test_cancel(state: RunState, reason: str, msg: str | None) -> None:
    run = make_run(state, max_attempts=3)
    t = sm.cancel(run, reason, NOW)
    assert t.run.state is X
    assert not t.started_new_attempt
    assert [(e.type, e.msg, e.state, e.attempt, e.payload) for e in t.events] == [
        (EventType.CANCELLED, msg or reason, X, 1, {})
    ]
    assert t.run.attempt.finished_at == NOW
    assert_timeline(run, t)


@pytest.mark.parametrize("state", TERMINAL)
def test_cancel_terminal_is_locked(state: RunState) -> None:
    with pytest.raises(FailedPrecondition) as excinfo:
        sm.cancel(make_run(state), "why", NOW)
    precondition(excinfo, "RUN_LOCKED")
    assert excinfo.value.message == f"run is already in terminal state {state.value}"


def test_cancel_message_for_completed_is_the_documented_one() -> None:
    with pytest.raises(FailedPrecondition, match=r"^run is already in terminal state COMPLETED$"):
        sm.cancel(make_run(C), "", NOW)


# -- retry() ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "max_attempts"), [(1, 1), (3, 3), (7, 2)])
@pytest.mark.parametrize("state", TERMINAL)
def test_retry(state: RunState, attempt: int, max_attempts: int) -> None:
    run = make_run(state, attempt=attempt, max_attempts=max_attempts)
    t = sm.retry(run, NOW)
    assert (t.run.state, t.run.current_attempt) == (P, attempt + 1)
    assert t.started_new_attempt
    assert t.closed_attempt == run.attempt
    assert [(e.type, e.msg, e.payload, e.state, e.attempt) for e in t.events] == [
        (EventType.RETRIED, "Manual retry", {"force": True}, P, attempt + 1)
    ]
    assert_fresh_attempt(t.run.attempt, attempt + 1)
    # Everything that describes the run itself carries over.
    keep = ("id", "priority", "image", "inputs", "constraints", "retry_policy", "created_at")
    assert all(getattr(t.run, k) == getattr(run, k) for k in keep)
    assert_timeline(run, t)


@pytest.mark.parametrize("state", NON_TERMINAL)
def test_retry_non_terminal_is_refused(state: RunState) -> None:
    with pytest.raises(FailedPrecondition) as excinfo:
        sm.retry(make_run(state), NOW)
    precondition(excinfo, "RUN_NOT_TERMINAL", state)


# -- update() and set_fields() ----------------------------------------------------------------


@pytest.mark.parametrize("state", ALL_STATES)
def test_update_without_changes_is_a_no_op(state: RunState) -> None:
    run = make_run(state)
    t = sm.update(run, NOW)
    assert (t.run, t.events, t.closed_attempt) == (run, (), None)


@pytest.mark.parametrize(
    ("outputs", "priority"),
    [({"a": 1.0}, None), (None, 9), ({"a": 1.0}, 0), ({}, -3)],
)
@pytest.mark.parametrize("state", ALL_STATES)
def test_update_fields_in_every_state_terminal_included(
    state: RunState, outputs: JSON | None, priority: int | None
) -> None:
    run = make_run(state, outputs={"old": 1, "other": 2})
    t = sm.update(run, NOW, outputs=outputs, priority=priority)
    assert t.events == ()
    assert t.run.state is state
    assert t.run.last_seq == run.last_seq
    assert t.run.updated_at == NOW
    assert t.run.attempt.outputs == (run.attempt.outputs if outputs is None else outputs)
    assert t.run.priority == (run.priority if priority is None else priority)
    assert t.run.attempt.progress == run.attempt.progress
    assert t.run.current_attempt == run.current_attempt


def test_update_state_outputs_and_priority_together() -> None:
    run = make_run(R, outputs={"partial": 1.0})
    t = sm.update(run, NOW, state=C, outputs={"final": 2.0}, priority=8)
    assert (t.run.state, t.run.priority, t.run.attempt.outputs) == (C, 8, {"final": 2.0})
    assert t.run.attempt.progress == 100
    assert [(e.type, e.msg) for e in t.events] == [(EventType.COMPLETED, sm.UPDATE_MSG)]
    assert_timeline(run, t)


@pytest.mark.parametrize("state", TERMINAL)
def test_update_retry_edits_the_new_attempt(state: RunState) -> None:
    run = make_run(state, outputs={"old": 1})
    t = sm.update(run, NOW, state=P, outputs={"seed": 1.0}, priority=1)
    assert (t.run.state, t.run.current_attempt, t.run.priority) == (P, 2, 1)
    assert t.run.attempt.outputs == {"seed": 1.0}
    assert t.closed_attempt == run.attempt  # the closed attempt keeps its outputs
    assert [e.type for e in t.events] == [EventType.RETRIED]


@pytest.mark.parametrize(("state", "target"), FORBIDDEN)
def test_update_illegal_state_applies_nothing(state: RunState, target: RunState) -> None:
    with pytest.raises(FailedPrecondition) as excinfo:
        sm.update(make_run(state), NOW, state=target, outputs={"a": 1.0}, priority=1)
    precondition(excinfo, "RUN_LOCKED" if state.is_terminal else "ILLEGAL_TRANSITION")


def test_set_fields_touches_neither_timeline_nor_state() -> None:
    run = make_run(C)
    edited = sm.set_fields(run, NOW, outputs={"fixed": True}, priority=2)
    assert edited == dataclasses.replace(
        run,
        priority=2,
        updated_at=NOW,
        attempt=dataclasses.replace(run.attempt, outputs={"fixed": True}),
    )


# -- purity: inputs are never mutated, `now` is the only time ---------------------------------

OPERATIONS: list[tuple[str, RunState, Callable[[Run], Any]]] = [
    *(
        (f"append_event {t}", s, lambda r, t=t: sm.append_event(r, DEFAULT_INPUT[t], NOW))
        for t, s in [
            (EventType.ASSIGNED, P),
            (EventType.STARTED, A),
            (EventType.INFO, R),
            (EventType.PROGRESS, R),
            (EventType.COMPLETED, R),
            (EventType.FAILED, R),
            (EventType.CANCELLED, R),
            (EventType.ERROR, R),
            (EventType.RETRIED, F),
        ]
    ),
    ("auto retry", R, lambda r: sm.append_event(r, ev(EventType.FAILED), NOW)),
    ("cancel", R, lambda r: sm.cancel(r, "x", NOW)),
    ("retry", C, lambda r: sm.retry(r, NOW)),
    *((f"set_state {s}->{t}", s, lambda r, t=t: sm.set_state(r, t, NOW)) for s, t in ALLOWED),
    ("set_fields", C, lambda r: sm.set_fields(r, NOW, outputs={"n": 1.0}, priority=1)),
    ("update", F, lambda r: sm.update(r, NOW, state=P, outputs={"n": 1.0}, priority=1)),
]


@pytest.mark.parametrize(
    ("state", "op"), [(s, op) for _, s, op in OPERATIONS], ids=[n for n, _, _ in OPERATIONS]
)
def test_operations_do_not_mutate_their_input_and_use_now(
    state: RunState, op: Callable[[Run], Any]
) -> None:
    run = make_run(state, max_attempts=2)
    snapshot = copy.deepcopy(run)
    result = op(run)
    assert run == snapshot
    new = result if isinstance(result, Run) else result.run
    assert new is not run
    assert new.updated_at == NOW
    # Every time in the result is NOW or one the input already had: no wall clock.
    records = [new, new.attempt, *getattr(result, "events", ())]
    if getattr(result, "closed_attempt", None) is not None:
        records.append(result.closed_attempt)
    times = {v for rec in records for v in dataclasses.astuple(rec) if isinstance(v, datetime)}
    assert times <= {NOW, CREATED, STARTED, FINISHED}


def test_values_are_frozen() -> None:
    run = make_run(R)
    t = sm.append_event(run, ev(EventType.INFO), NOW)
    for value, name in [
        (run, "state"),
        (run.attempt, "progress"),
        (run.attempt.summary, "worker_id"),
        (t, "run"),
        (t.events[0], "seq"),
        (DEFAULT_INPUT[EventType.INFO], "msg"),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)


def test_errors_are_gyoza_errors() -> None:
    assert issubclass(FailedPrecondition, GyozaError)
    assert issubclass(InvalidArgument, GyozaError)
