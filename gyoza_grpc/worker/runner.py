"""The Worker: a heartbeat task, a claim loop and a bounded executor, wired together.

    worker = Worker("127.0.0.1:50051", "w1", handler, cpu=4, ram_mb=8000)
    await worker.run(handle_signals=True)

- The heartbeat task (`heartbeat.py`) registers the worker, renews its lease and carries out
  stop orders; the stop-order poll (`stop_orders.py`) brings those orders as they happen.
- When the handler runs on an engine (`engine.py`: the docker executor), the engine watch
  keeps the worker from claiming while the engine does not answer, and removes what earlier
  attempts of this worker id left there before the first claim.
- The claim loop asks for work only while the executor has room (a free slot of
  `max_concurrency` and, when CPUs were declared, a free CPU), with a long-poll of `claim_wait`,
  and hands each claim to the executor.
- The executor (`executor.py`) runs each claim concurrently, once its constraints fit, and
  reports its events (`execution.py`).

Shutdown (`stop()`, or SIGTERM / SIGINT with `handle_signals`): the worker stops claiming at
once, keeps heartbeating, and gives the running attempts `shutdown_grace` to finish. Those still
running then are cancelled (a command's process is killed) and reported FAILED ("worker W
stopped before the run finished"), so the run's retry policy applies at once rather than after
the server's eviction (lease + sweep interval); a report that cannot be delivered leaves the
attempt to that eviction. A second signal (or `stop(force=True)`) ends the grace period.

The worker also reconciles what the server says it holds with what it runs: at start (runs
left by an earlier process with the same worker id), after a report or a claim answer was
lost, and at shutdown. An ASSIGNED run it does not know is handed back to PENDING (it never
started: not counted as an attempt); a RUNNING one is reported FAILED. So a worker id must
belong to one process at a time.

Every call goes through one `gyoza_grpc.client.AsyncClient`: its channel (keepalive, quick
reconnection), the key, TLS, each call's deadline, the retries of calls that are safe to
repeat (heartbeats, reads, stop-order polls) and the errors as GyozaError classes. What the
client does not repeat stays the worker's policy: claims back off and are reconciled,
events are retried with their attempt as the fence (`reporter.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import grpc

from gyoza.v1 import runs_pb2
from gyoza_grpc.client import (
    AsyncClient,
    EventType,
    FailedPrecondition,
    GyozaError,
    PermissionDenied,
    RetryConfig,
    Unauthenticated,
    Unimplemented,
)
from gyoza_grpc.domain.placement import Capacity, Gpu
from gyoza_grpc.worker.capacity import LocalCapacity
from gyoza_grpc.worker.claims import ClaimedRun
from gyoza_grpc.worker.engine import Engine, EngineWatch
from gyoza_grpc.worker.execution import Handler
from gyoza_grpc.worker.executor import CANCEL_WAIT_S, Executor
from gyoza_grpc.worker.failures import AMBIGUOUS, describe
from gyoza_grpc.worker.heartbeat import Heartbeat
from gyoza_grpc.worker.reporter import DEFAULT_RETRY_DELAYS_S
from gyoza_grpc.worker.stop_orders import StopOrderPoll

log = logging.getLogger("gyoza_grpc.worker")

MAX_CLAIM = 100  # the server's bound on ClaimRunsRequest.max_runs
MAX_CLAIM_WAIT = timedelta(seconds=60)
DEFAULT_CALL_TIMEOUT = timedelta(seconds=10)
# A long-poll (a claim, a stop-order poll) is answered by the server when its wait ends; its
# deadline is the wait plus the call timeout, and at least this much more.
LONG_POLL_MARGIN = timedelta(seconds=5)
# The safe calls (heartbeats, reads, stop-order polls) are tried again within their deadline,
# never more than a second apart: a restarted server hears from the worker at once.
CALL_RETRY = RetryConfig(max_backoff=timedelta(seconds=1))
# After a failed claim (never repeated as such: what it may have assigned is reconciled
# first): the first pause, doubled after each failure in a row up to the most.
CLAIM_RETRY_S = 1.0
CLAIM_RETRY_MAX_S = 10.0
# Claims refused for what the worker is, which trying again cannot change: a bad key, a key
# of another role, a server without WorkerService. Any other failure is logged and retried.
REFUSED: tuple[type[GyozaError], ...] = (Unauthenticated, PermissionDenied, Unimplemented)


class WorkerError(Exception):
    """The worker cannot go on (the server refused its registration or its claims)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Claims runs from a gyoza-grpc server and executes them with `handler`.

    Args:
        target: the server, HOST:PORT.
        worker_id: unique per process (see the module notes on reconciling).
        handler: `(inputs, ctx) -> outputs`, a plain function (run in a thread) or a
            coroutine function; see `gyoza_grpc.worker.execution`.
        cpu, ram_mb, gpus: the resources declared to the server; runs hold their constraints.
        tags: reported with each heartbeat.
        max_concurrency: attempts at once; default the CPUs declared (at least 1).
        heartbeat_interval: default a third of the server's lease.
        claim_wait: how long a claim waits for work (long-poll), at most 60 s.
        shutdown_grace: how long running attempts get to finish on shutdown.
        report_retry_delays: the pauses between tries of an event while the server is
            unreachable; after the last, the event is given up (and reconciled later).
        call_timeout: the deadline of each call (a claim gets `claim_wait` more).
        api_key: sent with every call as `x-api-key` metadata (a key of role worker).
        credentials: TLS for the channel (`gyoza_grpc.tls.channel_credentials`); None for
            plaintext.
        channel_options: extra grpc channel options (they replace the client's defaults of
            the same name).
        client: an AsyncClient to call the server through instead of one made from
            `target`, `api_key`, `credentials`, `call_timeout` and `channel_options` (the
            caller closes it); its deadline is then each call's.
        cancel_wait: after the shutdown grace, how long cancelled attempts get to wind down
            (stop their container or process, report FAILED).
    """

    def __init__(
        self,
        target: str,
        worker_id: str,
        handler: Handler,
        *,
        cpu: int = 1,
        ram_mb: int = 0,
        gpus: Sequence[Gpu] = (),
        tags: Sequence[str] = (),
        max_concurrency: int | None = None,
        heartbeat_interval: timedelta | None = None,
        claim_wait: timedelta = timedelta(seconds=20),
        shutdown_grace: timedelta = timedelta(seconds=30),
        report_retry_delays: Sequence[timedelta] | None = None,
        call_timeout: timedelta = DEFAULT_CALL_TIMEOUT,
        channel_options: Sequence[tuple[str, Any]] = (),
        client: AsyncClient | None = None,
        api_key: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        cancel_wait: timedelta = timedelta(seconds=CANCEL_WAIT_S),
    ) -> None:
        if not worker_id:
            raise ValueError("worker_id must not be empty")
        if cpu < 0 or ram_mb < 0 or any(g.vram_mb < 0 or g.gpu_id < 0 for g in gpus):
            raise ValueError("resources must not be negative")
        if not timedelta(0) <= claim_wait <= MAX_CLAIM_WAIT:
            raise ValueError(f"claim_wait must be between 0 and {MAX_CLAIM_WAIT}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.target = target
        self.worker_id = worker_id
        self.handler = handler
        self.resources = Capacity(cpu=cpu, ram_mb=ram_mb, gpus=tuple(gpus))
        self.tags = list(tags)
        self.max_concurrency = max_concurrency or max(1, cpu)
        self.heartbeat_interval_s = (
            None if heartbeat_interval is None else heartbeat_interval.total_seconds()
        )
        self.claim_wait_s = claim_wait.total_seconds()
        self.shutdown_grace_s = shutdown_grace.total_seconds()
        self.report_retry_delays_s = (
            DEFAULT_RETRY_DELAYS_S
            if report_retry_delays is None
            else tuple(d.total_seconds() for d in report_retry_delays)
        )
        if client is not None and client.timeout is not None:
            call_timeout = client.timeout
        self.call_timeout_s = call_timeout.total_seconds()
        self.cancel_wait_s = cancel_wait.total_seconds()
        self.channel_options = list(channel_options)
        self._client = client
        self._api_key = api_key
        self._credentials = credentials
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._needs_reconcile = False
        self._executor: Executor | None = None
        self._engine_watch: EngineWatch | None = None

    @property
    def running(self) -> list[tuple[str, int]]:
        """The (run_id, attempt) pairs this worker is executing."""
        return [] if self._executor is None else self._executor.held()

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming and shut down; with `force` (or called again), without grace."""
        if force or self._stopping.is_set():
            self._force.set()
        self._stopping.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        again = self._stopping.is_set()
        log.info(
            "%s: %s",
            sig.name,
            "stopping now"
            if again
            else f"stopping: no new claims; running runs get {self.shutdown_grace_s:g}s",
        )
        self.stop()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Work until `stop()` (or SIGTERM / SIGINT with `handle_signals`), then shut down.
        Raises WorkerError if the server refuses the worker."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        client = self._client or AsyncClient(
            self.target,
            api_key=self._api_key,
            tls=self._credentials or False,
            timeout=timedelta(seconds=self.call_timeout_s),
            retry=CALL_RETRY,
            channel_options=self.channel_options,
        )
        executor = Executor(
            client,
            self.worker_id,
            self.handler,
            LocalCapacity(self.resources),
            self.max_concurrency,
            retry_delays_s=self.report_retry_delays_s,
            on_lost_report=self._lost_report,
            cancel_wait_s=self.cancel_wait_s,
        )
        self._executor = executor
        watch = self._engine_watch = (
            EngineWatch(self.handler, self.worker_id, keep=executor.known)
            if isinstance(self.handler, Engine)
            else None
        )
        heartbeat = Heartbeat(
            client,
            self.worker_id,
            self.resources,
            self.tags,
            running=executor.held,
            stop=executor.stop,
            not_ready=(lambda: watch.not_ready_reason) if watch is not None else (lambda: ""),
            interval_s=self.heartbeat_interval_s,
        )
        stop_poll = StopOrderPoll(
            client,
            self.worker_id,
            stoppable=executor.stoppable,
            version=lambda: executor.held_version,
            wait_change=executor.wait_held_change,
            stop=executor.stop,
            timeout=self._long_poll_timeout,
        )
        log.info(
            "worker %s: target %s, cpu %d, ram_mb %d, gpus [%s], up to %d runs at once",
            self.worker_id,
            self.target,
            self.resources.cpu,
            self.resources.ram_mb,
            ", ".join(f"{g.gpu_id}:{g.vram_mb}" for g in self.resources.gpus),
            self.max_concurrency,
        )
        side: list[asyncio.Task[None]] = []
        if watch is not None:
            try:
                await watch.check_once()  # the first heartbeat already says how the engine is
            except Exception as err:  # the watch tries again
                log.warning("container engine check failed: %s", err)
            watch.on_change = heartbeat.poke
            side.append(asyncio.create_task(watch.run(), name="engine watch"))
        beating = asyncio.create_task(heartbeat.run(), name="heartbeat")
        side.append(asyncio.create_task(stop_poll.run(), name="stop orders"))
        claiming: asyncio.Task[None] | None = None
        grace_s = self.shutdown_grace_s
        try:
            await self._first_of(heartbeat.registered.wait(), beating)
            if not self._stopping.is_set():
                await self._reconcile(client, executor, "restarted")
                claiming = asyncio.create_task(
                    self._claim_loop(client, executor, heartbeat), name="claims"
                )
                await self._first_of(self._stopping.wait(), beating, claiming)
        except asyncio.CancelledError:
            grace_s = 0
            raise
        finally:
            await self._shut_down(client, executor, heartbeat, beating, claiming, grace_s)
            for task in side:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if isinstance(self.handler, Engine):
                await self.handler.close()
            if self._client is None:
                await client.close()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _first_of(self, main: Any, *watched: asyncio.Task[None]) -> None:
        """Wait for `main` (a coroutine) unless a watched task ends first (its error is raised)
        or a stop is requested."""
        waiter = asyncio.ensure_future(main)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopping, *watched}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (waiter, stopping):
                f.cancel()
        for task in watched:
            if task.done():
                err = task.exception()
                if isinstance(err, GyozaError):
                    raise WorkerError(f"the server refused the worker: {describe(err)}") from err
                if err is not None:
                    raise err
                raise WorkerError(f"{task.get_name()} ended unexpectedly")

    @property
    def _long_poll_timeout(self) -> timedelta:
        """A long-poll's deadline beyond its wait."""
        return max(LONG_POLL_MARGIN, timedelta(seconds=self.call_timeout_s))

    async def _shut_down(
        self,
        client: AsyncClient,
        executor: Executor,
        heartbeat: Heartbeat,
        beating: asyncio.Task[None],
        claiming: asyncio.Task[None] | None,
        grace_s: float,
    ) -> None:
        if claiming is not None:
            claiming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await claiming
        if len(executor):
            log.info("waiting up to %gs for %d running run(s)", grace_s, len(executor))
        cancelled = await executor.drain(grace_s, self._force)
        if cancelled:
            log.warning("cancelled %d run(s) still going after the grace period", cancelled)
        if heartbeat.registered.is_set() and not beating.done() and not self._force.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._reconcile(client, executor, "stopped"), 2 * self.call_timeout_s
                )
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beating
        log.info("worker %s stopped", self.worker_id)

    def _lost_report(self) -> None:
        self._needs_reconcile = True

    # -- the claim loop -------------------------------------------------------------------

    async def _claim_loop(
        self, client: AsyncClient, executor: Executor, heartbeat: Heartbeat
    ) -> None:
        """Claims while the executor has room. A failed claim never ends the worker (unless
        the server refuses it as such, REFUSED): it is logged, the loop backs off, and the
        runs the server may have assigned all the same are reconciled before the next."""
        delay_s = CLAIM_RETRY_S
        while True:
            if self._needs_reconcile:
                await self._reconcile(client, executor, "a report or a claim answer was lost")
            if self._engine_watch is not None:
                await self._engine_watch.wait_ready()
            room = await executor.wait_for_room()
            try:
                claims = await client.claim_runs(
                    self.worker_id,
                    max_runs=min(room, MAX_CLAIM),
                    wait=timedelta(seconds=self.claim_wait_s),
                    timeout=self._long_poll_timeout,
                )
            except REFUSED:
                raise
            except GyozaError as err:
                if isinstance(err, FailedPrecondition):  # evicted or not registered
                    log.warning("claim refused (%s); heartbeating to re-register", describe(err))
                    heartbeat.poke()
                else:
                    # UNAVAILABLE, a deadline, an answer this channel would not take
                    # (RESOURCE_EXHAUSTED), a server error: runs may have been assigned.
                    level = logging.WARNING if isinstance(err, AMBIGUOUS) else logging.ERROR
                    log.log(level, "claim failed (%s); again in %gs", describe(err), delay_s)
                    self._needs_reconcile = True
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, CLAIM_RETRY_MAX_S)
                continue
            delay_s = CLAIM_RETRY_S
            for claim in claims:
                executor.submit(ClaimedRun.from_pb(claim))

    # -- reconciling ----------------------------------------------------------------------

    async def _reconcile(self, client: AsyncClient, executor: Executor, why: str) -> None:
        """Settle the attempts the server counts as this worker's that it does not run."""
        try:
            held = [(h.run_id, h.attempt) for h in (await client.get_worker(self.worker_id)).held]
            strays = [h for h in held if h not in executor.known()]
            for run_id, attempt in strays:
                await self._settle(client, run_id, attempt, why)
        except GyozaError as err:
            later = "" if self._stopping.is_set() else "; will try again"
            log.warning("could not reconcile held runs (%s)%s", describe(err), later)
            self._needs_reconcile = True
            return
        self._needs_reconcile = False

    async def _settle(self, client: AsyncClient, run_id: str, attempt: int, why: str) -> None:
        run = await client.get_run(run_id)
        if run.current_attempt != attempt:
            return
        # A refusal (FailedPrecondition) means the run moved on meanwhile: nothing to settle.
        with contextlib.suppress(FailedPrecondition):
            if run.state == runs_pb2.RUN_STATE_ASSIGNED:
                await client.release_run(self.worker_id, run_id, attempt)
                log.info("handed back run %s (%s: it never started here)", run_id, why)
            elif run.state == runs_pb2.RUN_STATE_RUNNING:
                message = f"worker {self.worker_id} lost the attempt ({why})"
                await client.add_event(
                    run_id,
                    EventType.FAILED,
                    payload={"error_message": message},
                    attempt=attempt,
                )
                log.warning("run %s attempt %s reported FAILED: %s", run_id, attempt, message)
