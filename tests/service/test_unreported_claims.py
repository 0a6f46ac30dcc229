"""A claim the worker never received goes back to PENDING within a heartbeat or two (issue 16).

A claim answer can be lost after the claim committed (a client that refused its size, a
dropped connection, a deadline): the runs stay ASSIGNED to a worker that never saw them, and
its heartbeats do not report them. Until the lease ran out nothing gave them back. Now a
heartbeat hands back each ASSIGNED attempt the worker does not report and was given before
its previous heartbeat; a claim answer still in flight (committed after that heartbeat) is
left alone.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf import json_format

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.worker import RunContext, Worker
from tests.conftest import eventually

R = runs_pb2
W = workers_pb2


@pytest.fixture
def workers(channel: grpc.aio.Channel) -> workers_pb2_grpc.WorkerServiceStub:
    return workers_pb2_grpc.WorkerServiceStub(channel)


async def beat(
    workers: workers_pb2_grpc.WorkerServiceStub, *running: tuple[str, int]
) -> W.HeartbeatResponse:
    return await workers.Heartbeat(
        W.HeartbeatRequest(
            worker_id="w",
            resources=W.Resources(cpu=8),
            running=[W.HeldAttempt(run_id=r, attempt=a) for r, a in running],
        )
    )


async def claim(workers: workers_pb2_grpc.WorkerServiceStub, n: int = 1) -> list[W.Claim]:
    resp = await workers.ClaimRuns(W.ClaimRunsRequest(worker_id="w", max_runs=n))
    return list(resp.claims)


async def get(runs: runs_pb2_grpc.RunServiceStub, run_id: str) -> R.Run:
    return (await runs.GetRun(R.GetRunRequest(id=run_id))).run


async def held(workers: workers_pb2_grpc.WorkerServiceStub) -> list[tuple[str, int]]:
    w = (await workers.GetWorker(W.GetWorkerRequest(worker_id="w"))).worker
    return sorted((h.run_id, h.attempt) for h in w.held)


async def test_an_unreported_claim_is_handed_back_on_the_second_heartbeat(
    runs: runs_pb2_grpc.RunServiceStub, workers: workers_pb2_grpc.WorkerServiceStub
) -> None:
    await beat(workers)  # registers
    lost = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
    kept = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
    got = await claim(workers, 2)
    assert {c.run.id for c in got} == {lost.id, kept.id}
    # The first heartbeat after the claim may have left before its answer arrived: both stay.
    await beat(workers)
    assert (await get(runs, lost.id)).state == R.RUN_STATE_ASSIGNED
    assert (await get(runs, kept.id)).state == R.RUN_STATE_ASSIGNED
    # The next one still does not report `lost`: it never reached the worker.
    resp = await beat(workers, (kept.id, 1))
    assert list(resp.stop) == []
    back = await get(runs, lost.id)
    assert back.state == R.RUN_STATE_PENDING
    assert back.current_attempt == 2  # a new attempt: a late start of attempt 1 is refused
    assert (await get(runs, kept.id)).state == R.RUN_STATE_ASSIGNED
    assert await held(workers) == [(kept.id, 1)]
    timeline = (await runs.ListEvents(R.ListEventsRequest(run_id=lost.id))).events
    retried = timeline[-1]
    assert retried.type == R.EVENT_TYPE_RETRIED
    assert json_format.MessageToDict(retried.payload)["unreported_by"] == "w"
    assert "never reported" in retried.msg
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.AddEvent(R.AddEventRequest(run_id=lost.id, type=R.EVENT_TYPE_STARTED, attempt=1))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Not counted as a try: the run is claimed and runs again as if nothing happened.
    (again,) = await claim(workers)
    assert again.run.id == lost.id and again.attempt == 2
    attempts = (await runs.ListAttempts(R.ListAttemptsRequest(run_id=lost.id))).attempts
    assert attempts[0].state == R.RUN_STATE_FAILED
    assert "did not report it" in attempts[0].execution_summary.error_message


async def test_a_claim_answer_in_flight_is_not_taken_back(
    runs: runs_pb2_grpc.RunServiceStub, workers: workers_pb2_grpc.WorkerServiceStub
) -> None:
    """The race: heartbeat, claim (committed), a heartbeat sent before the worker had the
    claim answer (reports nothing), then one that reports it. The run is never handed back,
    however many heartbeats came before the claim."""
    for _ in range(3):
        await beat(workers)
    run = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
    (c,) = await claim(workers)
    await beat(workers)  # crossed the claim answer on the wire
    await beat(workers, (run.id, c.attempt))
    await beat(workers, (run.id, c.attempt))
    now = await get(runs, run.id)
    assert (now.state, now.current_attempt) == (R.RUN_STATE_ASSIGNED, 1)
    assert await held(workers) == [(run.id, 1)]


async def test_started_runs_and_other_workers_runs_are_left_alone(
    runs: runs_pb2_grpc.RunServiceStub, workers: workers_pb2_grpc.WorkerServiceStub
) -> None:
    """Only ASSIGNED attempts of this worker: a RUNNING one it forgot is the lease's business
    (it may be running), another worker's claim is not this heartbeat's."""
    await beat(workers)
    await workers.Heartbeat(W.HeartbeatRequest(worker_id="other", resources=W.Resources(cpu=1)))
    started = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
    (c,) = await claim(workers)
    await runs.AddEvent(
        R.AddEventRequest(run_id=started.id, type=R.EVENT_TYPE_STARTED, attempt=c.attempt)
    )
    theirs = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
    await workers.ClaimRuns(W.ClaimRunsRequest(worker_id="other", max_runs=1))
    for _ in range(3):
        await beat(workers)
    assert (await get(runs, started.id)).state == R.RUN_STATE_RUNNING
    assert (await get(runs, theirs.id)).state == R.RUN_STATE_ASSIGNED


async def test_the_worker_sdk_keeps_every_claim_while_heartbeating_fast(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    """The SDK heartbeats concurrently with its claims (every 50 ms here), so heartbeats
    cross claim answers all the time: no run it received is ever handed back."""

    async def handler(inputs: dict[str, object], ctx: RunContext) -> dict[str, object]:
        await asyncio.sleep(0.2)  # each run held through a few heartbeats
        return {}

    made = [(await runs.CreateRun(R.CreateRunRequest(image="img"))).run for _ in range(24)]
    worker = Worker(
        server.target,
        "sdk",
        handler,
        cpu=4,
        max_concurrency=4,
        heartbeat_interval=timedelta(seconds=0.05),
        claim_wait=timedelta(seconds=1),
    )
    task = asyncio.create_task(worker.run())
    try:

        async def all_done() -> bool:
            found = [await get(runs, r.id) for r in made]
            return all(r.state == R.RUN_STATE_COMPLETED for r in found)

        await eventually(all_done, timeout_s=60, interval_s=0.2)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    for r in made:
        assert (await get(runs, r.id)).current_attempt == 1
        timeline = (await runs.ListEvents(R.ListEventsRequest(run_id=r.id))).events
        assert [R.EventType.Name(e.type) for e in timeline] == [
            "EVENT_TYPE_ASSIGNED",
            "EVENT_TYPE_STARTED",
            "EVENT_TYPE_COMPLETED",
        ]
