"""WorkerService's calls: the workers' view for everyone, and a worker's own calls."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from gyoza.v1 import runs_pb2, workers_pb2
from gyoza_grpc.client.convert import to_duration
from gyoza_grpc.client.transport import Transport


class WorkerCalls:
    """The WorkerService part of `AsyncClient` (and, through it, of `Client`)."""

    _transport: Transport

    async def list_workers(self, *, timeout: timedelta | None = None) -> list[workers_pb2.Worker]:
        """Every worker the server knows, alive or evicted, with its free capacity."""
        resp = await self._transport.unary(
            self._transport.stubs.workers.ListWorkers,
            workers_pb2.ListWorkersRequest(),
            timeout=timeout,
            retry=True,
        )
        return list(resp.workers)

    async def get_worker(
        self, worker_id: str, *, timeout: timedelta | None = None
    ) -> workers_pb2.Worker:
        """One worker, with the attempts it holds (`worker.held`)."""
        resp = await self._transport.unary(
            self._transport.stubs.workers.GetWorker,
            workers_pb2.GetWorkerRequest(worker_id=worker_id),
            timeout=timeout,
            retry=True,
        )
        worker: workers_pb2.Worker = resp.worker
        return worker

    async def heartbeat(
        self,
        worker_id: str,
        *,
        resources: workers_pb2.Resources,
        tags: Iterable[str] = (),
        running: Iterable[tuple[str, int]] = (),
        not_ready_reason: str = "",
        timeout: timedelta | None = None,
    ) -> workers_pb2.HeartbeatResponse:
        """Register the worker (first call) or renew its lease; `running` is the
        (run_id, attempt) pairs it executes, `not_ready_reason` why it claims nothing now
        (at most 1,024 characters; "" when it is ready). The answer holds the lease and the
        attempts to stop. Retried: a heartbeat states the worker's whole view, so a repeat is
        harmless."""
        request = workers_pb2.HeartbeatRequest(
            worker_id=worker_id,
            resources=resources,
            tags=list(tags),
            running=_held(running),
            not_ready_reason=not_ready_reason,
        )
        resp: workers_pb2.HeartbeatResponse = await self._transport.unary(
            self._transport.stubs.workers.Heartbeat, request, timeout=timeout, retry=True
        )
        return resp

    async def claim_runs(
        self,
        worker_id: str,
        *,
        max_runs: int = 1,
        wait: timedelta | None = None,
        timeout: timedelta | None = None,
    ) -> list[workers_pb2.Claim]:
        """Take up to `max_runs` PENDING runs that fit the worker's free capacity, waiting up
        to `wait` (at most 60 s) for one to arrive; the deadline is `wait` plus `timeout`.
        Not retried: a claim that got through but was not answered holds its runs (see
        `get_worker`'s `held`)."""
        request = workers_pb2.ClaimRunsRequest(
            worker_id=worker_id,
            max_runs=max_runs,
            wait=None if wait is None else to_duration(wait),
        )
        resp = await self._transport.unary(
            self._transport.stubs.workers.ClaimRuns,
            request,
            timeout=timeout,
            retry=False,
            extra_s=0.0 if wait is None else wait.total_seconds(),
        )
        return list(resp.claims)

    async def wait_for_stop_orders(
        self,
        worker_id: str,
        *,
        running: Iterable[tuple[str, int]],
        wait: timedelta,
        timeout: timedelta | None = None,
    ) -> list[workers_pb2.StopOrder]:
        """The stop orders for the (run_id, attempt) pairs of `running` (cancelled,
        superseded, handed to another worker), as soon as there is one, or [] after `wait`
        (at most 60 s); the deadline is `wait` plus `timeout`. Retried: it changes nothing."""
        request = workers_pb2.WaitForStopOrdersRequest(
            worker_id=worker_id, running=_held(running), wait=to_duration(wait)
        )
        resp = await self._transport.unary(
            self._transport.stubs.workers.WaitForStopOrders,
            request,
            timeout=timeout,
            retry=True,
            extra_s=wait.total_seconds(),
        )
        return list(resp.stop)

    async def release_run(
        self, worker_id: str, run_id: str, attempt: int, *, timeout: timedelta | None = None
    ) -> runs_pb2.Run:
        """Hand back a run the worker claimed but never started: it is PENDING again, the
        attempt not counted as a try. Not retried."""
        request = workers_pb2.ReleaseRunRequest(worker_id=worker_id, run_id=run_id, attempt=attempt)
        resp = await self._transport.unary(
            self._transport.stubs.workers.ReleaseRun, request, timeout=timeout, retry=False
        )
        run: runs_pb2.Run = resp.run
        return run


def _held(running: Iterable[tuple[str, int]]) -> list[workers_pb2.HeldAttempt]:
    return [workers_pb2.HeldAttempt(run_id=r, attempt=a) for r, a in running]
