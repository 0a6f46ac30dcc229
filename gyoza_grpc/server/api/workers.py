"""WorkerService: heartbeats, claims and stop orders (each with a long-poll), and the workers'
view."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeAlias

import grpc

from gyoza.v1 import workers_pb2, workers_pb2_grpc
from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.limits import DEFAULT_LIMITS
from gyoza_grpc.domain.model import Run
from gyoza_grpc.domain.placement import Capacity, Gpu
from gyoza_grpc.domain.workers import (
    MAX_NOT_READY_REASON_LEN,
    HeldAttempt,
    StopOrder,
    validate_registration,
)
from gyoza_grpc.server.api import convert
from gyoza_grpc.server.api.errors import unary
from gyoza_grpc.server.api.response_budget import ResponseBudget
from gyoza_grpc.server.api.runs import MAX_ID_LEN
from gyoza_grpc.server.store.worker_store import WorkerDetail, WorkerStore
from gyoza_grpc.server.streams.stop_signal import StopSignal
from gyoza_grpc.server.streams.work_signal import WorkSignal

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

MAX_CLAIM = 100
MAX_WAIT_S = 60.0


def _worker_id(value: str) -> str:
    return convert.required_text(value, "worker_id")


def _wait_s(wait: Any) -> float:
    """A request's `wait` in seconds: INVALID_ARGUMENT outside 0..MAX_WAIT_S."""
    wait_s: float = wait.seconds + wait.nanos / 1e9
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise InvalidArgument.field("wait", f"must be between 0 and {MAX_WAIT_S:g} s")
    return wait_s


def _running(held: Any, field: str) -> list[HeldAttempt]:
    return [HeldAttempt(convert.text(h.run_id, f"{field}.run_id"), h.attempt) for h in held]


def _orders_pb(orders: list[StopOrder]) -> list[workers_pb2.StopOrder]:
    return [
        workers_pb2.StopOrder(run_id=o.run_id, attempt=o.attempt, reason=o.reason) for o in orders
    ]


def _capacity(r: workers_pb2.Resources) -> Capacity:
    return Capacity(
        cpu=r.cpu, ram_mb=r.ram_mb, gpus=tuple(Gpu(g.gpu_id, g.vram_mb) for g in r.gpus)
    )


def _resources_pb(c: Capacity) -> workers_pb2.Resources:
    return workers_pb2.Resources(
        cpu=c.cpu,
        ram_mb=c.ram_mb,
        gpus=[workers_pb2.Gpu(gpu_id=g.gpu_id, vram_mb=g.vram_mb) for g in c.gpus],
    )


_STATE = {
    "ALIVE": workers_pb2.WORKER_STATE_ALIVE,
    "EVICTED": workers_pb2.WORKER_STATE_EVICTED,
}


def worker_to_pb(d: WorkerDetail) -> workers_pb2.Worker:
    w = d.worker
    return workers_pb2.Worker(
        worker_id=w.worker_id,
        state=_STATE[w.state.value],
        resources=_resources_pb(w.resources),
        free=_resources_pb(d.free),
        tags=list(w.tags),
        last_heartbeat=convert.now_pb(w.last_heartbeat),
        registered_at=convert.now_pb(w.registered_at),
        lease_expires_at=convert.now_pb(w.lease_expires_at),
        held=[workers_pb2.HeldAttempt(run_id=h.run_id, attempt=h.attempt) for h in d.held],
        not_ready_reason=w.not_ready_reason,
    )


class _Answer:
    """A ClaimRuns answer, filled as the store assigns: each run goes in before it is
    assigned, and a run that would pass the response budget is not assigned at all."""

    def __init__(self, out: workers_pb2.ClaimRunsResponse, max_bytes: int) -> None:
        self._out = out
        self._budget = ResponseBudget(max_bytes)

    def admit(self, run: Run, gpu_id: int | None) -> bool:
        claim = self._out.claims.add(attempt=run.current_attempt)
        convert.fill_run(claim.run, run)  # in place: no Run built and then copied in
        if gpu_id is not None:
            claim.gpu_id = gpu_id
        if self._budget.admit(claim):
            return True
        del self._out.claims[-1]
        return False


