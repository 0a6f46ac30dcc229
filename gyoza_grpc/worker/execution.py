"""One claimed attempt, start to end: STARTED, the handler (and its PROGRESS / INFO notes),
then COMPLETED with its outputs or FAILED with its error.

A handler may also have a staging step (`Staging`: a container executor pulls the image and
creates the container), run before STARTED while the run is still ASSIGNED; what it stages is
undone when the attempt ends, however it ends. Staging that fails fails the run (from
ASSIGNED); staging that raises `NotReady` (the container engine is unreachable) hands the run
back to PENDING instead, not counted as a try: a passing outage must not fail runs. Outputs
that the server refuses (over its cap) fail the run, saying why, rather than losing the report.

A handler is a plain function, run in a thread (`asyncio.to_thread`), or a coroutine function;
it gets `(inputs, ctx)` and returns the outputs (a JSON object; None means `{}`). An exception
becomes FAILED with its message. The final report is shielded: once the handler has returned,
cancelling the attempt (a stop order arriving late, shutdown) does not lose its result. An
attempt that is stopped (a stop order, or the server refusing its events as stale) sends
nothing more; one cancelled because the worker shuts down is reported FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

import grpc

from gyoza.v1 import runs_pb2
from gyoza_grpc.client.convert import to_struct
from gyoza_grpc.worker.context import RunContext
from gyoza_grpc.worker.reporter import Fenced, ReportFailed, RunReporter

log = logging.getLogger("gyoza_grpc.worker")

Outputs: TypeAlias = Mapping[str, Any] | None
Handler: TypeAlias = Callable[[dict[str, Any], RunContext], Outputs | Awaitable[Outputs]]

SHUTDOWN = "shutdown"
MAX_ERROR_LEN = 8192
# Refusals of a COMPLETED event that are about its outputs (the server's caps).
_REFUSED_OUTPUTS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})

Say: TypeAlias = Callable[[str], Awaitable[None]]


class NotReady(Exception):
    """The handler cannot run anything now (e.g. its container engine is unreachable): the
    claim is handed back to PENDING, not failed."""


@runtime_checkable
class Staging(Protocol):
    """A handler with a step before STARTED (see the module notes)."""

    def stage(self, ctx: RunContext, say: Say) -> contextlib.AbstractAsyncContextManager[None]:
        """Prepare the attempt (`say` records an INFO event on the run, in order) and undo it
        on exit. Raises NotReady when nothing can run now; any other error fails the run."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, as far as this worker is concerned."""

    state: str  # "completed", "failed", "released", "stopped"
    detail: str = ""
    duration_s: float = 0.0


class Finals:
    """Final reports in flight: shielded from the attempt's cancellation, awaited on shutdown."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], tuple[str, int]] = {}

    def keys(self) -> set[tuple[str, int]]:
        return set(self._tasks.values())

    async def send(self, key: tuple[str, int], report: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(report)
        self._tasks[task] = key
        task.add_done_callback(self._forget)
        await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled():
            task.exception()  # retrieved here; the awaiting attempt logs it if still there

    async def wait(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)


def is_coroutine_handler(handler: Handler) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - objects with an async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


async def call_handler(handler: Handler, ctx: RunContext) -> Outputs:
    """Run the handler; a plain function runs in a thread, which a cancellation cannot stop:
    the cancelled attempt then waits for it to return (keeping its resources held), and its
    result is dropped."""
    if is_coroutine_handler(handler):
        result = handler(ctx.inputs, ctx)
        assert inspect.isawaitable(result)
        return await result
    thread = asyncio.ensure_future(asyncio.to_thread(handler, ctx.inputs, ctx))
    try:
        result = await asyncio.shield(thread)
    except asyncio.CancelledError:
        ctx.cancel(ctx.stop_reason or "cancelled")
        thread.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.wait([thread])
        raise
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        return await result
    return result


def error_message(err: BaseException) -> str:
    return (str(err) or type(err).__name__)[:MAX_ERROR_LEN]


def _outputs_event(outputs: Outputs) -> tuple[runs_pb2.EventType.ValueType, dict[str, Any]]:
    if outputs is None:
        outputs = {}
    if not isinstance(outputs, Mapping):
        message = f"the handler returned {type(outputs).__name__}, not a JSON object"
        return runs_pb2.EVENT_TYPE_FAILED, {"error_message": message}
    try:
        to_struct(outputs, "outputs")
    except ValueError as err:
        message = f"the handler's outputs are not JSON: {err}"
        return runs_pb2.EVENT_TYPE_FAILED, {"error_message": message}
    return runs_pb2.EVENT_TYPE_COMPLETED, {"outputs": dict(outputs)}


async def _pump(ctx: RunContext, reporter: RunReporter, attempt_task: asyncio.Task[Any]) -> None:
    """Send the handler's notes until it is done; a fence stops the whole attempt."""
    while (notes := await ctx.next_notes()) is not None:
        for note in notes:
            try:
                if note.progress is not None:
                    await reporter.send(runs_pb2.EVENT_TYPE_PROGRESS, progress=note.progress)
                else:
                    await reporter.send(runs_pb2.EVENT_TYPE_INFO, msg=note.msg)
            except Fenced as err:
                log.info("run %s attempt %s: %s", ctx.run_id, ctx.attempt, err)
                ctx.cancel(f"fenced: {err.reason}")
                attempt_task.cancel()
                return
            except ReportFailed as err:  # a lost note does not fail the run
                log.warning("dropped a note: %s", err)


