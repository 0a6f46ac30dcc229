"""Pure, table-driven tests of retry backoff and of losing a worker (no I/O).

RetryPolicy.delay_after: how long an automatic retry waits; append_event: an automatic retry's
new attempt is not claimable before now + delay (next_attempt_at), a manual retry is at once;
lose_worker: what eviction does to each state of a run the lost worker held; release: a worker
handing back an attempt it never started.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from gyoza_grpc.domain import state_machine as sm
from gyoza_grpc.domain.errors import FailedPrecondition
from gyoza_grpc.domain.model import (
    MAX_BACKOFF_S,
    Attempt,
    Constraints,
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

NOW = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
CREATED = NOW - timedelta(hours=1)
STARTED = NOW - timedelta(seconds=2)
LOST = "w-lost"
S, MS = timedelta(seconds=1), timedelta(milliseconds=1)


def make_run(
    state: RunState,
    *,
    attempt: int = 1,
    policy: RetryPolicy | None = None,
    next_attempt_at: datetime | None = None,
) -> Run:
    """A run in `state` on attempt `attempt`; ASSIGNED and later belong to worker LOST."""
    att = Attempt(
        run_id="run-1",
        number=attempt,
        id=f"attempt-{attempt}",
        state=state,
        created_at=CREATED,
        summary=ExecutionSummary(worker_id="" if state is P else LOST, gpu_id=None),
        started_at=STARTED if state in (R, C, F) else None,
        finished_at=NOW - S if state.is_terminal else None,
    )
    return Run(
        id="run-1",
        state=state,
        priority=5,
        image="img",
        inputs={},
        constraints=Constraints(cpu=1),
        retry_policy=policy or RetryPolicy(),
        event_delivery=EventDelivery(),
        op_definition="",
        request_id="",
        current_attempt=attempt,
        last_seq=9,
        created_at=CREATED,
        updated_at=CREATED,
        attempt=att,
        next_attempt_at=next_attempt_at,
    )


def assert_seqs(before: Run, t: Transition) -> None:
    assert [e.seq for e in t.events] == list(range(10, 10 + len(t.events)))
    assert t.run.last_seq == before.last_seq + len(t.events)
    assert all(e.time == NOW for e in t.events)
    assert t.run.attempt.number == t.run.current_attempt
    assert t.run.attempt.state is t.run.state


# -- RetryPolicy.delay_after -------------------------------------------------------------------

DELAY_CASES: list[tuple[str, RetryPolicy, int, timedelta]] = [
    ("default: at once", RetryPolicy(max_attempts=5), 1, timedelta(0)),
    ("default: at once, later attempts too", RetryPolicy(max_attempts=5), 4, timedelta(0)),
    ("multiplier without initial: at once", RetryPolicy(backoff_multiplier=3.0), 3, timedelta(0)),
    ("max without initial: at once", RetryPolicy(max_backoff=10 * S), 2, timedelta(0)),
    ("constant: first", RetryPolicy(initial_backoff=S), 1, S),
    ("constant: later", RetryPolicy(initial_backoff=S), 7, S),
    ("doubling: after 1", RetryPolicy(initial_backoff=S, backoff_multiplier=2.0), 1, S),
    ("doubling: after 2", RetryPolicy(initial_backoff=S, backoff_multiplier=2.0), 2, 2 * S),
    ("doubling: after 3", RetryPolicy(initial_backoff=S, backoff_multiplier=2.0), 3, 4 * S),
    ("doubling: after 4", RetryPolicy(initial_backoff=S, backoff_multiplier=2.0), 4, 8 * S),
    (
        "fractional multiplier",
        RetryPolicy(initial_backoff=100 * MS, backoff_multiplier=1.5),
        3,
        225 * MS,
    ),
    (
        "capped by max_backoff",
        RetryPolicy(initial_backoff=S, backoff_multiplier=2.0, max_backoff=5 * S),
        4,
        5 * S,
    ),
    (
        "below the cap",
        RetryPolicy(initial_backoff=S, backoff_multiplier=2.0, max_backoff=5 * S),
        3,
        4 * S,
    ),
    ("cap below initial", RetryPolicy(initial_backoff=10 * S, max_backoff=3 * S), 1, 3 * S),
    ("max_backoff 0 means at once", RetryPolicy(initial_backoff=S, max_backoff=0 * S), 1, 0 * S),
    ("attempt 0 is treated as 1", RetryPolicy(initial_backoff=S, backoff_multiplier=2.0), 0, S),
    (
        "uncapped growth stops at MAX_BACKOFF_S (30 days)",
        RetryPolicy(initial_backoff=S, backoff_multiplier=1000.0),
        5,
        timedelta(seconds=MAX_BACKOFF_S),
    ),
]


@pytest.mark.parametrize(
    ("policy", "failed_attempt", "expected"),
    [c[1:] for c in DELAY_CASES],
    ids=[c[0] for c in DELAY_CASES],
)
def test_delay_after(policy: RetryPolicy, failed_attempt: int, expected: timedelta) -> None:
    assert policy.delay_after(failed_attempt) == expected


@pytest.mark.parametrize(("multiplier", "failed_attempt"), [(1000.0, 104), (2.0, 1100)])
def test_delay_after_never_overflows(multiplier: float, failed_attempt: int) -> None:
    policy = RetryPolicy(initial_backoff=S, backoff_multiplier=multiplier, max_backoff=60 * S)
    assert policy.delay_after(failed_attempt) == 60 * S


# -- append_event: automatic retries wait, manual ones do not ----------------------------------

BACKOFF = RetryPolicy(max_attempts=4, initial_backoff=2 * S, backoff_multiplier=3.0)


@pytest.mark.parametrize(
    ("state", "attempt", "policy", "delay"),
    [
        (R, 1, BACKOFF, 2 * S),
        (R, 2, BACKOFF, 6 * S),
        (R, 3, BACKOFF, 18 * S),
        (A, 1, BACKOFF, 2 * S),  # a worker may fail an attempt it never started
        (R, 1, RetryPolicy(max_attempts=2), None),  # no backoff: claimable at once
        (
            R,
            3,
            RetryPolicy(
                max_attempts=9, initial_backoff=S, backoff_multiplier=10, max_backoff=7 * S
            ),
            7 * S,
        ),
    ],
)
def test_automatic_retry_sets_next_attempt_at(
    state: RunState, attempt: int, policy: RetryPolicy, delay: timedelta | None
) -> None:
    run = make_run(state, attempt=attempt, policy=policy)
    t = sm.append_event(run, EventInput(EventType.FAILED, "boom"), NOW)
    assert_seqs(run, t)
    assert [e.type for e in t.events] == [EventType.FAILED, EventType.RETRIED]
    assert (t.run.state, t.run.current_attempt) == (P, attempt + 1)
    assert t.closed_attempt is not None and t.closed_attempt.state is F
    assert t.run.next_attempt_at == (None if delay is None else NOW + delay)
    retried = t.events[-1].payload
    assert retried["failed_attempt"] == attempt and retried["force"] is False
    if delay is None:
        assert "backoff_ms" not in retried
    else:
        assert retried["backoff_ms"] == delay // MS


def test_last_attempt_fails_for_good_without_a_due_time() -> None:
    run = make_run(R, attempt=4, policy=BACKOFF)
    t = sm.append_event(run, EventInput(EventType.FAILED, "boom"), NOW)
    assert [e.type for e in t.events] == [EventType.FAILED]
    assert (t.run.state, t.run.current_attempt, t.run.next_attempt_at) == (F, 4, None)


DUE = NOW + timedelta(minutes=5)  # a backoff still running when the run was stopped


@pytest.mark.parametrize(
    "do",
    [
        pytest.param(lambda run: sm.retry(run, NOW), id="RetryRun"),
        pytest.param(
            lambda run: sm.append_event(run, EventInput(EventType.RETRIED), NOW),
            id="AddEvent RETRIED",
        ),
        pytest.param(lambda run: sm.set_state(run, P, NOW), id="UpdateRun state=PENDING"),
    ],
)
@pytest.mark.parametrize("state", [C, F, X])
def test_manual_retry_is_claimable_at_once(
    state: RunState, do: Callable[[Run], Transition]
) -> None:
    run = make_run(state, attempt=2, policy=BACKOFF, next_attempt_at=DUE)
    t = do(run)
    assert (t.run.state, t.run.current_attempt) == (P, 3)
    assert t.run.next_attempt_at is None
    assert t.events[-1].payload.get("backoff_ms") is None


def test_a_later_automatic_retry_replaces_the_due_time() -> None:
    run = make_run(R, attempt=2, policy=BACKOFF, next_attempt_at=DUE)
    t = sm.append_event(run, EventInput(EventType.FAILED), NOW)
    assert t.run.next_attempt_at == NOW + 6 * S


# -- lose_worker -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [RetryPolicy(), BACKOFF], ids=["no backoff", "backoff"])
@pytest.mark.parametrize("attempt", [1, 3])
def test_lose_assigned_run_goes_back_to_pending(policy: RetryPolicy, attempt: int) -> None:
    run = make_run(A, attempt=attempt, policy=policy)
    t = sm.lose_worker(run, LOST, NOW)
    assert_seqs(run, t)
    (event,) = t.events
    assert event.type is EventType.RETRIED and event.state is P
    assert f"worker {LOST} lost" in event.msg
    assert event.payload == {"lost_worker": LOST}
    assert event.attempt == attempt + 1
    assert (t.run.state, t.run.current_attempt) == (P, attempt + 1)
    assert t.run.attempt.summary == ExecutionSummary()  # the new attempt has no worker
    assert t.run.next_attempt_at is None  # it never ran: no backoff
    # The closed attempt ends FAILED, so nothing counts it as held by the lost worker.
    closed = t.closed_attempt
    assert closed is not None
    assert (closed.number, closed.state, closed.finished_at) == (attempt, F, NOW)
    assert f"worker {LOST} lost" in closed.summary.error_message
    assert closed.summary.worker_id == LOST


def test_lost_assignment_is_not_counted_against_max_attempts() -> None:
    run = make_run(A, attempt=1, policy=RetryPolicy(max_attempts=2))
    lost = sm.lose_worker(run, LOST, NOW).run
    claimed = sm.append_event(
        lost, EventInput(EventType.ASSIGNED, payload={"worker_id": "w2"}), NOW
    )
    started = sm.append_event(claimed.run, EventInput(EventType.STARTED), NOW)
    failed = sm.append_event(started.run, EventInput(EventType.FAILED, "boom"), NOW)
    # The first real execution failed, one of two allowed: an automatic retry is due.
    assert failed.run.state is P


LOSE_RUNNING: list[tuple[str, RetryPolicy, int, list[EventType], RunState, datetime | None]] = [
    ("last attempt: FAILED", RetryPolicy(), 1, [EventType.FAILED], F, None),
    (
        "attempts left, no backoff: retried at once",
        RetryPolicy(max_attempts=3),
        1,
        [EventType.FAILED, EventType.RETRIED],
        P,
        None,
    ),
    (
        "attempts left, backoff: retried later",
        BACKOFF,
        2,
        [EventType.FAILED, EventType.RETRIED],
        P,
        NOW + 6 * S,
    ),
    ("backoff, but the last attempt", BACKOFF, 4, [EventType.FAILED], F, None),
]


@pytest.mark.parametrize(
    ("policy", "attempt", "types", "state", "due"),
    [c[1:] for c in LOSE_RUNNING],
    ids=[c[0] for c in LOSE_RUNNING],
)
def test_lose_running_run_fails_and_the_retry_policy_applies(
    policy: RetryPolicy,
    attempt: int,
    types: list[EventType],
    state: RunState,
    due: datetime | None,
) -> None:
    run = make_run(R, attempt=attempt, policy=policy)
    t = sm.lose_worker(run, LOST, NOW)
    assert_seqs(run, t)
    assert [e.type for e in t.events] == types
    failed = t.events[0]
    assert failed.msg == f"worker {LOST} lost"
    assert failed.payload == {"error_message": f"worker {LOST} lost", "lost_worker": LOST}
    assert failed.attempt == attempt
    assert t.run.state is state
    assert t.run.next_attempt_at == due
    # The failed attempt records why, and how long it ran.
    ended = t.closed_attempt if state is P else t.run.attempt
    assert ended is not None
    assert (ended.number, ended.state, ended.finished_at) == (attempt, F, NOW)
    assert ended.summary.error_message == f"worker {LOST} lost"
    assert ended.summary.duration_ms == 2000
    assert t.run.current_attempt == (attempt + 1 if state is P else attempt)


@pytest.mark.parametrize("state", [P, C, F, X])
def test_lose_worker_leaves_other_states_alone(state: RunState) -> None:
    run = make_run(state, attempt=2, policy=BACKOFF)
    t = sm.lose_worker(run, LOST, NOW)
    assert t.events == ()
    assert t.run is run
    assert t.closed_attempt is None


# -- release -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 3])
def test_release_puts_an_assigned_run_back_on_the_same_attempt(attempt: int) -> None:
    run = make_run(A, attempt=attempt)
    t = sm.release(run, LOST, attempt, NOW)
    assert_seqs(run, t)
    (event,) = t.events
    assert (event.type, event.state, event.msg) == (EventType.INFO, P, f"Released by worker {LOST}")
    assert event.payload == {"released_by": LOST}
    assert (t.run.state, t.run.current_attempt) == (P, attempt)  # not a new attempt
    assert t.run.uncounted_attempts == run.uncounted_attempts
    assert t.run.attempt.summary == ExecutionSummary()  # no longer anyone's
    assert t.closed_attempt is None


@pytest.mark.parametrize(
    ("state", "worker", "attempt", "reason"),
    [
        (A, "someone-else", 1, "NOT_HELD"),
        (A, LOST, 2, "NOT_HELD"),  # a stale attempt number
        (P, LOST, 1, "NOT_HELD"),
        (C, LOST, 1, "NOT_HELD"),
        (R, LOST, 1, "ALREADY_STARTED"),
    ],
)
def test_release_is_refused_unless_the_holder_never_started(
    state: RunState, worker: str, attempt: int, reason: str
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        sm.release(make_run(state), worker, attempt, NOW)
    assert caught.value.reason == reason
