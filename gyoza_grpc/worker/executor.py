"""The bounded executor: at most `max_concurrency` attempts at once, each started only when
its constraints fit the worker's free capacity, each stoppable by (run_id, attempt).

It knows nothing of claiming or heartbeats: the claim loop asks `room()` how many claims to
take and `submit()`s them; the heartbeat asks `held()` what to report and `stop()`s what the
server says to abandon; shutdown calls `drain()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gyoza.v1 import runs_pb2
from gyoza_grpc.client import AsyncClient
from gyoza_grpc.worker.capacity import DoesNotFit, Key, LocalCapacity
from gyoza_grpc.worker.claims import ClaimedRun
from gyoza_grpc.worker.context import RunContext
from gyoza_grpc.worker.execution import (
    SHUTDOWN,
    Finals,
    Handler,
    Outcome,
    error_message,
    execute,
)
from gyoza_grpc.worker.reporter import DEFAULT_RETRY_DELAYS_S, Fenced, ReportFailed, RunReporter

log = logging.getLogger("gyoza_grpc.worker")

# After the grace period, how long cancelled attempts get to wind down (kill their process,
# send their FAILED) before the worker gives up on them.
CANCEL_WAIT_S = 10.0


@dataclass
class _Attempt:
    claim: ClaimedRun
    ctx: RunContext
    task: asyncio.Task[None]


class Executor:
    def __init__(
        self,
        client: AsyncClient,
        worker_id: str,
        handler: Handler,
        capacity: LocalCapacity,
        max_concurrency: int,
        *,
        retry_delays_s: tuple[float, ...] = DEFAULT_RETRY_DELAYS_S,
        on_lost_report: Callable[[], None] = lambda: None,
        cancel_wait_s: float = CANCEL_WAIT_S,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.client = client
        self.worker_id = worker_id
        self.handler = handler
        self.capacity = capacity
        self.max_concurrency = max_concurrency
        self.retry_delays_s = retry_delays_s
        self.on_lost_report = on_lost_report
        self.cancel_wait_s = cancel_wait_s
        self.finals = Finals()
        self._attempts: dict[Key, _Attempt] = {}
        self._changed = asyncio.Event()
        # Moves on whenever an attempt starts or ends (for the stop-order long-poll).
        self.held_version = 0
        self._held_changed = asyncio.Event()

    # -- for the claim loop ---------------------------------------------------------------

    def room(self) -> int:
        """How many more claims to take now (0: wait for `wait_for_room()`)."""
        if not self.capacity.has_room():
            return 0
        return max(0, self.max_concurrency - len(self._attempts))

    async def wait_for_room(self) -> int:
        while (n := self.room()) == 0:
            self._changed.clear()
            await self._changed.wait()
        return n

    def submit(self, claim: ClaimedRun) -> None:
        key = (claim.run_id, claim.attempt)
        if key in self._attempts:
            log.warning("run %s attempt %s is already running here", *key)
            return
        ctx = RunContext(claim, self.worker_id)
        task = asyncio.create_task(self._run(ctx), name=f"run {claim.run_id}/{claim.attempt}")
        self._attempts[key] = _Attempt(claim, ctx, task)
        task.add_done_callback(lambda _t: self._done(key))
        self._held_moved()

    # -- for the heartbeat ----------------------------------------------------------------

    def held(self) -> list[Key]:
        return list(self._attempts)

    def stoppable(self) -> list[Key]:
        """The attempts a stop order could still stop: running, their handler not returned."""
        return [k for k, a in self._attempts.items() if not a.ctx.closed]

    async def wait_held_change(self, version: int) -> None:
        """Until an attempt starts or ends after `held_version` was `version`."""
        while self.held_version == version:
            await self._held_changed.wait()

    def _held_moved(self) -> None:
        self.held_version += 1
        self._held_changed.set()
        self._held_changed = asyncio.Event()

    def known(self) -> set[Key]:
        """Attempts this worker still answers for: running, or their final report in flight."""
        return set(self._attempts) | self.finals.keys()

    def stop(self, run_id: str, attempt: int, reason: str) -> bool:
        """Abandon an attempt: its handler is cancelled and no further event is sent for it."""
        found = self._attempts.get((run_id, attempt))
        if found is None:
            return False
        if found.ctx.closed or found.ctx.cancelled:
            return True  # ending already (its final report is on its way), or being stopped
        log.info(
            "stopping run %s attempt %s: %s",
            run_id,
            attempt,
            reason,
            extra={"action": "stop_run", "run_id": run_id, "attempt": attempt},
        )
        found.ctx.cancel(reason)
        found.task.cancel()
        return True

    def __len__(self) -> int:
        return len(self._attempts)

    # -- shutdown -------------------------------------------------------------------------

    async def drain(self, grace_s: float, force: asyncio.Event | None = None) -> int:
        """Wait up to `grace_s` (or until `force` is set) for the running attempts to finish,
        then cancel the rest (each is reported FAILED). Returns how many were cancelled."""
        pending = {a.task for a in self._attempts.values()}
        if pending and grace_s > 0:
            waiters: set[asyncio.Future[Any]] = set(pending)
            forced = asyncio.ensure_future(force.wait()) if force is not None else None
            if forced is not None:
                waiters.add(forced)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace_s
            try:
                while pending and (forced is None or not forced.done()):
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                    pending = {t for t in pending if not t.done()}
                    waiters = {w for w in waiters if not w.done()}
            finally:
                if forced is not None:
                    forced.cancel()
        cancelled = [a for a in self._attempts.values() if not a.task.done()]
        for a in cancelled:
            a.ctx.cancel(SHUTDOWN)
            a.task.cancel()
        if cancelled:
            await asyncio.wait([a.task for a in cancelled], timeout=self.cancel_wait_s)
        call_timeout = self.client.timeout
        call_s = CANCEL_WAIT_S if call_timeout is None else call_timeout.total_seconds()
        await self.finals.wait(sum(self.retry_delays_s) + 2 * call_s)
        return len(cancelled)

    # -- one attempt ----------------------------------------------------------------------

    def _done(self, key: Key) -> None:
        self._attempts.pop(key, None)
        self._changed.set()
        self._held_moved()

    async def _run(self, ctx: RunContext) -> None:
        claim = ctx.claim
        where = f"run {claim.run_id} attempt {claim.attempt}"
        extra = {"run_id": claim.run_id, "attempt": claim.attempt}
        reporter = RunReporter(
            self.client,
            claim.run_id,
            claim.attempt,
            self.worker_id,
            retry_delays_s=self.retry_delays_s,
        )
        try:
            key = (claim.run_id, claim.attempt)
            try:
                async with self.capacity.hold(key, claim.constraints, claim.gpu_id):
                    self._changed.set()  # a claim waiting for capacity changes room()
                    gpu = "" if claim.gpu_id is None else f" on GPU {claim.gpu_id}"
                    log.info("%s started%s", where, gpu, extra={"action": "start_run", **extra})
                    outcome = await execute(ctx, self.handler, reporter, self.finals)
            except DoesNotFit as err:
                outcome = await self._refuse(key, reporter, err)
            log.info(
                "%s %s in %.2fs%s",
                where,
                outcome.state,
                outcome.duration_s,
                f": {outcome.detail}" if outcome.detail else "",
                extra={"action": f"{outcome.state}_run", **extra},
            )
        except Fenced as err:
            log.info("%s abandoned: %s", where, err, extra={"action": "fenced_run", **extra})
        except ReportFailed as err:
            log.error("%s: report lost: %s", where, err, extra={"action": "lost_report", **extra})
            self.on_lost_report()
        except asyncio.CancelledError:
            log.info(
                "%s stopped (%s)", where, ctx.stop_reason, extra={"action": "stopped_run", **extra}
            )
            raise
        except Exception:
            log.exception("%s: unexpected error in the worker", where)
            self.on_lost_report()

    async def _refuse(self, key: Key, reporter: RunReporter, err: DoesNotFit) -> Outcome:
        """A claim that can never fit (the server's view of this worker differs): FAILED,
        so that the run's retry policy decides, rather than holding it forever."""
        message = f"worker {self.worker_id} cannot run it: {error_message(err)}"
        await self.finals.send(
            key, reporter.send(runs_pb2.EVENT_TYPE_FAILED, payload={"error_message": message})
        )
        return Outcome("failed", message)