def _within_deadline(wait_s: float, context: Context) -> float:
    """A long-poll's wait, ended early enough before the caller's deadline for the answer to
    reach it on a busy server: a tenth of the time left, at least 50 ms, at most half a
    second. Past its deadline the caller would see DEADLINE_EXCEEDED, and a claim answer
    would be lost after its runs were assigned."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return wait_s
    room = min(max(remaining * 0.1, 0.05), 0.5)
    return min(wait_s, max(0.0, remaining - room))


class WorkerServicer(workers_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        store: WorkerStore,
        signal: WorkSignal,
        *,
        lease_s: int,
        max_response_bytes: int = DEFAULT_LIMITS.max_response_bytes,
        stop_signal: StopSignal | None = None,
    ) -> None:
        self._store = store
        self._signal = signal
        self._lease_s = lease_s
        self._max_response_bytes = max_response_bytes
        self._stops = stop_signal or StopSignal()

    @unary
    async def Heartbeat(
        self, request: workers_pb2.HeartbeatRequest, context: Context
    ) -> workers_pb2.HeartbeatResponse:
        worker_id = _worker_id(request.worker_id)
        resources = _capacity(request.resources)
        tags = [convert.text(t, "tags") for t in request.tags]
        validate_registration(worker_id, resources, tags)
        running = _running(request.running, "running")
        # Kept short rather than refused: a worker must never fail to heartbeat over it.
        not_ready = convert.text(request.not_ready_reason, "not_ready_reason")[
            :MAX_NOT_READY_REASON_LEN
        ]
        orders = await self._store.heartbeat(
            worker_id, resources, tags, running, timedelta(seconds=self._lease_s), not_ready
        )
        # New capacity may fit runs that were waiting.
        self._signal.notify_worker(worker_id)
        return workers_pb2.HeartbeatResponse(lease_seconds=self._lease_s, stop=_orders_pb(orders))

    @unary
    async def WaitForStopOrders(
        self, request: workers_pb2.WaitForStopOrdersRequest, context: Context
    ) -> workers_pb2.WaitForStopOrdersResponse:
        worker_id = _worker_id(request.worker_id)
        running = _running(request.running, "running")
        wait_s = _within_deadline(_wait_s(request.wait), context)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        with self._stops.watch(worker_id, running) as waiter:
            while True:
                waiter.clear()  # a change from here on wakes the wait below
                orders = await self._store.stop_orders(worker_id, running)
                left = deadline - loop.time()
                if orders or left <= 0 or self._stops.closed:
                    break
                if not await waiter.wait(left):
                    break  # ran out, and nothing changed since the read: its answer stands
        return workers_pb2.WaitForStopOrdersResponse(stop=_orders_pb(orders))

    @unary
    async def ReleaseRun(
        self, request: workers_pb2.ReleaseRunRequest, context: Context
    ) -> workers_pb2.ReleaseRunResponse:
        worker_id = _worker_id(request.worker_id)
        run_id = convert.required_text(request.run_id, "run_id", max_len=MAX_ID_LEN)
        if request.attempt < 1:
            raise InvalidArgument.field("attempt", "must be the claim's attempt (1 or more)")
        run = await self._store.release(worker_id, run_id, request.attempt)
        out = workers_pb2.ReleaseRunResponse()
        convert.fill_run(out.run, run)
        return out

    @unary
    async def ClaimRuns(
        self, request: workers_pb2.ClaimRunsRequest, context: Context
    ) -> workers_pb2.ClaimRunsResponse:
        worker_id = _worker_id(request.worker_id)
        violations = []
        max_runs = request.max_runs or 1
        if not 1 <= max_runs <= MAX_CLAIM:
            violations.append(
                FieldViolation("max_runs", f"must be between 1 and {MAX_CLAIM} (0 means 1)")
            )
        try:
            wait_s = _wait_s(request.wait)
        except InvalidArgument as err:
            violations.extend(err.violations)
        if violations:
            raise InvalidArgument.for_fields(violations)
        wait_s = _within_deadline(wait_s, context)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        hops = 0
        while True:
            version = self._signal.version
            # Each run is put in the answer before it is assigned, and only if it fits.
            out = workers_pb2.ClaimRunsResponse()
            claimed, next_due = await self._store.claim(
                worker_id, max_runs, _Answer(out, self._max_response_bytes).admit
            )
            if not claimed:
                self._signal.pass_on(hops)  # a wake-up this worker could not use
            left = deadline - loop.time()
            if claimed or left <= 0 or self._signal.closed:
                break
            timeout = left
            if next_due is not None:
                due_in = (next_due - self._store.now).total_seconds()
                timeout = min(timeout, max(due_in, 0.001))
            woken = await self._signal.wait(worker_id, version, timeout)
            if woken is None and timeout == left:
                break  # the wait ran out with no new work: a last claim would only be late
            hops = woken or 0
        return out

    @unary
    async def GetWorker(
        self, request: workers_pb2.GetWorkerRequest, context: Context
    ) -> workers_pb2.GetWorkerResponse:
        detail = await self._store.get_worker(_worker_id(request.worker_id))
        return workers_pb2.GetWorkerResponse(worker=worker_to_pb(detail))

    @unary
    async def ListWorkers(
        self, request: workers_pb2.ListWorkersRequest, context: Context
    ) -> workers_pb2.ListWorkersResponse:
        return workers_pb2.ListWorkersResponse(
            workers=[worker_to_pb(d) for d in await self._store.list_workers()]
        )
