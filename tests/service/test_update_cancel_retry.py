"""UpdateRun, CancelRun and RetryRun."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

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
    struct,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def runs(shared_runs: Stub) -> Stub:
    return shared_runs


NAMES = {v: k.removeprefix("RUN_STATE_") for k, v in runs_pb2.RunState.items()}

# (from, to) pairs UpdateRun must allow, and the event type that records each.
LEGAL = [
    (S.RUN_STATE_PENDING, S.RUN_STATE_ASSIGNED, S.EVENT_TYPE_ASSIGNED),
    (S.RUN_STATE_PENDING, S.RUN_STATE_RUNNING, S.EVENT_TYPE_STARTED),
    (S.RUN_STATE_PENDING, S.RUN_STATE_CANCELLED, S.EVENT_TYPE_CANCELLED),
    (S.RUN_STATE_ASSIGNED, S.RUN_STATE_RUNNING, S.EVENT_TYPE_STARTED),
    (S.RUN_STATE_ASSIGNED, S.RUN_STATE_CANCELLED, S.EVENT_TYPE_CANCELLED),
    (S.RUN_STATE_RUNNING, S.RUN_STATE_COMPLETED, S.EVENT_TYPE_COMPLETED),
    (S.RUN_STATE_RUNNING, S.RUN_STATE_FAILED, S.EVENT_TYPE_FAILED),
    (S.RUN_STATE_RUNNING, S.RUN_STATE_CANCELLED, S.EVENT_TYPE_CANCELLED),
]

ILLEGAL = [
    (S.RUN_STATE_PENDING, S.RUN_STATE_COMPLETED),
    (S.RUN_STATE_PENDING, S.RUN_STATE_FAILED),
    (S.RUN_STATE_PENDING, S.RUN_STATE_PENDING),
    (S.RUN_STATE_RUNNING, S.RUN_STATE_PENDING),
    (S.RUN_STATE_RUNNING, S.RUN_STATE_ASSIGNED),
    (S.RUN_STATE_RUNNING, S.RUN_STATE_RUNNING),
    (S.RUN_STATE_ASSIGNED, S.RUN_STATE_COMPLETED),
]


def _update(run_id: str, **fields: object) -> runs_pb2.UpdateRunRequest:
    if isinstance(fields.get("outputs"), dict):
        fields["outputs"] = struct(fields["outputs"])  # type: ignore[arg-type]
    if isinstance(fields.get("update_mask"), list):
        fields["update_mask"] = field_mask_pb2.FieldMask(paths=fields["update_mask"])  # type: ignore[arg-type]
    return runs_pb2.UpdateRunRequest(id=run_id, **fields)  # type: ignore[arg-type]


# -- UpdateRun: state --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "event_type"),
    LEGAL,
    ids=[f"{NAMES[a]}->{NAMES[b]}" for a, b, _ in LEGAL],
)
async def test_legal_transition_is_applied_and_recorded(
    runs: Stub, source: int, target: int, event_type: int
) -> None:
    run = await in_state(runs, source)
    before = await events(runs, run.id)
    updated = (await runs.UpdateRun(_update(run.id, state=target))).run
    assert updated.state == target
    assert updated.current_attempt == 1
    after = await events(runs, run.id)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1
    new = after[-1]
    assert (new.type, new.state, new.attempt) == (event_type, target, 1)
    assert new.seq == len(before) == updated.last_seq
    assert await get(runs, run.id) == updated
    if target == S.RUN_STATE_COMPLETED:
        assert updated.progress == 100


async def test_update_assigned_back_to_pending(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_ASSIGNED)
    updated = (await runs.UpdateRun(_update(run.id, state=S.RUN_STATE_PENDING))).run
    assert updated.state == S.RUN_STATE_PENDING
    assert updated.current_attempt == 1
    assert updated.execution_summary.worker_id == ""
    last = (await events(runs, run.id))[-1]
    assert last.state == S.RUN_STATE_PENDING


@pytest.mark.parametrize(
    ("source", "target"), ILLEGAL, ids=[f"{NAMES[a]}->{NAMES[b]}" for a, b in ILLEGAL]
)
async def test_illegal_transition_names_both_states(runs: Stub, source: int, target: int) -> None:
    run = await in_state(runs, source)
    before = await get(runs, run.id, full=True)
    err = await fails(
        runs.UpdateRun(_update(run.id, state=target)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert NAMES[source] in err.details() and NAMES[target] in err.details(), err.details()
    assert await get(runs, run.id, full=True) == before


async def test_unspecified_state_invalid(runs: Stub) -> None:
    run = await create(runs)
    await invalid(runs.UpdateRun(_update(run.id, state=S.RUN_STATE_UNSPECIFIED)), "state")
    await invalid(
        runs.UpdateRun(_update(run.id, update_mask=["state"])), "state"
    )  # masked but unset: UNSPECIFIED
    assert (await get(runs, run.id)).state == S.RUN_STATE_PENDING


async def test_unknown_state_number_invalid(runs: Stub) -> None:
    run = await create(runs)
    await invalid(runs.UpdateRun(_update(run.id, state=42)), "state")


async def test_unknown_mask_path_invalid(runs: Stub) -> None:
    run = await create(runs)
    err = await invalid(
        runs.UpdateRun(_update(run.id, priority=1, update_mask=["priority", "image"])),
        "update_mask",
    )
    assert "image" in err.details()
    assert (await get(runs, run.id)).priority == 5


async def test_nothing_to_update_invalid(runs: Stub) -> None:
    run = await create(runs)
    await invalid(runs.UpdateRun(_update(run.id)), "update_mask")


async def test_update_mask_selects_fields(runs: Stub) -> None:
    run = await create(runs)
    updated = (
        await runs.UpdateRun(
            _update(
                run.id,
                state=S.RUN_STATE_ASSIGNED,
                priority=8,
                outputs={"x": 1},
                update_mask=["priority"],
            )
        )
    ).run
    assert updated.priority == 8
    assert updated.state == S.RUN_STATE_PENDING
    assert as_dict(updated.outputs) == {}
    assert await events(runs, run.id) == []


# -- UpdateRun: outputs and priority -----------------------------------------------------


async def test_outputs_replace(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    first = (await runs.UpdateRun(_update(run.id, outputs={"a": 1, "b": "two"}))).run
    assert as_dict(first.outputs) == {"a": 1, "b": "two"}
    second = (await runs.UpdateRun(_update(run.id, outputs={"c": [1, 2]}))).run
    assert as_dict(second.outputs) == {"c": [1, 2]}
    assert as_dict((await get(runs, run.id)).outputs) == {"c": [1, 2]}
    # An empty outputs under the mask clears them.
    cleared = (await runs.UpdateRun(_update(run.id, update_mask=["outputs"]))).run
    assert as_dict(cleared.outputs) == {}
    assert cleared.state == S.RUN_STATE_RUNNING


async def test_priority(runs: Stub) -> None:
    run = await create(runs)
    updated = (await runs.UpdateRun(_update(run.id, priority=9))).run
    assert updated.priority == 9
    assert (await runs.UpdateRun(_update(run.id, priority=0))).run.priority == 0
    assert (await get(runs, run.id)).priority == 0
    assert (await get(runs, run.id)).state == S.RUN_STATE_PENDING
    assert updated.updated_at.ToMicroseconds() >= run.updated_at.ToMicroseconds()


async def test_state_and_fields_together(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    updated = (
        await runs.UpdateRun(
            _update(run.id, state=S.RUN_STATE_COMPLETED, outputs={"r": 1}, priority=2)
        )
    ).run
    assert updated.state == S.RUN_STATE_COMPLETED
    assert as_dict(updated.outputs) == {"r": 1}
    assert updated.priority == 2


@pytest.mark.parametrize("terminal", TERMINAL, ids=[NAMES[s] for s in TERMINAL])
async def test_terminal_run_accepts_outputs_and_priority(runs: Stub, terminal: int) -> None:
    run = await in_state(runs, terminal)
    n_events = len(await events(runs, run.id))
    updated = (await runs.UpdateRun(_update(run.id, outputs={"fixed": True}, priority=7))).run
    assert updated.state == terminal
    assert updated.priority == 7
    assert as_dict(updated.outputs) == {"fixed": True}
    assert len(await events(runs, run.id)) == n_events


@pytest.mark.parametrize("terminal", TERMINAL, ids=[NAMES[s] for s in TERMINAL])
@pytest.mark.parametrize(
    "target",
    [
        S.RUN_STATE_ASSIGNED,
        S.RUN_STATE_RUNNING,
        S.RUN_STATE_COMPLETED,
        S.RUN_STATE_FAILED,
        S.RUN_STATE_CANCELLED,
    ],
    ids=lambda s: NAMES[s],
)
async def test_terminal_run_refuses_state_change(runs: Stub, terminal: int, target: int) -> None:
    run = await in_state(runs, terminal)
    err = await fails(
        runs.UpdateRun(_update(run.id, state=target, priority=1)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert NAMES[terminal] in err.details() and NAMES[target] in err.details()
    assert error_reason(err) == "RUN_LOCKED"
    got = await get(runs, run.id)
    assert (got.state, got.priority) == (terminal, 5)


@pytest.mark.parametrize("terminal", TERMINAL, ids=[NAMES[s] for s in TERMINAL])
async def test_terminal_run_to_pending_is_a_retry(runs: Stub, terminal: int) -> None:
    run = await in_state(runs, terminal)
    updated = (await runs.UpdateRun(_update(run.id, state=S.RUN_STATE_PENDING))).run
    assert updated.state == S.RUN_STATE_PENDING
    assert updated.current_attempt == 2
    assert updated.progress == 0
    last = (await events(runs, run.id))[-1]
    assert (last.type, last.attempt, last.state) == (S.EVENT_TYPE_RETRIED, 2, S.RUN_STATE_PENDING)


# -- CancelRun ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [S.RUN_STATE_PENDING, S.RUN_STATE_ASSIGNED, S.RUN_STATE_RUNNING],
    ids=lambda s: NAMES[s],
)
async def test_cancel_default_message(runs: Stub, source: int) -> None:
    run = await in_state(runs, source)
    cancelled = (await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))).run
    assert cancelled.state == S.RUN_STATE_CANCELLED
    last = (await events(runs, run.id))[-1]
    assert (last.type, last.msg, last.state) == (
        S.EVENT_TYPE_CANCELLED,
        "Cancelled by user",
        S.RUN_STATE_CANCELLED,
    )
    assert last.seq == cancelled.last_seq
    (attempt,) = await attempts(runs, run.id)
    assert attempt.state == S.RUN_STATE_CANCELLED
    assert attempt.HasField("finished_at")


async def test_cancel_with_reason(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id, reason="no longer needed"))
    last = (await events(runs, run.id))[-1]
    assert (last.type, last.msg) == (S.EVENT_TYPE_CANCELLED, "no longer needed")


@pytest.mark.parametrize("terminal", TERMINAL, ids=[NAMES[s] for s in TERMINAL])
async def test_cancel_terminal_run_refused(runs: Stub, terminal: int) -> None:
    run = await in_state(runs, terminal)
    before = await events(runs, run.id)
    await fails(
        runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"run is already in terminal state {NAMES[terminal]}",
    )
    assert await events(runs, run.id) == before
    assert (await get(runs, run.id)).state == terminal


async def test_cancel_completed_exact_message(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_COMPLETED)
    await fails(
        runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id, reason="x")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "run is already in terminal state COMPLETED",
    )


# -- RetryRun ----------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", TERMINAL, ids=[NAMES[s] for s in TERMINAL])
async def test_retry_terminal_run(runs: Stub, terminal: int) -> None:
    run = await in_state(runs, terminal)
    before = await events(runs, run.id)
    retried = (await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))).run
    assert retried.state == S.RUN_STATE_PENDING
    assert retried.current_attempt == 2
    assert retried.progress == 0
    assert as_dict(retried.outputs) == {}
    assert retried.execution_summary == runs_pb2.ExecutionSummary()
    after = await events(runs, run.id)
    assert after[: len(before)] == before and len(after) == len(before) + 1
    new = after[-1]
    assert (new.type, new.attempt, new.state, new.seq) == (
        S.EVENT_TYPE_RETRIED,
        2,
        S.RUN_STATE_PENDING,
        len(before),
    )
    first, second = await attempts(runs, run.id)
    assert (first.attempt, first.state) == (1, terminal)
    assert (second.attempt, second.state, second.progress) == (2, S.RUN_STATE_PENDING, 0)
    assert as_dict(second.outputs) == {}
    assert second.execution_summary == runs_pb2.ExecutionSummary()
    assert not second.HasField("started_at") and not second.HasField("finished_at")
    if terminal == S.RUN_STATE_COMPLETED:
        # The old attempt keeps its outputs.
        assert as_dict(first.outputs) == {"result": "ok"}
        assert first.progress == 100


async def test_retry_ignores_max_attempts(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_FAILED)
    assert run.retry_policy.max_attempts == 1
    for n in (2, 3, 4):
        retried = (await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))).run
        assert (retried.current_attempt, retried.state) == (n, S.RUN_STATE_PENDING)
        await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))
    assert [a.attempt for a in await attempts(runs, run.id)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "source",
    [S.RUN_STATE_PENDING, S.RUN_STATE_ASSIGNED, S.RUN_STATE_RUNNING],
    ids=lambda s: NAMES[s],
)
async def test_retry_non_terminal_refused(runs: Stub, source: int) -> None:
    run = await in_state(runs, source)
    err = await fails(
        runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert NAMES[source] in err.details()
    got = await get(runs, run.id)
    assert (got.state, got.current_attempt) == (source, 1)


async def test_worker_can_continue_after_retry(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_CANCELLED)
    await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))
    started = (await add(runs, run.id, S.EVENT_TYPE_STARTED, attempt=2)).run
    assert started.state == S.RUN_STATE_RUNNING
    done = (
        await add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"outputs": {"v": 2}}, attempt=2)
    ).run
    assert done.state == S.RUN_STATE_COMPLETED and as_dict(done.outputs) == {"v": 2}
