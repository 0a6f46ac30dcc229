"""WorkerService through a real server: registration, resource-aware claims, long-poll,
exactly-once claiming under concurrency, eviction and fencing, stop orders, backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.server import GyozaServer
from tests.conftest import eventually, served

ET = runs_pb2
W = workers_pb2


@pytest.fixture
def workers(channel: grpc.aio.Channel) -> workers_pb2_grpc.WorkerServiceStub:
    return workers_pb2_grpc.WorkerServiceStub(channel)


def resources(cpu: int = 4, ram_mb: int = 8000, gpus: dict[int, int] | None = None) -> W.Resources:
    return W.Resources(
        cpu=cpu,
        ram_mb=ram_mb,
        gpus=[W.Gpu(gpu_id=g, vram_mb=v) for g, v in (gpus or {}).items()],
    )


async def register(
    workers: workers_pb2_grpc.WorkerServiceStub, worker_id: str, **kw: object
) -> W.HeartbeatResponse:
    return await workers.Heartbeat(
        W.HeartbeatRequest(worker_id=worker_id, resources=resources(**kw))  # type: ignore[arg-type]
    )


async def create(
    runs: runs_pb2_grpc.RunServiceStub, priority: int = 5, **constraints: int
) -> runs_pb2.Run:
    req = runs_pb2.CreateRunRequest(
        image="img", priority=priority, constraints=runs_pb2.Constraints(**constraints)
    )
    return (await runs.CreateRun(req)).run


async def claim(
    workers: workers_pb2_grpc.WorkerServiceStub, worker_id: str, n: int = 1, wait_s: float = 0
) -> list[W.Claim]:
    wait = duration_pb2.Duration()
    wait.FromNanoseconds(int(wait_s * 1e9))
    resp = await workers.ClaimRuns(W.ClaimRunsRequest(worker_id=worker_id, max_runs=n, wait=wait))
    return list(resp.claims)


async def code_of(coro: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro  # type: ignore[misc]
    return err.value.code()


async def test_registration_and_worker_views(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    resp = await workers.Heartbeat(
        W.HeartbeatRequest(
            worker_id="w1", resources=resources(cpu=8, gpus={0: 16000, 1: 8000}), tags=["gpu"]
        )
    )
    assert resp.lease_seconds == 30
    assert list(resp.stop) == []
    run = await create(runs, cpu=2, vram_mb=6000)
    (c,) = await claim(workers, "w1")
    assert c.run.id == run.id and c.gpu_id == 1  # best fit: the smaller GPU that fits
    w = (await workers.GetWorker(W.GetWorkerRequest(worker_id="w1"))).worker
    assert w.state == W.WORKER_STATE_ALIVE
    assert list(w.tags) == ["gpu"]
    assert w.free.cpu == 6
    assert {(g.gpu_id, g.vram_mb) for g in w.free.gpus} == {(0, 16000), (1, 2000)}
    assert [(h.run_id, h.attempt) for h in w.held] == [(run.id, 1)]
    listed = (await workers.ListWorkers(W.ListWorkersRequest())).workers
    assert [x.worker_id for x in listed] == ["w1"]
    assert await code_of(workers.GetWorker(W.GetWorkerRequest(worker_id="nope"))) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_claims_need_registration_and_valid_arguments(
    workers: workers_pb2_grpc.WorkerServiceStub,
) -> None:
    assert await code_of(claim(workers, "ghost")) == grpc.StatusCode.FAILED_PRECONDITION
    await register(workers, "w")
    assert await code_of(claim(workers, "w", n=101)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(claim(workers, "w", wait_s=61)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(claim(workers, "")) == grpc.StatusCode.INVALID_ARGUMENT
    bad = W.HeartbeatRequest(worker_id="x", resources=W.Resources(cpu=-1))
    assert await code_of(workers.Heartbeat(bad)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_priority_then_age_and_fit(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    await register(workers, "w", cpu=4, ram_mb=1000, gpus={0: 8000})
    low = await create(runs, priority=1)
    big = await create(runs, priority=9, ram_mb=5000)  # never fits this worker
    high_old = await create(runs, priority=7)
    high_new = await create(runs, priority=7)
    pinned = await create(runs, priority=3, gpu_id=1)  # the worker has no GPU 1
    gpu = await create(runs, priority=2, vram_mb=8000, gpu_id=0)
    got = [c.run.id for c in await claim(workers, "w", n=10)]
    assert got == [high_old.id, high_new.id, gpu.id, low.id]
    for rid in (big.id, pinned.id):
        run = (await runs.GetRun(runs_pb2.GetRunRequest(id=rid))).run
        assert run.state == ET.RUN_STATE_PENDING
    events = (await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=gpu.id))).events
    assert events[0].type == ET.EVENT_TYPE_ASSIGNED
    assert dict(events[0].payload) == {"worker_id": "w", "gpu_id": 0.0}


async def test_capacity_is_held_until_the_run_ends(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    await register(workers, "w", cpu=2)
    created = [await create(runs, cpu=1) for _ in range(3)]
    first = await claim(workers, "w", n=3)
    assert [c.run.id for c in first] == [r.id for r in created[:2]]
    assert await claim(workers, "w") == []
    done = first[0]
    for t in (ET.EVENT_TYPE_STARTED, ET.EVENT_TYPE_COMPLETED):
        await runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=done.run.id, type=t, attempt=done.attempt)
        )
    (third,) = await claim(workers, "w")
    assert third.run.id == created[2].id


async def test_eight_workers_claim_500_runs_each_exactly_once(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    ids = {(await create(runs)).id for _ in range(500)}
    for i in range(8):
        await register(workers, f"w{i}")
    claimed: dict[str, str] = {}

    async def worker_loop(worker_id: str) -> None:
        while True:
            got = await claim(workers, worker_id, n=7)
            if not got:
                return
            for c in got:
                assert c.run.id not in claimed, f"{c.run.id} claimed twice"
                claimed[c.run.id] = worker_id

    await asyncio.gather(*(worker_loop(f"w{i}") for i in range(8)))
    assert set(claimed) == ids
    assert len(set(claimed.values())) > 1  # the work was actually shared
    for rid in list(ids)[:20]:
        run = (await runs.GetRun(runs_pb2.GetRunRequest(id=rid))).run
        assert run.state == ET.RUN_STATE_ASSIGNED
        assert run.execution_summary.worker_id == claimed[rid]


async def test_long_poll_is_woken_by_create_run(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    await register(workers, "w")
    waiting = asyncio.create_task(claim(workers, "w", wait_s=10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    t0 = time.monotonic()
    run = await create(runs)
    (c,) = await asyncio.wait_for(waiting, 5)
    assert c.run.id == run.id
    assert time.monotonic() - t0 < 2
    t1 = time.monotonic()
    assert await claim(workers, "w", wait_s=0.3) == []
    assert time.monotonic() - t1 >= 0.25


async def test_a_long_poll_answers_before_the_callers_deadline(
    workers: workers_pb2_grpc.WorkerServiceStub,
) -> None:
    """A wait longer than the call's deadline ends early enough for the (empty) answer to
    arrive: never DEADLINE_EXCEEDED, which after a late claim would lose assigned runs."""
    await register(workers, "w")
    req = W.ClaimRunsRequest(worker_id="w", max_runs=1)
    req.wait.FromSeconds(30)
    t0 = time.monotonic()
    resp = await workers.ClaimRuns(req, timeout=2.0)
    assert list(resp.claims) == [] and 1.5 <= time.monotonic() - t0 < 2.0


async def test_cancellation_reaches_the_worker_through_stop(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    await register(workers, "w")
    a = await create(runs)
    b = await create(runs)
    claims = await claim(workers, "w", n=2)
    await runs.CancelRun(runs_pb2.CancelRunRequest(id=a.id))
    resp = await workers.Heartbeat(
        W.HeartbeatRequest(
            worker_id="w",
            resources=resources(),
            running=[W.HeldAttempt(run_id=c.run.id, attempt=c.attempt) for c in claims]
            + [W.HeldAttempt(run_id="gone", attempt=1)],
        )
    )
    assert {(s.run_id, s.reason) for s in resp.stop} == {
        (a.id, "cancelled"),
        ("gone", "unknown run"),
    }
    assert b.id not in {s.run_id for s in resp.stop}


async def test_backoff_delays_automatic_retries_not_manual_ones(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    await register(workers, "w")
    policy = runs_pb2.RetryPolicy(max_attempts=3, backoff_multiplier=2)
    policy.initial_backoff.FromMilliseconds(600)
    run = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="i", retry_policy=policy))).run
    (c,) = await claim(workers, "w")
    await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=ET.EVENT_TYPE_STARTED))
    failed = await runs.AddEvent(
        runs_pb2.AddEventRequest(run_id=run.id, type=ET.EVENT_TYPE_FAILED, attempt=c.attempt)
    )
    assert failed.run.state == ET.RUN_STATE_PENDING
    assert failed.run.current_attempt == 2
    due = failed.run.next_attempt_at.ToDatetime().timestamp()
    assert 0.5 < due - failed.run.updated_at.ToDatetime().timestamp() < 0.7
    assert await claim(workers, "w") == []  # not before its not-before time
    t0 = time.monotonic()
    (again,) = await claim(workers, "w", wait_s=5)
    assert again.run.id == run.id and again.attempt == 2
    assert 0.3 < time.monotonic() - t0 < 3
    # A manual retry is claimable at once.
    await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))
    retried = (await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))).run
    assert not retried.HasField("next_attempt_at")
    (manual,) = await claim(workers, "w")
    assert manual.attempt == 3


@pytest.fixture
async def short_lease_server(database_url: str) -> AsyncIterator[GyozaServer]:
    async with served(database_url, lease_seconds=1, sweep_interval_s=0.1) as gs:
        yield gs


async def test_eviction_hands_runs_back_and_fences_the_lost_worker(
    short_lease_server: GyozaServer,
) -> None:
    async with grpc.aio.insecure_channel(short_lease_server.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        await register(workers, "lost")
        assigned = await create(runs, priority=9)
        running = await create(runs, priority=1)
        claims = {c.run.id: c for c in await claim(workers, "lost", n=2)}
        await runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=running.id, type=ET.EVENT_TYPE_STARTED, attempt=1)
        )

        async def evicted() -> bool:
            w = (await workers.GetWorker(W.GetWorkerRequest(worker_id="lost"))).worker
            return w.state == W.WORKER_STATE_EVICTED

        await eventually(evicted, timeout_s=5)
        a = (await runs.GetRun(runs_pb2.GetRunRequest(id=assigned.id, view=2))).run
        assert (a.state, a.current_attempt) == (ET.RUN_STATE_PENDING, 2)
        assert a.events[0].type == ET.EVENT_TYPE_RETRIED and "lost" in a.events[0].msg
        r = (await runs.GetRun(runs_pb2.GetRunRequest(id=running.id))).run
        assert r.state == ET.RUN_STATE_FAILED
        assert r.execution_summary.error_message == "worker lost lost"
        # The lost worker is fenced off and must re-register.
        late = runs_pb2.AddEventRequest(
            run_id=assigned.id, type=ET.EVENT_TYPE_STARTED, attempt=claims[assigned.id].attempt
        )
        assert await code_of(runs.AddEvent(late)) == grpc.StatusCode.FAILED_PRECONDITION
        assert await code_of(claim(workers, "lost")) == grpc.StatusCode.FAILED_PRECONDITION
        await register(workers, "lost")
        (again,) = await claim(workers, "lost")
        assert (again.run.id, again.attempt) == (assigned.id, 2)


async def test_a_wake_up_that_does_not_fit_is_passed_on(
    workers: workers_pb2_grpc.WorkerServiceStub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    """Each new run wakes one waiter; one that cannot fit it hands the wake-up on."""
    await register(workers, "cpu-only", cpu=4)
    await register(workers, "gpu", cpu=4, gpus={0: 8000})
    cpu_wait = asyncio.create_task(claim(workers, "cpu-only", wait_s=10))
    await asyncio.sleep(0.1)  # the CPU-only worker waits longest, so it is woken first
    gpu_wait = asyncio.create_task(claim(workers, "gpu", wait_s=10))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    run = await create(runs, vram_mb=4000)
    (c,) = await asyncio.wait_for(gpu_wait, 5)
    assert (c.run.id, c.gpu_id) == (run.id, 0)
    assert time.monotonic() - t0 < 2
    assert not cpu_wait.done()
    plain = await create(runs)
    (c2,) = await asyncio.wait_for(cpu_wait, 5)
    assert c2.run.id == plain.id
