"""WaitForStopOrders through a real server, on both backends: the long-poll answers as soon as
an attempt it watches must be abandoned (a cancel, an operator's UpdateRun, a retry, an
eviction), not at the next heartbeat; it stays quiet through the worker's own reports; it
refuses bad requests precisely; the worker's not-ready reason shows in its record. Across two
replicas (PostgreSQL) a cancel on one wakes the poll on the other, and the catch-up heals a
lost notification."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.server.store.wakeups import Wakeups, decode
from tests import databases
from tests.conftest import eventually, launch

S = runs_pb2
W = workers_pb2
# Far below the 10 s a heartbeat (a third of the default 30 s lease) would take, and generous
# for a busy 2-core machine.
PROMPT_S = 3.0


def _wait(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
def workers(channel: grpc.aio.Channel) -> workers_pb2_grpc.WorkerServiceStub:
    return workers_pb2_grpc.WorkerServiceStub(channel)


async def _running_run(
    runs: runs_pb2_grpc.RunServiceStub,
    workers: workers_pb2_grpc.WorkerServiceStub,
    worker_id: str = "w1",
    *,
    start: bool = True,
    **spec: object,
) -> str:
    """A run claimed by `worker_id` (and STARTED unless `start` is false)."""
    await workers.Heartbeat(
        W.HeartbeatRequest(worker_id=worker_id, resources=W.Resources(cpu=8, ram_mb=8000))
    )
    run = (await runs.CreateRun(S.CreateRunRequest(image="img", **spec))).run  # type: ignore[arg-type]
    claims = (await workers.ClaimRuns(W.ClaimRunsRequest(worker_id=worker_id))).claims
    assert [c.run.id for c in claims] == [run.id]
    if start:
        await runs.AddEvent(
            S.AddEventRequest(
                run_id=run.id,
                attempt=1,
                type=S.EVENT_TYPE_STARTED,
                payload=_struct({"worker_id": worker_id}),
            )
        )
    return run.id


def _struct(doc: dict[str, object]) -> object:
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.update(doc)
    return s


def _poll(
    workers: workers_pb2_grpc.WorkerServiceStub,
    running: list[tuple[str, int]],
    wait_s: float,
    worker_id: str = "w1",
) -> asyncio.Task[W.WaitForStopOrdersResponse]:
    req = W.WaitForStopOrdersRequest(
        worker_id=worker_id,
        running=[W.HeldAttempt(run_id=r, attempt=a) for r, a in running],
        wait=_wait(wait_s),
    )
    return asyncio.ensure_future(workers.WaitForStopOrders(req))


async def _waiting(gs: GyozaServer, n: int = 1) -> None:
    await eventually(lambda: _true(gs.stop_signal.waiting == n))


async def test_a_cancel_answers_the_poll_at_once(
    server: GyozaServer,
    runs: runs_pb2_grpc.RunServiceStub,
    workers: workers_pb2_grpc.WorkerServiceStub,
) -> None:
    run_id = await _running_run(runs, workers)
    poll = _poll(workers, [(run_id, 1)], 50)
    await _waiting(server)
    # The worker's own reports do not wake it.
    for p in (20, 40):
        await runs.AddEvent(
            S.AddEventRequest(run_id=run_id, attempt=1, type=S.EVENT_TYPE_PROGRESS, progress=p)
        )
    await runs.AddEvent(S.AddEventRequest(run_id=run_id, attempt=1, type=S.EVENT_TYPE_INFO))
    await asyncio.sleep(0.3)
    assert not poll.done()
    started = time.monotonic()
    await runs.CancelRun(S.CancelRunRequest(id=run_id))
    resp = await asyncio.wait_for(poll, PROMPT_S)
    assert time.monotonic() - started < PROMPT_S
    assert [(o.run_id, o.attempt, o.reason) for o in resp.stop] == [(run_id, 1, "cancelled")]
    assert server.stop_signal.waiting == 0


async def test_an_order_already_due_is_answered_without_waiting(
    server: GyozaServer,
    runs: runs_pb2_grpc.RunServiceStub,
    workers: workers_pb2_grpc.WorkerServiceStub,
) -> None:
    run_id = await _running_run(runs, workers)
    await runs.CancelRun(S.CancelRunRequest(id=run_id))
    resp = await asyncio.wait_for(_poll(workers, [(run_id, 1), ("no-such-run", 1)], 50), 5)
    assert {(o.run_id, o.reason) for o in resp.stop} == {
        ("no-such-run", "unknown run"),
        (run_id, "cancelled"),
    }


async def test_operator_changes_answer_the_poll(
    server: GyozaServer,
    runs: runs_pb2_grpc.RunServiceStub,
    workers: workers_pb2_grpc.WorkerServiceStub,
) -> None:
    gs = server
    # An operator fails a running run: the holder must stop.
    failed = await _running_run(runs, workers)
    poll = _poll(workers, [(failed, 1)], 50)
    await _waiting(gs)
    await runs.UpdateRun(
        S.UpdateRunRequest(
            id=failed,
            state=S.RUN_STATE_FAILED,
            update_mask={"paths": ["state"]},  # type: ignore[arg-type]
        )
    )
    resp = await asyncio.wait_for(poll, PROMPT_S)
    assert [o.reason for o in resp.stop] == ["run is FAILED"]
    # An ASSIGNED run unassigned by an operator goes back to PENDING.
    assigned = await _running_run(runs, workers, start=False)
    poll = _poll(workers, [(assigned, 1)], 50)
    await _waiting(gs)
    await runs.UpdateRun(
        S.UpdateRunRequest(
            id=assigned,
            state=S.RUN_STATE_PENDING,
            update_mask={"paths": ["state"]},  # type: ignore[arg-type]
        )
    )
    resp = await asyncio.wait_for(poll, PROMPT_S)
    assert [o.reason for o in resp.stop] == ["reassigned: the run went back to PENDING"]


async def test_an_eviction_answers_the_poll(database_url: str) -> None:
    gs = await launch(database_url, lease_seconds=1, sweep_interval_s=0.2)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            runs = runs_pb2_grpc.RunServiceStub(ch)
            workers = workers_pb2_grpc.WorkerServiceStub(ch)
            # A worker that stops heartbeating is evicted: its running attempt fails and the
            # run is retried, so a poll it still has open learns the attempt was superseded.
            evicted = await _running_run(
                runs, workers, "w2", retry_policy=S.RetryPolicy(max_attempts=3)
            )
            poll = _poll(workers, [(evicted, 1)], 50, worker_id="w2")
            resp = await asyncio.wait_for(poll, 10)
            assert [o.reason for o in resp.stop] == ["superseded by attempt 2"]
    finally:
        await gs.stop(0)


async def test_the_poll_ends_quietly_when_its_wait_runs_out_or_the_server_stops(
    database_url: str,
) -> None:
    gs = await launch(database_url)
    stopped = False
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            runs = runs_pb2_grpc.RunServiceStub(ch)
            workers = workers_pb2_grpc.WorkerServiceStub(ch)
            run_id = await _running_run(runs, workers)
            started = time.monotonic()
            resp = await _poll(workers, [(run_id, 1)], 0.4)
            assert list(resp.stop) == [] and time.monotonic() - started >= 0.35
            # No attempts to watch: it holds for its wait all the same.
            started = time.monotonic()
            resp = await _poll(workers, [], 0.3)
            assert list(resp.stop) == [] and time.monotonic() - started >= 0.25
            # The caller's deadline wins over a longer wait: answered just before it.
            req = W.WaitForStopOrdersRequest(
                worker_id="w1", running=[W.HeldAttempt(run_id=run_id, attempt=1)], wait=_wait(30)
            )
            started = time.monotonic()
            resp = await workers.WaitForStopOrders(req, timeout=2.0)
            assert list(resp.stop) == [] and 1.5 <= time.monotonic() - started < 2.0
            # Shutdown answers an open poll at once.
            poll = _poll(workers, [(run_id, 1)], 50)
            await _waiting(gs)
            await gs.stop(grace_s=5)
            stopped = True
            resp = await asyncio.wait_for(poll, 5)
            assert list(resp.stop) == []
    finally:
        if not stopped:
            await gs.stop(0)


async def test_bad_requests_are_refused_precisely(
    server: GyozaServer, workers: workers_pb2_grpc.WorkerServiceStub
) -> None:
    cases = [
        (W.WaitForStopOrdersRequest(worker_id=""), "worker_id"),
        (W.WaitForStopOrdersRequest(worker_id="w1", wait=_wait(61)), "wait"),
        (W.WaitForStopOrdersRequest(worker_id="w1", wait=_wait(-1)), "wait"),
        (
            W.WaitForStopOrdersRequest(
                worker_id="w1", running=[W.HeldAttempt(run_id="a\x00b", attempt=1)]
            ),
            "running.run_id",
        ),
    ]
    for req, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await workers.WaitForStopOrders(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    assert server.stop_signal.waiting == 0


async def test_the_not_ready_reason_shows_in_the_worker_record(
    server: GyozaServer, workers: workers_pb2_grpc.WorkerServiceStub
) -> None:
    reason = "docker engine unreachable at unix:///var/run/docker.sock: connection refused"
    await workers.Heartbeat(W.HeartbeatRequest(worker_id="w1", not_ready_reason=reason))
    w = (await workers.GetWorker(W.GetWorkerRequest(worker_id="w1"))).worker
    assert w.not_ready_reason == reason
    (listed,) = (await workers.ListWorkers(W.ListWorkersRequest())).workers
    assert listed.not_ready_reason == reason
    # Kept short rather than refused: a heartbeat must always go through.
    await workers.Heartbeat(W.HeartbeatRequest(worker_id="w1", not_ready_reason="x" * 5000))
    w = (await workers.GetWorker(W.GetWorkerRequest(worker_id="w1"))).worker
    assert w.not_ready_reason == "x" * 1024
    await workers.Heartbeat(W.HeartbeatRequest(worker_id="w1"))
    w = (await workers.GetWorker(W.GetWorkerRequest(worker_id="w1"))).worker
    assert w.not_ready_reason == ""


# -- across replicas (PostgreSQL) ---------------------------------------------------------------


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await databases.create_postgres_database()
    try:
        yield url
    finally:
        await databases.drop_postgres_database(url)


async def _replica(url: str, **overrides: Any) -> tuple[GyozaServer, grpc.aio.Channel]:
    gs = await launch(url, **overrides)
    assert gs.wakeup is not None
    await asyncio.wait_for(gs.wakeup.listening.wait(), 10)
    return gs, grpc.aio.insecure_channel(gs.target)


@pytest.mark.postgres
async def test_a_cancel_on_one_replica_answers_a_poll_on_another(pg_url: str) -> None:
    # No catch-up within the test: what arrives in time came through NOTIFY.
    a, cha = await _replica(pg_url, catchup_interval_s=600.0)
    b, chb = await _replica(pg_url, catchup_interval_s=600.0)
    try:
        runs_a = runs_pb2_grpc.RunServiceStub(cha)
        workers_a = workers_pb2_grpc.WorkerServiceStub(cha)
        workers_b = workers_pb2_grpc.WorkerServiceStub(chb)
        run_id = await _running_run(runs_a, workers_a)
        poll = _poll(workers_b, [(run_id, 1)], 50)
        await _waiting(b)
        # Progress written through A does not wake the poll on B.
        await runs_a.AddEvent(
            S.AddEventRequest(run_id=run_id, attempt=1, type=S.EVENT_TYPE_PROGRESS, progress=5)
        )
        await asyncio.sleep(0.3)
        assert not poll.done()
        await runs_a.CancelRun(S.CancelRunRequest(id=run_id))
        resp = await asyncio.wait_for(poll, PROMPT_S)
        assert [(o.run_id, o.reason) for o in resp.stop] == [(run_id, "cancelled")]
    finally:
        for gs, ch in ((a, cha), (b, chb)):
            await ch.close()
            await gs.stop(0)


@pytest.mark.postgres
async def test_a_lost_notification_is_healed_by_the_catch_up(pg_url: str) -> None:
    a, cha = await _replica(pg_url, catchup_interval_s=600.0)
    b, chb = await _replica(pg_url, catchup_interval_s=0.3)
    assert b.wakeup is not None
    try:
        runs_a = runs_pb2_grpc.RunServiceStub(cha)
        workers_a = workers_pb2_grpc.WorkerServiceStub(cha)
        workers_b = workers_pb2_grpc.WorkerServiceStub(chb)
        run_id = await _running_run(runs_a, workers_a)
        b.wakeup.on_payload = lambda _p: None  # type: ignore[method-assign]
        poll = _poll(workers_b, [(run_id, 1)], 50)
        await _waiting(b)
        await runs_a.CancelRun(S.CancelRunRequest(id=run_id))
        resp = await asyncio.wait_for(poll, 10)  # far sooner than the 50 s poll
        assert [(o.run_id, o.reason) for o in resp.stop] == [(run_id, "cancelled")]
    finally:
        for gs, ch in ((a, cha), (b, chb)):
            await ch.close()
            await gs.stop(0)


def test_the_wakeup_payload_carries_the_runs_whose_holder_may_stop() -> None:
    w = Wakeups(runs={"r1"}, stops={"r1"})
    got = decode(w.encode("me"))
    assert got is not None and got.stops == ("r1",)
    assert decode(Wakeups(runs={"r2"}).encode("me")).stops == ()  # type: ignore[union-attr]
