"""The docker executor against a real engine and a real in-process server (SQLite): an op runs
in its image under the shared contract; failures (exit code, bad stdout, outputs over the cap,
OOM, an image that cannot be pulled) say why; the live container carries the labels, limits
and variables; a GPU run asks for its device; a cancel stops and removes the container at once;
a worker sweeps its own orphans at start; an engine that goes away stops the claims without
failing runs, and they all complete once it is back.

Needs a container engine and the test images (tests/docker_engine.py): skipped without one,
a failure under CI=true."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.worker import RunContext, Worker
from tests import docker_engine
from tests.conftest import eventually, served
from tests.docker_engine import image
from tests.worker.helpers import make_claim
from tests.worker.test_worker import events, names, until_state, working

R = runs_pb2
W = workers_pb2
# Generous for a busy 2-core machine: a container starts in about 0.3 s.
SETTLE_S = 30.0

# The worker id of this process's docker workers: test processes that run side by side (the
# suite's xdist workers) must not sweep each other's containers as orphans.
DW = f"dw-{os.getpid()}"


@pytest.fixture(autouse=True)
def _engine() -> None:
    docker_engine.require_engine()


@pytest.fixture
async def docker() -> AsyncIterator[Any]:
    import aiodocker as client

    d = client.Docker()
    try:
        yield d
    finally:
        await d.close()


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    async with served(sqlite_url) as gs:
        yield gs


@pytest.fixture
async def runs(server: GyozaServer) -> AsyncIterator[runs_pb2_grpc.RunServiceStub]:
    async with grpc.aio.insecure_channel(server.target) as ch:
        yield runs_pb2_grpc.RunServiceStub(ch)


def docker_worker(target: str, worker_id: str = "", **handler_kw: Any) -> Worker:
    from gyoza_grpc.worker.docker_executor import DockerHandler

    handler_kw.setdefault("stop_grace_s", 2)
    return Worker(
        target,
        worker_id or DW,
        DockerHandler(**handler_kw),
        cpu=4,
        ram_mb=4000,
        heartbeat_interval=timedelta(seconds=0.5),
        claim_wait=timedelta(seconds=5),
    )


async def create(
    runs: runs_pb2_grpc.RunServiceStub,
    image_ref: str,
    inputs: dict[str, Any] | None = None,
    **constraints: int,
) -> R.Run:
    req = R.CreateRunRequest(image=image_ref, constraints=R.Constraints(**constraints))
    req.inputs.update(inputs or {})
    return (await runs.CreateRun(req)).run


async def containers_of(docker: Any, worker_id: str) -> list[Any]:
    filters = json.dumps({"label": [f"gyoza.worker_id={worker_id}"]})
    return list(await docker.containers.list(all=True, filters=filters))


async def _true(value: bool) -> bool:
    return value


async def test_an_op_runs_in_its_image_under_the_contract(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub, docker: Any
) -> None:
    run = await create(runs, image("echo"), {"n": 21, "steps": 3})
    async with working(docker_worker(server.target)):
        done = await until_state(runs, run.id, R.RUN_STATE_COMPLETED, timeout_s=SETTLE_S)
    assert dict(done.outputs) == {"n": 21, "doubled": 42, "run": run.id}
    evs = await events(runs, run.id)
    assert names(evs)[:2] == ["ASSIGNED", "STARTED"] and names(evs)[-1] == "COMPLETED"
    assert "PROGRESS" in names(evs)
    assert f"hello from {run.id} attempt 1" in [e.msg for e in evs if e.type == R.EVENT_TYPE_INFO]
    assert await containers_of(docker, DW) == []  # removed


async def test_failures_say_why_and_the_worker_goes_on(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub, docker: Any
) -> None:
    cases = [
        (image("exit"), {"code": 4, "stderr": "boom"}, {}, "container exited with code 4: boom"),
        (image("badjson"), {}, {}, "stdout is not JSON"),
        (image("big"), {"kb": 1100}, {}, "stdout passed the outputs cap of 1048576 bytes"),
        (image("oom"), {"mb": 200}, {"ram_mb": 64}, "out of memory (limit 64 MB)"),
        ("gyoza-test/no-such-image:1", {}, {}, "cannot pull image 'gyoza-test/no-such-image:1': "),
    ]
    created = [
        (await create(runs, ref, inputs, **constraints), expected)
        for ref, inputs, constraints, expected in cases
    ]
    after = await create(runs, image("echo"), {"n": 1})
    async with working(docker_worker(server.target)):
        for run, expected in created:
            failed = await until_state(runs, run.id, R.RUN_STATE_FAILED, timeout_s=SETTLE_S)
            assert failed.execution_summary.error_message.startswith(expected), (
                failed.execution_summary.error_message
            )
        await until_state(runs, after.id, R.RUN_STATE_COMPLETED, timeout_s=SETTLE_S)
    unknown = created[-1][0]
    evs = await events(runs, unknown.id)
    assert names(evs) == ["ASSIGNED", "INFO", "FAILED"]  # never STARTED
    assert evs[1].msg == "pulling gyoza-test/no-such-image:1"
    assert await containers_of(docker, DW) == []


async def test_pull_never_fails_a_missing_image_without_pulling(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    run = await create(runs, "gyoza-test/no-such-image:1")
    async with working(docker_worker(server.target, pull="never")):
        failed = await until_state(runs, run.id, R.RUN_STATE_FAILED, timeout_s=SETTLE_S)
    message = failed.execution_summary.error_message
    assert message.startswith(
        "image 'gyoza-test/no-such-image:1' is not on the engine and the worker's pull policy "
        "is 'never': "
    ), message
    assert names(await events(runs, run.id)) == ["ASSIGNED", "FAILED"]


async def _live_container(docker: Any, worker_id: str) -> Any:
    async def running() -> bool:
        found = await containers_of(docker, worker_id)
        return bool(found) and found[0]["State"] == "running"

    await eventually(running, timeout_s=SETTLE_S)
    (container,) = await containers_of(docker, worker_id)
    return await docker.containers.get(container.id)


async def test_the_live_container_has_the_labels_limits_and_variables(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub, docker: Any
) -> None:
    run = await create(runs, image("sleep"), {"seconds": 60}, cpu=1, ram_mb=128)
    worker = docker_worker(server.target, labels={"team": "vision"}, env={"MODE": "x"})
    async with working(worker):
        live = await _live_container(docker, DW)
        info = await live.show()
        labels = info["Config"]["Labels"].items()
        assert {k: v for k, v in labels if not k.startswith("gyoza.test-image")} == {
            "team": "vision",
            "gyoza.run_id": run.id,
            "gyoza.attempt": "1",
            "gyoza.worker_id": DW,
        }
        host = info["HostConfig"]
        assert host["Init"] is True and host["NetworkMode"] == "none"
        assert host["NanoCpus"] == 1_000_000_000
        assert host["Memory"] == host["MemorySwap"] == 128 * 1024 * 1024
        assert not host.get("DeviceRequests")
        env = set(info["Config"]["Env"])
        assert {
            f"GYOZA_RUN_ID={run.id}",
            "GYOZA_ATTEMPT=1",
            f"GYOZA_WORKER_ID={DW}",
            "MODE=x",
        } <= env
        assert info["Config"]["Cmd"] == ["/bin/sh", "/op"]  # the image's own command
        await runs.CancelRun(R.CancelRunRequest(id=run.id))
    # What the op itself sees.
    seen = await create(runs, image("env"))
    async with working(docker_worker(server.target)):
        done = await until_state(runs, seen.id, R.RUN_STATE_COMPLETED, timeout_s=SETTLE_S)
    assert dict(done.outputs) == {
        "GYOZA_ATTEMPT": "1",
        "GYOZA_RUN_ID": seen.id,
        "GYOZA_WORKER_ID": DW,
    }


async def test_a_gpu_run_asks_the_engine_for_its_gpu(docker: Any) -> None:
    """No GPU here: the device request is checked on the created container, never started."""
    from gyoza_grpc.worker.docker_executor import DockerHandler

    handler = DockerHandler()
    ctx = RunContext(make_claim("gpu-run", 2, vram_mb=1000, gpu_id=3, image=image("noop")), "gw")
    said: list[str] = []

    async def say(msg: str) -> None:
        said.append(msg)

    try:
        async with handler.stage(ctx, say):
            (found,) = await containers_of(docker, "gw")
            info = await (await docker.containers.get(found.id)).show()
            assert info["HostConfig"]["DeviceRequests"] == [
                {
                    "Driver": "nvidia",
                    "Count": 0,
                    "DeviceIDs": ["3"],
                    "Capabilities": [["gpu"]],
                    "Options": None,
                }
            ]
            env = set(info["Config"]["Env"])
            assert {"GYOZA_GPU_ID=3", "NVIDIA_VISIBLE_DEVICES=3"} <= env
        assert await containers_of(docker, "gw") == []  # staging undone
        assert said == []  # the image was there: no pull
    finally:
        await handler.close()


async def test_a_cancel_stops_and_removes_the_container_at_once(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub, docker: Any
) -> None:
    run = await create(runs, image("sleep"), {"seconds": 300})
    worker = docker_worker(server.target, stop_grace_s=10)
    worker.heartbeat_interval_s = 60  # the stop order cannot come with a heartbeat
    async with working(worker):
        await _live_container(docker, DW)
        t0 = time.monotonic()
        await runs.CancelRun(R.CancelRunRequest(id=run.id))

        async def gone() -> bool:
            return await containers_of(docker, DW) == []

        await eventually(gone, timeout_s=SETTLE_S)
        took = time.monotonic() - t0
    assert took < 3, f"the container outlived the cancel by {took:.1f}s"


async def test_a_worker_removes_its_orphans_at_start(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub, docker: Any
) -> None:
    def orphan(worker_id: str) -> dict[str, Any]:
        return {
            "Image": image("sleep"),
            "Labels": {"gyoza.run_id": "old", "gyoza.attempt": "1", "gyoza.worker_id": worker_id},
            "HostConfig": {"Init": True, "NetworkMode": "none"},
        }

    mine = await docker.containers.create(orphan(DW))
    other = await docker.containers.create(orphan("someone-else"))
    try:
        await mine.start()
        async with working(docker_worker(server.target)):
            await eventually(lambda: _empty(containers_of(docker, DW)), timeout_s=SETTLE_S)
            assert len(await containers_of(docker, "someone-else")) == 1  # not its own
    finally:
        for c in (mine, other):
            with contextlib.suppress(Exception):
                await c.delete(force=True)


async def _empty(found: Any) -> bool:
    return not await found


async def test_an_engine_outage_stops_claims_and_fails_no_run(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub, tmp_path: Path
) -> None:
    target = docker_engine.engine_socket()
    if target is None:
        pytest.skip("the engine is not reached through a Unix socket")
    proxy = docker_engine.SocketProxy(tmp_path / "engine.sock", target)
    async with grpc.aio.insecure_channel(server.target) as ch:
        workers = workers_pb2_grpc.WorkerServiceStub(ch)

        async def reason() -> str:
            try:
                w = await workers.GetWorker(W.GetWorkerRequest(worker_id=DW))
            except grpc.aio.AioRpcError:
                return "(not registered)"
            return str(w.worker.not_ready_reason)

        first = await create(runs, image("echo"), {"n": 1})
        async with (
            contextlib.AsyncExitStack() as stack,
            working(docker_worker(server.target, docker_host=proxy.url)),
        ):
            stack.push_async_callback(proxy.down)
            # No engine at all at start: registered, not claiming, and saying why.
            await eventually(
                lambda: _startswith(reason(), f"docker engine unreachable at {proxy.url}"),
                timeout_s=SETTLE_S,
            )
            await asyncio.sleep(1)
            assert (await runs.GetRun(R.GetRunRequest(id=first.id))).run.state == (
                R.RUN_STATE_PENDING
            )
            await proxy.up()
            await until_state(runs, first.id, R.RUN_STATE_COMPLETED, timeout_s=SETTLE_S)
            assert await reason() == ""
            # The engine goes away while the worker is claiming: runs are handed back, not
            # failed, and all complete once it is back.
            await proxy.down()
            wave = [await create(runs, image("echo"), {"n": n}) for n in range(5)]
            await eventually(
                lambda: _startswith(reason(), "docker engine unreachable"), timeout_s=SETTLE_S
            )
            await proxy.up()
            for run in wave:
                await until_state(runs, run.id, R.RUN_STATE_COMPLETED, timeout_s=SETTLE_S)
                assert "FAILED" not in names(await events(runs, run.id))
                # A run claimed in the moment before the worker saw the engine go was handed
                # back (a new attempt, not counted), never failed.
                tries = await runs.ListAttempts(R.ListAttemptsRequest(run_id=run.id))
                assert R.RUN_STATE_FAILED not in [a.state for a in tries.attempts]


async def _startswith(text: Any, prefix: str) -> bool:
    return str(await text).startswith(prefix)


async def test_shutdown_stops_and_removes_the_running_containers(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub, docker: Any
) -> None:
    run = await create(runs, image("sleep"), {"seconds": 300})
    worker = docker_worker(server.target)
    worker.shutdown_grace_s = 0.5
    task = asyncio.create_task(worker.run())
    try:
        await _live_container(docker, DW)
        worker.stop()
        await asyncio.wait_for(task, SETTLE_S)
    finally:
        if not task.done():
            task.cancel()
    assert await containers_of(docker, DW) == []
    failed = await until_state(runs, run.id, R.RUN_STATE_FAILED)
    assert failed.execution_summary.error_message == f"worker {DW} stopped before the run finished"
