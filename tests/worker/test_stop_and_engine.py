"""The Worker against a real in-process server (SQLite and PostgreSQL): stop orders arrive
through the long-poll within moments of CancelRun even when heartbeats are far apart; a worker
whose engine does not answer claims nothing, says why in its record, and claims again when it
answers (after sweeping what earlier attempts left); a staging step that cannot reach the engine
hands the run back; outputs over the server's cap fail the run saying so."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.domain.limits import Limits
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.worker import RunContext, Worker
from gyoza_grpc.worker.execution import NotReady, Say
from tests.conftest import eventually, served
from tests.worker.test_worker import create, events, get, names, until_state, working

R = runs_pb2
W = workers_pb2
# A heartbeat this far apart could not carry a stop order within the test.
SLOW_HEARTBEAT = timedelta(seconds=60)


async def _true(value: bool) -> bool:
    return value


async def test_a_cancel_reaches_the_worker_at_once_without_a_heartbeat(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def forever(inputs: dict[str, Any], ctx: RunContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(ctx.stop_reason)

    run = await create(runs)
    worker = Worker(server.target, "w", forever, heartbeat_interval=SLOW_HEARTBEAT)
    async with working(worker):
        await asyncio.wait_for(started.wait(), 10)
        t0 = time.monotonic()
        await runs.CancelRun(R.CancelRunRequest(id=run.id))
        await eventually(lambda: _true(worker.running == []), timeout_s=3)
        took = time.monotonic() - t0
    assert stopped == ["cancelled"]
    assert took < 3  # not the 60 s heartbeat
    assert names(await events(runs, run.id)) == ["ASSIGNED", "STARTED", "CANCELLED"]


class FakeEngine:
    """An engine the test switches on and off; a handler with a staging step."""

    def __init__(self) -> None:
        self.down = "engine unreachable at unix:///nowhere.sock: no such file"
        self.not_ready_reason = ""
        self.sweeps: list[tuple[str, set[tuple[str, int]]]] = []
        self.fail_stage_with: Exception | None = None
        self.closed = False

    async def check(self) -> str:
        self.not_ready_reason = self.down
        return self.not_ready_reason

    async def sweep(self, worker_id: str, keep: set[tuple[str, int]]) -> int:
        self.sweeps.append((worker_id, keep))
        return 0

    async def close(self) -> None:
        self.closed = True

    @contextlib.asynccontextmanager
    async def stage(self, ctx: RunContext, say: Say) -> AsyncIterator[None]:
        await say(f"pulling {ctx.claim.image}")
        if self.fail_stage_with is not None:
            err, self.fail_stage_with = self.fail_stage_with, None
            if isinstance(err, NotReady):
                self.not_ready_reason = str(err)
            raise err
        yield

    async def __call__(self, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {"ran": ctx.run_id}


async def _worker_record(target: str) -> W.Worker:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = workers_pb2_grpc.WorkerServiceStub(ch)
        return (await stub.GetWorker(W.GetWorkerRequest(worker_id="w"))).worker


async def test_no_claims_while_the_engine_does_not_answer(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    engine = FakeEngine()
    worker = Worker(
        server.target,
        "w",
        engine,
        heartbeat_interval=timedelta(seconds=0.1),
        claim_wait=timedelta(seconds=1),
    )
    run = await create(runs)
    async with working(worker):

        async def says_why() -> bool:
            try:
                w = await _worker_record(server.target)
            except grpc.aio.AioRpcError:
                return False
            return w.not_ready_reason == engine.down

        await eventually(says_why, timeout_s=10)
        await asyncio.sleep(0.5)
        assert (await get(runs, run.id)).state == R.RUN_STATE_PENDING  # never claimed
        assert engine.sweeps == []
        engine.down = ""  # the engine answers again
        done = await until_state(runs, run.id, R.RUN_STATE_COMPLETED, timeout_s=15)
        assert dict(done.outputs) == {"ran": run.id}
        assert engine.sweeps == [("w", set())]  # swept before the first claim
        assert (await _worker_record(server.target)).not_ready_reason == ""
        evs = await events(runs, run.id)
        assert names(evs) == ["ASSIGNED", "INFO", "STARTED", "COMPLETED"]
        assert evs[1].msg == "pulling img"  # the staging step's note, before STARTED
    assert engine.closed


async def test_staging_that_loses_the_engine_hands_the_run_back(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    engine = FakeEngine()
    engine.down = ""
    engine.fail_stage_with = NotReady("engine unreachable: connection refused")
    worker = Worker(server.target, "w", engine, heartbeat_interval=timedelta(seconds=0.1))
    run = await create(runs)
    async with working(worker):
        # Handed back (not counted as a try), then claimed again once the engine answers.
        done = await until_state(runs, run.id, R.RUN_STATE_COMPLETED, timeout_s=20)
    assert done.current_attempt == 1
    assert "Released by worker w" in [e.msg for e in await events(runs, run.id)]


async def test_staging_that_fails_fails_the_run_from_assigned(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    engine = FakeEngine()
    engine.down = ""
    engine.fail_stage_with = RuntimeError("image 'nope:1' not found and cannot be pulled")
    worker = Worker(server.target, "w", engine, heartbeat_interval=timedelta(seconds=0.1))
    run = await create(runs)
    async with working(worker):
        failed = await until_state(runs, run.id, R.RUN_STATE_FAILED)
    assert failed.execution_summary.error_message == (
        "image 'nope:1' not found and cannot be pulled"
    )
    assert names(await events(runs, run.id)) == ["ASSIGNED", "INFO", "FAILED"]


async def test_outputs_the_server_refuses_fail_the_run_saying_why(database_url: str) -> None:
    async with (
        served(database_url, limits=Limits(max_json_bytes=1000)) as gs,
        grpc.aio.insecure_channel(gs.target) as ch,
    ):
        runs = runs_pb2_grpc.RunServiceStub(ch)
        run = await create(runs)
        worker = Worker(
            gs.target, "w", lambda i, c: {"blob": "x" * 5000}, heartbeat_interval=SLOW_HEARTBEAT
        )
        async with working(worker):
            failed = await until_state(runs, run.id, R.RUN_STATE_FAILED)
    message = failed.execution_summary.error_message
    assert message.startswith("the server refused the run's outputs: "), message
    assert "outputs" in message and "1000" in message
