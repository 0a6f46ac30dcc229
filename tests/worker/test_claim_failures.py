"""A worker never exits on a claim that failed: it logs, backs off and goes on (issue 16).

`gyoza-grpc worker` met a claim answer its channel would not take (RESOURCE_EXHAUSTED) and
exited 1 ("the server refused the worker"), and a restart met the same runs again. Here the
worker's channel receives at most 64 KiB and a PENDING run's inputs are larger: every claim
of it fails on the worker's side, after the server assigned it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.worker import RunContext, Worker
from tests.conftest import eventually

R = runs_pb2


async def test_a_claim_the_channel_refuses_does_not_stop_the_worker(
    server: GyozaServer,
    runs: runs_pb2_grpc.RunServiceStub,
    channel: grpc.aio.Channel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gyoza_grpc.worker")
    big = R.CreateRunRequest(image="img", priority=9)
    big.inputs.update({"blob": "x" * 100_000})
    too_big = (await runs.CreateRun(big)).run

    async def handler(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        return {"n": len(inputs)}

    worker = Worker(
        server.target,
        "w",
        handler,
        cpu=1,
        heartbeat_interval=timedelta(seconds=0.1),
        claim_wait=timedelta(seconds=1),
        channel_options=[("grpc.max_receive_message_length", 64 * 1024)],
    )
    task = asyncio.create_task(worker.run())
    try:

        def failures() -> int:
            return sum("claim failed (RESOURCE_EXHAUSTED" in r.getMessage() for r in caplog.records)

        async def failed_twice() -> bool:
            return failures() >= 2 or task.done()

        await eventually(failed_twice, timeout_s=20)
        assert not task.done(), task.exception() if task.done() else None
        # What the server assigned unseen was handed back, never left ASSIGNED to it.
        workers = workers_pb2_grpc.WorkerServiceStub(channel)

        async def released() -> bool:
            w = await workers.GetWorker(workers_pb2.GetWorkerRequest(worker_id="w"))
            run = (await runs.GetRun(R.GetRunRequest(id=too_big.id))).run
            return not w.worker.held and run.state == R.RUN_STATE_PENDING

        await eventually(released, timeout_s=20)
        # It goes on: with the run it cannot receive out of the way, it works.
        await runs.CancelRun(R.CancelRunRequest(id=too_big.id))
        small = R.CreateRunRequest(image="img")
        small.inputs.update({"a": 1})
        run = (await runs.CreateRun(small)).run

        async def completed() -> bool:
            got = (await runs.GetRun(R.GetRunRequest(id=run.id))).run
            return got.state == R.RUN_STATE_COMPLETED

        await eventually(completed, timeout_s=30)
        assert not task.done()
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