async def execute(
    ctx: RunContext, handler: Handler, reporter: RunReporter, finals: Finals
) -> Outcome:
    """Run one claimed attempt and report it. Raises Fenced or ReportFailed when STARTED
    cannot be reported, ReportFailed when the final report cannot, CancelledError when
    stopped."""
    if not isinstance(handler, Staging):
        return await _execute(ctx, handler, reporter, finals)
    key = (ctx.run_id, ctx.attempt)
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(handler.stage(ctx, _say(ctx, reporter)))
        except NotReady as err:
            message = error_message(err)
            await reporter.release()
            return Outcome("released", message)
        except (Fenced, ReportFailed):
            raise
        except Exception as err:
            message = error_message(err)
            final = {"error_message": message, "error_type": type(err).__name__}
            await finals.send(key, reporter.send(runs_pb2.EVENT_TYPE_FAILED, payload=final))
            return Outcome("failed", message)
        return await _execute(ctx, handler, reporter, finals)
    raise AssertionError("unreachable")  # for mypy: the exit stack does not swallow errors


def _say(ctx: RunContext, reporter: RunReporter) -> Say:
    async def say(msg: str) -> None:
        try:
            await reporter.send(runs_pb2.EVENT_TYPE_INFO, msg=msg)
        except ReportFailed as err:  # a lost note does not fail the run
            log.warning("run %s: dropped a note: %s", ctx.run_id, err)

    return say


async def _report_final(
    key: tuple[str, int],
    reporter: RunReporter,
    finals: Finals,
    event_type: runs_pb2.EventType.ValueType,
    final: dict[str, Any],
) -> tuple[runs_pb2.EventType.ValueType, dict[str, Any]]:
    """Send the final event; outputs the server refuses fail the run, saying why."""
    try:
        await finals.send(key, reporter.send(event_type, payload=final))
    except ReportFailed as err:
        if event_type != runs_pb2.EVENT_TYPE_COMPLETED or err.code not in _REFUSED_OUTPUTS:
            raise
        message = f"the server refused the run's outputs: {err.details}"[:MAX_ERROR_LEN]
        failed = {"error_message": message}
        await finals.send(key, reporter.send(runs_pb2.EVENT_TYPE_FAILED, payload=failed))
        return runs_pb2.EVENT_TYPE_FAILED, failed
    return event_type, final


async def _execute(
    ctx: RunContext, handler: Handler, reporter: RunReporter, finals: Finals
) -> Outcome:
    key = (ctx.run_id, ctx.attempt)
    payload: dict[str, Any] = {"worker_id": ctx.worker_id}
    if ctx.gpu_id is not None:
        payload["gpu_id"] = ctx.gpu_id
    await reporter.send(runs_pb2.EVENT_TYPE_STARTED, payload=payload)
    started = time.monotonic()
    this = asyncio.current_task()
    assert this is not None
    pump = asyncio.create_task(_pump(ctx, reporter, this))
    try:
        try:
            event_type, final = _outputs_event(await call_handler(handler, ctx))
        except asyncio.CancelledError:
            raise
        except Exception as err:
            event_type = runs_pb2.EVENT_TYPE_FAILED
            final = {"error_message": error_message(err), "error_type": type(err).__name__}
        ctx.close()
        await pump  # the notes go before the final event
    except asyncio.CancelledError:
        ctx.cancel(ctx.stop_reason or "cancelled")
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        if ctx.stop_reason == SHUTDOWN:
            message = f"worker {ctx.worker_id} stopped before the run finished"
            with contextlib.suppress(Fenced, ReportFailed):
                await finals.send(
                    key,
                    reporter.send(runs_pb2.EVENT_TYPE_FAILED, payload={"error_message": message}),
                )
        raise
    event_type, final = await _report_final(key, reporter, finals, event_type, final)
    duration = time.monotonic() - started
    if event_type == runs_pb2.EVENT_TYPE_COMPLETED:
        return Outcome("completed", duration_s=duration)
    return Outcome("failed", str(final["error_message"]), duration)
