"""ReleaseRun: a worker hands back an attempt it was assigned and never started."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from tests.service.helpers import error_reason, fails
from tests.service.test_workers import claim, create, register

W = workers_pb2


@pytest.fixture
def workers(channel: grpc.aio.Channel) -> workers_pb2_grpc.WorkerServiceStub:
    return workers_pb2_grpc.WorkerServiceStub(channel)


async def events_of(runs: runs_pb2_grpc.RunServiceStub, run_id: str) -> list[runs_pb2.Event]:
    return list((await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run_id))).events)


async def test_a_released_run_is_pending_again_on_the_same_attempt_and_claimable(
    runs: runs_pb2_grpc.RunServiceStub, workers: workers_pb2_grpc.WorkerServiceStub
) -> None:
    await register(workers, "w1")
    await register(workers, "w2")
    run = await create(runs)
    [got] = await claim(workers, "w1")
    # w2 waits for work; the release must wake it (not the end of its long-poll).
    waiting = asyncio.ensure_future(claim(workers, "w2", wait_s=20))
    await asyncio.sleep(0.2)
    released = (
        await workers.ReleaseRun(
            W.ReleaseRunRequest(worker_id="w1", run_id=run.id, attempt=got.attempt)
        )
    ).run
    assert (released.state, released.current_attempt) == (runs_pb2.RUN_STATE_PENDING, 1)
    [again] = await asyncio.wait_for(waiting, 5)
    assert (again.run.id, again.attempt) == (run.id, 1)
    timeline = [(e.type, e.msg) for e in await events_of(runs, run.id)]
    assert timeline[1] == (runs_pb2.EVENT_TYPE_INFO, "Released by worker w1")
    assert [t for t, _ in timeline] == [
        runs_pb2.EVENT_TYPE_ASSIGNED,
        runs_pb2.EVENT_TYPE_INFO,
        runs_pb2.EVENT_TYPE_ASSIGNED,
    ]
    w1 = (await workers.GetWorker(W.GetWorkerRequest(worker_id="w1"))).worker
    assert list(w1.held) == []


async def test_only_the_holder_of_that_attempt_may_release_it_and_only_before_it_starts(
    runs: runs_pb2_grpc.RunServiceStub, workers: workers_pb2_grpc.WorkerServiceStub
) -> None:
    await register(workers, "w1")
    run = await create(runs)
    [got] = await claim(workers, "w1")

    def release(worker_id: str, attempt: int) -> object:
        return workers.ReleaseRun(
            W.ReleaseRunRequest(worker_id=worker_id, run_id=run.id, attempt=attempt)
        )

    err = await fails(release("w2", got.attempt), grpc.StatusCode.FAILED_PRECONDITION)
    assert error_reason(err) == "NOT_HELD"
    assert "not held by worker 'w2'" in (err.details() or "")
    err = await fails(release("w1", got.attempt + 1), grpc.StatusCode.FAILED_PRECONDITION)
    assert error_reason(err) == "NOT_HELD"
    await runs.AddEvent(
        runs_pb2.AddEventRequest(run_id=run.id, type=runs_pb2.EVENT_TYPE_STARTED, attempt=1)
    )
    err = await fails(release("w1", got.attempt), grpc.StatusCode.FAILED_PRECONDITION)
    assert error_reason(err) == "ALREADY_STARTED"
    # Nothing was written by the refusals: the run is still RUNNING on attempt 1.
    after = (await runs.GetRun(runs_pb2.GetRunRequest(id=run.id))).run
    assert (after.state, after.current_attempt) == (runs_pb2.RUN_STATE_RUNNING, 1)
    assert [e.type for e in await events_of(runs, run.id)] == [
        runs_pb2.EVENT_TYPE_ASSIGNED,
        runs_pb2.EVENT_TYPE_STARTED,
    ]


async def test_bad_release_requests(workers: workers_pb2_grpc.WorkerServiceStub) -> None:
    await fails(
        workers.ReleaseRun(W.ReleaseRunRequest(worker_id="w", run_id="missing", attempt=1)),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        workers.ReleaseRun(W.ReleaseRunRequest(worker_id="w", run_id="r", attempt=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await fails(
        workers.ReleaseRun(W.ReleaseRunRequest(worker_id="", run_id="r", attempt=1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
