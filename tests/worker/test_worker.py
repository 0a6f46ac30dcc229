"""The Worker against a real in-process server (SQLite and PostgreSQL): claims, events with
their attempt, failures, stop orders, GPU placement, shutdown, reconciling, fencing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.client import AsyncClient
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.worker import Gpu, RunContext, Worker
from gyoza_grpc.worker.execution import Handler
from tests.conftest import eventually, served

R = runs_pb2
FAST = timedelta(seconds=0.1)


def make_worker(target: str, handler: Handler, worker_id: str = "w", **kw: Any) -> Worker:
    kw.setdefault("heartbeat_interval", FAST)
    kw.setdefault("claim_wait", timedelta(seconds=5))
    return Worker(target, worker_id, handler, **kw)


@asynccontextmanager
async def working(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def create(
    runs: runs_pb2_grpc.RunServiceStub,
    inputs: dict[str, Any] | None = None,
    *,
    max_attempts: int = 1,
    **constraints: int,
) -> R.Run:
    req = R.CreateRunRequest(
        image="img",
        constraints=R.Constraints(**constraints),
        retry_policy=R.RetryPolicy(max_attempts=max_attempts),
    )
    req.inputs.update(inputs or {})
    return (await runs.CreateRun(req)).run


async def get(runs: runs_pb2_grpc.RunServiceStub, run_id: str) -> R.Run:
    return (await runs.GetRun(R.GetRunRequest(id=run_id))).run


async def events(runs: runs_pb2_grpc.RunServiceStub, run_id: str) -> list[R.Event]:
    return list((await runs.ListEvents(R.ListEventsRequest(run_id=run_id))).events)


def names(evs: list[R.Event]) -> list[str]:
    return [R.EventType.Name(e.type).removeprefix("EVENT_TYPE_") for e in evs]


async def until_state(
    runs: runs_pb2_grpc.RunServiceStub, run_id: str, *states: int, timeout_s: float = 10
) -> R.Run:
    async def reached() -> bool:
        return (await get(runs, run_id)).state in states

    await eventually(reached, timeout_s=timeout_s)
    return await get(runs, run_id)


async def test_a_worker_over_a_client_of_its_caller(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    """`client=`: the worker calls through it (its deadline is each call's) and leaves it
    open for its owner."""

    async def double(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {"y": inputs["x"] * 2}

    async with AsyncClient(server.target, timeout=timedelta(seconds=7)) as client:
        worker = make_worker(server.target, double, client=client)
        assert worker.call_timeout_s == 7
        run = await create(runs, {"x": 4})
        async with working(worker):
            done = await until_state(runs, run.id, R.RUN_STATE_COMPLETED)
        assert dict(done.outputs) == {"y": 8}
        assert [w.worker_id for w in await client.list_workers()] == ["w"]  # still open


async def test_runs_are_executed_within_the_worker_capacity(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    running: set[str] = set()
    peak = [0]
    pair = asyncio.Event()  # two ran at once: the capacity allows two

    async def double(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        running.add(ctx.run_id)
        peak[0] = max(peak[0], len(running))
        if len(running) >= 2:
            pair.set()
        ctx.progress(50)
        # Held until a second run joins (or a while: the last run has no partner), so a busy
        # machine's slow claims cannot hide what the capacity allows.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pair.wait(), 0.5)
        await asyncio.sleep(0.05)
        running.discard(ctx.run_id)
        return {"y": inputs["x"] * 2, "x_type": type(inputs["x"]).__name__}

    created = [await create(runs, {"x": i}, cpu=1) for i in range(6)]
    async with working(make_worker(server.target, double, cpu=2, max_concurrency=4)):
        for i, run in enumerate(created):
            done = await until_state(runs, run.id, R.RUN_STATE_COMPLETED)
            assert dict(done.outputs) == {"y": 2 * i, "x_type": "int"}
            assert done.execution_summary.worker_id == "w"
    assert peak[0] == 2  # cpu 2, one each: never more than two at once
    evs = await events(runs, created[0].id)
    assert names(evs) == ["ASSIGNED", "STARTED", "PROGRESS", "COMPLETED"]
    assert {e.attempt for e in evs} == {1}
    assert dict(evs[1].payload) == {"worker_id": "w"}


async def test_an_exception_fails_the_run_with_its_message(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    def broken(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        raise ValueError(f"x must be positive, got {inputs['x']}")

    run = await create(runs, {"x": -1})
    async with working(make_worker(server.target, broken)):
        failed = await until_state(runs, run.id, R.RUN_STATE_FAILED)
    assert failed.execution_summary.error_message == "x must be positive, got -1"


async def test_a_cancelled_run_is_stopped_through_the_heartbeat(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    started = asyncio.Event()
    stopped: list[bool] = []

    async def forever(inputs: dict[str, Any], ctx: RunContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(ctx.cancelled)

    run = await create(runs)
    worker = make_worker(server.target, forever)
    async with working(worker):
        await asyncio.wait_for(started.wait(), 10)
        await runs.CancelRun(R.CancelRunRequest(id=run.id))

        async def abandoned() -> bool:
            return worker.running == []

        await eventually(abandoned, timeout_s=5)
    assert stopped == [True]
    assert names(await events(runs, run.id)) == ["ASSIGNED", "STARTED", "CANCELLED"]


async def test_a_gpu_run_gets_the_gpu_the_server_chose(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    async def which(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {"gpu": ctx.gpu_id}

    run = await create(runs, cpu=1, vram_mb=6000)
    gpus = [Gpu(0, 16000), Gpu(1, 8000)]
    async with working(make_worker(server.target, which, cpu=2, gpus=gpus)):
        done = await until_state(runs, run.id, R.RUN_STATE_COMPLETED)
    assert dict(done.outputs) == {"gpu": 1}  # best fit
    assert done.execution_summary.gpu_id == 1
    started = (await events(runs, run.id))[1]
    assert dict(started.payload) == {"worker_id": "w", "gpu_id": 1}


async def test_shutdown_finishes_short_runs_and_fails_the_rest(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    started: set[str] = set()

    async def sleeper(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        started.add(ctx.run_id)
        await asyncio.sleep(inputs["s"])
        return {}

    short = await create(runs, {"s": 0.2})
    long = await create(runs, {"s": 60}, max_attempts=2)
    worker = make_worker(server.target, sleeper, shutdown_grace=timedelta(seconds=1))
    task = asyncio.create_task(worker.run())
    await eventually(lambda: _true(len(started) == 2), timeout_s=10)
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert (await get(runs, short.id)).state == R.RUN_STATE_COMPLETED
    again = await get(runs, long.id)
    assert (again.state, again.current_attempt) == (R.RUN_STATE_PENDING, 2)  # retried at once
    attempts = (await runs.ListAttempts(R.ListAttemptsRequest(run_id=long.id))).attempts
    assert attempts[0].execution_summary.error_message == "worker w stopped before the run finished"


async def _true(value: bool) -> bool:
    return value


async def test_runs_left_by_an_earlier_process_are_settled_at_start(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    async with grpc.aio.insecure_channel(server.target) as ch:
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        await workers.Heartbeat(
            workers_pb2.HeartbeatRequest(worker_id="w", resources=workers_pb2.Resources(cpu=4))
        )
        assigned = await create(runs)
        running = await create(runs, max_attempts=2)
        claimed = await workers.ClaimRuns(workers_pb2.ClaimRunsRequest(worker_id="w", max_runs=2))
        assert len(claimed.claims) == 2
        await runs.AddEvent(
            R.AddEventRequest(run_id=running.id, type=R.EVENT_TYPE_STARTED, attempt=1)
        )
    # The "earlier process" is gone; a new one with the same id starts.
    async with working(make_worker(server.target, lambda inputs, ctx: {"ok": 1}, cpu=4)):
        a = await until_state(runs, assigned.id, R.RUN_STATE_COMPLETED)
        b = await until_state(runs, running.id, R.RUN_STATE_COMPLETED)
    assert a.current_attempt == 1  # handed back: the attempt never started
    assert "Released by worker w" in [e.msg for e in await events(runs, assigned.id)]
    assert b.current_attempt == 2
    attempts = (await runs.ListAttempts(R.ListAttemptsRequest(run_id=running.id))).attempts
    assert attempts[0].execution_summary.error_message == "worker w lost the attempt (restarted)"


@pytest.fixture
async def short_lease(database_url: str) -> AsyncIterator[GyozaServer]:
    async with served(database_url, lease_seconds=1, sweep_interval_s=0.1) as gs:
        yield gs


async def test_an_evicted_worker_is_fenced_off_and_registers_again(
    short_lease: GyozaServer,
) -> None:
    cancelled: list[bool] = []
    started = asyncio.Event()

    async def chatty(inputs: dict[str, Any], ctx: RunContext) -> None:
        started.set()
        try:
            for n in range(10_000):
                ctx.progress(n % 100)
                await asyncio.sleep(0.05)
        finally:
            cancelled.append(ctx.cancelled)

    async with grpc.aio.insecure_channel(short_lease.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        run = await create(runs)
        # Heartbeats far apart: the worker loses its lease while the run goes on.
        worker = make_worker(short_lease.target, chatty, heartbeat_interval=timedelta(seconds=3))
        async with working(worker):
            await asyncio.wait_for(started.wait(), 10)
            failed = await until_state(runs, run.id, R.RUN_STATE_FAILED)
            assert failed.execution_summary.error_message == "worker w lost"

            async def abandoned() -> bool:
                return worker.running == []

            await eventually(abandoned, timeout_s=5)
            assert cancelled == [True]
            seq = failed.last_seq
            await asyncio.sleep(0.3)
            assert (await get(runs, run.id)).last_seq == seq  # nothing after the fence

            async def alive() -> bool:
                w = (await workers.GetWorker(workers_pb2.GetWorkerRequest(worker_id="w"))).worker
                return w.state == workers_pb2.WORKER_STATE_ALIVE

            await eventually(alive, timeout_s=10)
