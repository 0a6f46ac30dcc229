"""AddEvent for every event type, ListEvents and ListAttempts."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gyoza.v1 import runs_pb2
from tests.service.helpers import (
    TERMINAL,
    S,
    Stub,
    add,
    as_dict,
    attempts,
    create,
    error_reason,
    events,
    fails,
    get,
    in_state,
    invalid,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def runs(shared_runs: Stub) -> Stub:
    return shared_runs


NAMES = {v: k.removeprefix("RUN_STATE_") for k, v in runs_pb2.RunState.items()}
TYPES = {v: k.removeprefix("EVENT_TYPE_") for k, v in runs_pb2.EventType.items()}


# -- ASSIGNED / STARTED ------------------------------------------------------------------


async def test_assigned(runs: Stub) -> None:
    run = await create(runs)
    resp = await add(runs, run.id, S.EVENT_TYPE_ASSIGNED, msg="to w7", payload={"worker_id": "w7"})
    assert resp.run.state == S.RUN_STATE_ASSIGNED
    assert resp.run.execution_summary.worker_id == "w7"
    e = resp.event
    assert (e.seq, e.attempt, e.type, e.msg, e.state, e.run_id) == (
        0,
        1,
        S.EVENT_TYPE_ASSIGNED,
        "to w7",
        S.RUN_STATE_ASSIGNED,
        run.id,
    )
    assert as_dict(e.payload) == {"worker_id": "w7"}
    assert not e.HasField("progress")
    assert resp.run.last_seq == 0
    assert await events(runs, run.id) == [e]
    assert await get(runs, run.id) == resp.run


@pytest.mark.parametrize("source", [S.RUN_STATE_PENDING, S.RUN_STATE_ASSIGNED], ids=NAMES.get)
async def test_started(runs: Stub, source: int) -> None:
    run = await in_state(runs, source)
    resp = await add(
        runs, run.id, S.EVENT_TYPE_STARTED, payload={"worker_id": "gpu-box", "gpu_id": 3}
    )
    assert resp.run.state == S.RUN_STATE_RUNNING
    assert resp.event.type == S.EVENT_TYPE_STARTED
    assert resp.event.state == S.RUN_STATE_RUNNING
    summary = resp.run.execution_summary
    assert summary.worker_id == "gpu-box"
    assert summary.HasField("gpu_id") and summary.gpu_id == 3
    (attempt,) = await attempts(runs, run.id)
    assert attempt.state == S.RUN_STATE_RUNNING
    assert attempt.HasField("started_at")
    assert attempt.started_at == resp.event.time
    assert not attempt.HasField("finished_at")
    assert attempt.execution_summary == summary


async def test_started_without_gpu_keeps_gpu_unset(runs: Stub) -> None:
    run = await create(runs)
    resp = await add(runs, run.id, S.EVENT_TYPE_STARTED, payload={"worker_id": "w"})
    assert not resp.run.execution_summary.HasField("gpu_id")


@pytest.mark.parametrize("payload", [{"gpu_id": 1.5}, {"gpu_id": "one"}, {"gpu_id": -1}])
async def test_started_bad_gpu_id_invalid(runs: Stub, payload: dict[str, object]) -> None:
    run = await create(runs)
    await invalid(add(runs, run.id, S.EVENT_TYPE_STARTED, payload=payload), "payload.gpu_id")
    assert (await get(runs, run.id)).state == S.RUN_STATE_PENDING


async def test_worker_id_must_be_a_string(runs: Stub) -> None:
    run = await create(runs)
    await invalid(
        add(runs, run.id, S.EVENT_TYPE_ASSIGNED, payload={"worker_id": 7}), "payload.worker_id"
    )


@pytest.mark.parametrize(
    ("source", "type_"),
    [
        (S.RUN_STATE_RUNNING, S.EVENT_TYPE_STARTED),
        (S.RUN_STATE_RUNNING, S.EVENT_TYPE_ASSIGNED),
        (S.RUN_STATE_ASSIGNED, S.EVENT_TYPE_ASSIGNED),
        (S.RUN_STATE_PENDING, S.EVENT_TYPE_COMPLETED),
        (S.RUN_STATE_ASSIGNED, S.EVENT_TYPE_COMPLETED),
        (S.RUN_STATE_PENDING, S.EVENT_TYPE_FAILED),
    ],
    ids=lambda v: f"{v}",
)
async def test_event_with_illegal_transition_refused(runs: Stub, source: int, type_: int) -> None:
    run = await in_state(runs, source)
    before = await get(runs, run.id, full=True)
    err = await fails(add(runs, run.id, type_), grpc.StatusCode.FAILED_PRECONDITION)
    assert NAMES[source] in err.details()
    assert await get(runs, run.id, full=True) == before


# -- PROGRESS ----------------------------------------------------------------------------


async def test_progress_field(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    for value in (0, 42, 100):
        resp = await add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=value)
        assert resp.run.progress == value
        assert resp.event.HasField("progress") and resp.event.progress == value
        assert resp.event.state == S.RUN_STATE_RUNNING
    assert (await get(runs, run.id)).progress == 100


@pytest.mark.parametrize(("msg", "value"), [("57", 57), ("0", 0), ("100", 100), (" 7 ", 7)])
async def test_progress_from_integer_msg(runs: Stub, msg: str, value: int) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    resp = await add(runs, run.id, S.EVENT_TYPE_PROGRESS, msg=msg)
    assert resp.run.progress == value
    assert resp.event.progress == value
    assert resp.event.msg == msg


async def test_progress_field_wins_over_msg(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    resp = await add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=30, msg="halfway")
    assert resp.run.progress == 30 and resp.event.msg == "halfway"


async def test_progress_before_running_sets_progress_without_state_change(runs: Stub) -> None:
    run = await create(runs)
    resp = await add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=5)
    assert (resp.run.state, resp.run.progress) == (S.RUN_STATE_PENDING, 5)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"msg": "abc"}, "progress"),
        ({"msg": ""}, "progress"),
        ({"msg": "12.5"}, "progress"),
        ({"msg": "50%"}, "progress"),
        ({"msg": "101"}, "msg"),
        ({"msg": "-1"}, "msg"),
        ({"progress": 101}, "progress"),
        ({"progress": -1}, "progress"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v,
)
async def test_bad_progress_invalid(runs: Stub, fields: dict[str, object], field: str) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    await add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=10)
    n = len(await events(runs, run.id))
    await invalid(add(runs, run.id, S.EVENT_TYPE_PROGRESS, **fields), field)
    got = await get(runs, run.id)
    assert got.progress == 10
    assert len(await events(runs, run.id)) == n == got.last_seq + 1


async def test_progress_field_on_other_types_invalid(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    await invalid(add(runs, run.id, S.EVENT_TYPE_INFO, progress=5), "progress")


# -- INFO / ERROR ------------------------------------------------------------------------


@pytest.mark.parametrize("type_", [S.EVENT_TYPE_INFO, S.EVENT_TYPE_ERROR], ids=TYPES.get)
@pytest.mark.parametrize(
    "source", [S.RUN_STATE_PENDING, S.RUN_STATE_ASSIGNED, S.RUN_STATE_RUNNING], ids=NAMES.get
)
async def test_info_and_error_change_no_state(runs: Stub, type_: int, source: int) -> None:
    run = await in_state(runs, source)
    resp = await add(runs, run.id, type_, msg="note", payload={"k": [1, 2]})
    assert resp.run.state == source
    assert resp.run.progress == run.progress
    assert resp.run.execution_summary == run.execution_summary
    assert (resp.event.type, resp.event.msg, resp.event.state) == (type_, "note", source)
    assert as_dict(resp.event.payload) == {"k": [1, 2]}
    assert resp.event.seq == run.last_seq + 1


# -- COMPLETED ---------------------------------------------------------------------------


async def test_completed(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    await add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=40)
    await asyncio.sleep(0.03)  # a lower bound for duration_ms, not a synchronisation
    resp = await add(
        runs, run.id, S.EVENT_TYPE_COMPLETED, msg="done", payload={"outputs": {"url": "s3://x"}}
    )
    assert resp.run.state == S.RUN_STATE_COMPLETED
    assert as_dict(resp.run.outputs) == {"url": "s3://x"}
    assert resp.run.progress == 100
    assert resp.run.execution_summary.duration_ms >= 30
    assert resp.run.execution_summary.worker_id == "w1"
    assert (resp.event.type, resp.event.state, resp.event.msg) == (
        S.EVENT_TYPE_COMPLETED,
        S.RUN_STATE_COMPLETED,
        "done",
    )
    (attempt,) = await attempts(runs, run.id)
    assert attempt.state == S.RUN_STATE_COMPLETED
    assert attempt.finished_at == resp.event.time
    started = attempt.started_at.ToMilliseconds()
    assert attempt.finished_at.ToMilliseconds() - started == pytest.approx(
        resp.run.execution_summary.duration_ms, abs=1
    )
    assert as_dict(attempt.outputs) == {"url": "s3://x"}


async def test_completed_without_outputs(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    resp = await add(runs, run.id, S.EVENT_TYPE_COMPLETED)
    assert resp.run.state == S.RUN_STATE_COMPLETED
    assert as_dict(resp.run.outputs) == {}
    assert resp.run.progress == 100


async def test_completed_outputs_must_be_an_object(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    await invalid(
        add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"outputs": [1, 2]}), "payload.outputs"
    )
    assert (await get(runs, run.id)).state == S.RUN_STATE_RUNNING


# -- FAILED ------------------------------------------------------------------------------


async def test_failed_without_retries_left(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    resp = await add(
        runs, run.id, S.EVENT_TYPE_FAILED, msg="crash", payload={"error_message": "OOM"}
    )
    assert resp.run.state == S.RUN_STATE_FAILED
    assert resp.run.current_attempt == 1
    assert resp.run.execution_summary.error_message == "OOM"
    assert (resp.event.type, resp.event.state) == (S.EVENT_TYPE_FAILED, S.RUN_STATE_FAILED)
    assert [e.type for e in await events(runs, run.id)] == [
        S.EVENT_TYPE_STARTED,
        S.EVENT_TYPE_FAILED,
    ]
    (attempt,) = await attempts(runs, run.id)
    assert attempt.state == S.RUN_STATE_FAILED and attempt.HasField("finished_at")


async def test_failed_msg_is_the_error_message_without_payload(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    resp = await add(runs, run.id, S.EVENT_TYPE_FAILED, msg="segfault")
    assert resp.run.execution_summary.error_message == "segfault"


async def test_failed_with_retries_left_retries_at_once(runs: Stub) -> None:
    policy = runs_pb2.RetryPolicy(max_attempts=3)
    run = await in_state(runs, S.RUN_STATE_RUNNING, retry_policy=policy)

    resp = await add(runs, run.id, S.EVENT_TYPE_FAILED, payload={"error_message": "e1"}, attempt=1)
    # The response's event is the FAILED one; the run is already on its next attempt.
    assert (resp.event.type, resp.event.attempt, resp.event.state, resp.event.seq) == (
        S.EVENT_TYPE_FAILED,
        1,
        S.RUN_STATE_FAILED,
        1,
    )
    assert (resp.run.state, resp.run.current_attempt, resp.run.progress) == (
        S.RUN_STATE_PENDING,
        2,
        0,
    )
    assert resp.run.execution_summary == runs_pb2.ExecutionSummary()
    assert resp.run.last_seq == 2
    tail = (await events(runs, run.id))[1:]
    assert [(e.seq, e.type, e.attempt, e.state) for e in tail] == [
        (1, S.EVENT_TYPE_FAILED, 1, S.RUN_STATE_FAILED),
        (2, S.EVENT_TYPE_RETRIED, 2, S.RUN_STATE_PENDING),
    ]

    # Attempt 2 fails too: attempt 3 (the last one allowed) is made.
    await add(runs, run.id, S.EVENT_TYPE_STARTED, attempt=2)
    resp = await add(runs, run.id, S.EVENT_TYPE_FAILED, payload={"error_message": "e2"}, attempt=2)
    assert (resp.run.state, resp.run.current_attempt) == (S.RUN_STATE_PENDING, 3)

    # Attempt 3 fails: no retry left, the run is FAILED.
    await add(runs, run.id, S.EVENT_TYPE_STARTED, attempt=3)
    resp = await add(runs, run.id, S.EVENT_TYPE_FAILED, payload={"error_message": "e3"}, attempt=3)
    assert (resp.run.state, resp.run.current_attempt) == (S.RUN_STATE_FAILED, 3)
    assert resp.run.execution_summary.error_message == "e3"

    found = await attempts(runs, run.id)
    assert [(a.attempt, a.state, a.execution_summary.error_message) for a in found] == [
        (1, S.RUN_STATE_FAILED, "e1"),
        (2, S.RUN_STATE_FAILED, "e2"),
        (3, S.RUN_STATE_FAILED, "e3"),
    ]
    assert all(a.run_id == run.id for a in found)
    assert len({a.id for a in found}) == 3
    all_events = await events(runs, run.id)
    assert [e.seq for e in all_events] == list(range(len(all_events)))
    assert [TYPES[e.type] for e in all_events] == [
        "STARTED",
        "FAILED",
        "RETRIED",
        "STARTED",
        "FAILED",
        "RETRIED",
        "STARTED",
        "FAILED",
    ]
    assert [e.attempt for e in all_events] == [1, 1, 2, 2, 2, 3, 3, 3]


async def test_failed_from_assigned_is_retried(runs: Stub) -> None:
    policy = runs_pb2.RetryPolicy(max_attempts=2)
    run = await in_state(runs, S.RUN_STATE_ASSIGNED, retry_policy=policy)
    resp = await add(runs, run.id, S.EVENT_TYPE_FAILED)
    assert (resp.run.state, resp.run.current_attempt) == (S.RUN_STATE_PENDING, 2)


# -- CANCELLED / RETRIED as events -------------------------------------------------------


async def test_cancelled_event(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    resp = await add(runs, run.id, S.EVENT_TYPE_CANCELLED)
    assert resp.run.state == S.RUN_STATE_CANCELLED
    assert (resp.event.type, resp.event.msg) == (S.EVENT_TYPE_CANCELLED, "Cancelled by user")
    run2 = await in_state(runs, S.RUN_STATE_PENDING)
    resp = await add(runs, run2.id, S.EVENT_TYPE_CANCELLED, msg="worker gave up")
    assert (resp.run.state, resp.event.msg) == (S.RUN_STATE_CANCELLED, "worker gave up")


@pytest.mark.parametrize("terminal", TERMINAL, ids=NAMES.get)
async def test_retried_event_on_terminal_run(runs: Stub, terminal: int) -> None:
    run = await in_state(runs, terminal)
    resp = await add(runs, run.id, S.EVENT_TYPE_RETRIED)
    assert (resp.run.state, resp.run.current_attempt, resp.run.progress) == (
        S.RUN_STATE_PENDING,
        2,
        0,
    )
    assert (resp.event.type, resp.event.attempt, resp.event.state) == (
        S.EVENT_TYPE_RETRIED,
        2,
        S.RUN_STATE_PENDING,
    )
    assert as_dict(resp.run.outputs) == {}


@pytest.mark.parametrize(
    "source", [S.RUN_STATE_PENDING, S.RUN_STATE_ASSIGNED, S.RUN_STATE_RUNNING], ids=NAMES.get
)
async def test_retried_event_on_live_run_refused(runs: Stub, source: int) -> None:
    run = await in_state(runs, source)
    await fails(add(runs, run.id, S.EVENT_TYPE_RETRIED), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await get(runs, run.id)).current_attempt == 1


# -- locked runs and stale attempts ------------------------------------------------------

LOCKED_TYPES = [
    S.EVENT_TYPE_ASSIGNED,
    S.EVENT_TYPE_STARTED,
    S.EVENT_TYPE_INFO,
    S.EVENT_TYPE_PROGRESS,
    S.EVENT_TYPE_COMPLETED,
    S.EVENT_TYPE_FAILED,
    S.EVENT_TYPE_CANCELLED,
    S.EVENT_TYPE_ERROR,
]


@pytest.mark.parametrize("terminal", TERMINAL, ids=NAMES.get)
async def test_terminal_run_is_locked(runs: Stub, terminal: int) -> None:
    run = await in_state(runs, terminal)
    before = await get(runs, run.id, full=True)
    for type_ in LOCKED_TYPES:
        extra = {"progress": 50} if type_ == S.EVENT_TYPE_PROGRESS else {}
        err = await fails(add(runs, run.id, type_, **extra), grpc.StatusCode.FAILED_PRECONDITION)
        assert f"terminal state {NAMES[terminal]}" in err.details(), (TYPES[type_], err.details())
        assert error_reason(err) == "RUN_LOCKED"
    assert await get(runs, run.id, full=True) == before


async def test_stale_attempt_is_fenced_off(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_CANCELLED)
    await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))
    before = await get(runs, run.id, full=True)
    for type_ in (S.EVENT_TYPE_STARTED, S.EVENT_TYPE_INFO, S.EVENT_TYPE_COMPLETED):
        err = await fails(add(runs, run.id, type_, attempt=1), grpc.StatusCode.FAILED_PRECONDITION)
        assert error_reason(err) == "STALE_ATTEMPT"
        assert "attempt 1" in err.details()
    await fails(
        add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=3, attempt=1),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    # A future attempt is not current either.
    await fails(
        add(runs, run.id, S.EVENT_TYPE_INFO, attempt=3), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert await get(runs, run.id, full=True) == before
    ok = await add(runs, run.id, S.EVENT_TYPE_STARTED, attempt=2)
    assert ok.run.state == S.RUN_STATE_RUNNING and ok.event.attempt == 2


async def test_stale_attempt_checked_before_lock(runs: Stub) -> None:
    """A stale worker learns it is stale, even when the run is terminal now."""
    run = await in_state(runs, S.RUN_STATE_CANCELLED)
    await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))
    await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))
    err = await fails(
        add(runs, run.id, S.EVENT_TYPE_INFO, attempt=1), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error_reason(err) == "STALE_ATTEMPT"


@pytest.mark.parametrize("type_", [0, 10, 99], ids=["unspecified", "10", "99"])
async def test_unknown_event_type_invalid(runs: Stub, type_: int) -> None:
    run = await create(runs)
    await invalid(add(runs, run.id, type_), "type")
    assert (await get(runs, run.id)).last_seq == -1


# -- ListEvents --------------------------------------------------------------------------


async def _timeline(runs: Stub) -> tuple[str, list[runs_pb2.Event]]:
    """A run with 2 attempts and 7 events."""
    run = await in_state(runs, S.RUN_STATE_RUNNING)  # seq 0 STARTED
    for p in (10, 20):
        await add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=p)  # 1, 2
    await add(runs, run.id, S.EVENT_TYPE_FAILED, msg="x")  # 3
    await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))  # 4 RETRIED (attempt 2)
    await add(runs, run.id, S.EVENT_TYPE_INFO, msg="again")  # 5
    await add(runs, run.id, S.EVENT_TYPE_STARTED)  # 6
    return run.id, await events(runs, run.id)


async def test_list_events_in_seq_order_with_after(runs: Stub) -> None:
    run_id, all_events = await _timeline(runs)
    assert [e.seq for e in all_events] == list(range(7))
    assert [e.attempt for e in all_events] == [1, 1, 1, 1, 2, 2, 2]
    assert [e.progress for e in all_events[1:3]] == [10, 20]
    times = [e.time.ToMicroseconds() for e in all_events]
    assert times == sorted(times)
    assert await events(runs, run_id, after=-1) == all_events
    assert await events(runs, run_id, after=0) == all_events[1:]
    assert await events(runs, run_id, after=4) == all_events[5:]
    assert await events(runs, run_id, after=6) == []
    assert await events(runs, run_id, after=100) == []


async def test_list_events_attempt_filter(runs: Stub) -> None:
    run_id, all_events = await _timeline(runs)
    assert await events(runs, run_id, attempt=1) == all_events[:4]
    assert await events(runs, run_id, attempt=2) == all_events[4:]
    assert await events(runs, run_id, attempt=3) == []
    assert await events(runs, run_id, attempt=2, after=4) == all_events[5:]
    assert await events(runs, run_id, attempt=0) == all_events


async def test_list_events_limit_and_has_more(runs: Stub) -> None:
    run_id, _ = await _timeline(runs)

    async def page(**fields: object) -> tuple[list[int], bool]:
        resp = await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run_id, **fields))  # type: ignore[arg-type]
        return [e.seq for e in resp.events], resp.has_more

    assert await page() == (list(range(7)), False)
    assert await page(limit=3) == ([0, 1, 2], True)
    assert await page(limit=3, after=2) == ([3, 4, 5], True)
    assert await page(limit=3, after=3) == ([4, 5, 6], False)
    assert await page(limit=7) == (list(range(7)), False)
    assert await page(limit=6) == (list(range(6)), True)
    assert await page(limit=1000) == (list(range(7)), False)
    assert await page(limit=2, attempt=1) == ([0, 1], True)
    assert await page(limit=2, attempt=1, after=1) == ([2, 3], False)


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"limit": 1001}, "limit"), ({"limit": -1}, "limit"), ({"attempt": -1}, "attempt")],
)
async def test_list_events_bad_arguments(runs: Stub, fields: dict[str, int], field: str) -> None:
    run = await create(runs)
    await invalid(runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run.id, **fields)), field)


async def test_list_events_of_a_new_run_is_empty(runs: Stub) -> None:
    run = await create(runs)
    resp = await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run.id))
    assert list(resp.events) == [] and resp.has_more is False


# -- ListAttempts ------------------------------------------------------------------------


async def test_list_attempts_every_attempt_in_order(runs: Stub) -> None:
    run_id, _ = await _timeline(runs)
    await add(runs, run_id, S.EVENT_TYPE_COMPLETED, payload={"outputs": {"n": 2}})
    await runs.RetryRun(runs_pb2.RetryRunRequest(id=run_id))
    found = await attempts(runs, run_id)
    assert [(a.attempt, a.state) for a in found] == [
        (1, S.RUN_STATE_FAILED),
        (2, S.RUN_STATE_COMPLETED),
        (3, S.RUN_STATE_PENDING),
    ]
    assert [a.progress for a in found] == [20, 100, 0]
    assert [as_dict(a.outputs) for a in found] == [{}, {"n": 2}, {}]
    assert found[0].execution_summary.error_message == "x"
    assert [a.HasField("finished_at") for a in found] == [True, True, False]
    assert [a.HasField("started_at") for a in found] == [True, True, False]
    created = [a.created_at.ToMicroseconds() for a in found]
    assert created == sorted(created)


async def test_list_attempts_of_a_new_run(runs: Stub) -> None:
    run = await create(runs, inputs={"a": 1}, constraints=runs_pb2.Constraints(cpu=2))
    (attempt,) = await attempts(runs, run.id)
    assert (attempt.attempt, attempt.state, attempt.progress, attempt.run_id) == (
        1,
        S.RUN_STATE_PENDING,
        0,
        run.id,
    )
    assert as_dict(attempt.inputs) == {"a": 1}
    assert attempt.constraints.cpu == 2
    assert attempt.id and attempt.id != run.id
