"""Reporting one attempt's events, fenced by its attempt number, retried while the server is
briefly unreachable.

Every AddEvent carries the attempt. FAILED_PRECONDITION means the worker must stop: the attempt
was superseded (`STALE_ATTEMPT`), or the run was cancelled or otherwise finished
(`RUN_LOCKED`, `ILLEGAL_TRANSITION`); it raises `Fenced`. UNAVAILABLE and DEADLINE_EXCEEDED are
retried after each delay of `retry_delays_s`, then `ReportFailed`. The client never repeats an
AddEvent (a repeat may append twice), so this is the worker's own policy: a retry after a call
that may have been applied (a deadline, a dropped connection) can be refused because it *was*
applied; for STARTED the run is read back to tell that apart from a real fence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from gyoza.v1 import runs_pb2
from gyoza_grpc.client import (
    AsyncClient,
    EventType,
    FailedPrecondition,
    GyozaError,
    status_code,
)
from gyoza_grpc.worker.failures import AMBIGUOUS, describe, is_transient

log = logging.getLogger("gyoza_grpc.worker")

# About 15 s of retries in all: a server restart, a dropped connection.
DEFAULT_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


class Fenced(Exception):
    """The server refused the attempt's event: the worker must abandon the attempt."""

    def __init__(self, run_id: str, attempt: int, reason: str, details: str) -> None:
        super().__init__(f"run {run_id} attempt {attempt} is fenced off ({reason}): {details}")
        self.reason = reason


class ReportFailed(Exception):
    """An event could not be delivered (server unreachable after retries, or refused).
    `code` is the status of the last try (None when the event was never sent), `details` its
    message."""

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, details: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class RunReporter:
    """Sends one attempt's events."""

    def __init__(
        self,
        client: AsyncClient,
        run_id: str,
        attempt: int,
        worker_id: str,
        *,
        retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.retry_delays_s = tuple(retry_delays_s)

    async def send(
        self,
        event_type: runs_pb2.EventType.ValueType,
        *,
        msg: str = "",
        payload: Mapping[str, Any] | None = None,
        progress: int | None = None,
    ) -> None:
        """Deliver one event; `Fenced` or `ReportFailed` when it cannot be."""
        name = runs_pb2.EventType.Name(event_type)
        maybe_applied = False
        delays = iter(self.retry_delays_s)
        while True:
            try:
                await self.client.add_event(
                    self.run_id,
                    EventType(event_type),
                    msg=msg,
                    payload=payload,
                    progress=progress,
                    attempt=self.attempt,
                )
                return
            except FailedPrecondition as err:
                if maybe_applied and await self._was_applied(event_type):
                    return
                raise Fenced(self.run_id, self.attempt, err.reason, err.message) from err
            except GyozaError as err:
                delay = next(delays, None) if is_transient(err) else None
                if delay is None:
                    raise ReportFailed(
                        f"{name} for run {self.run_id} attempt {self.attempt}: {describe(err)}",
                        status_code(err),
                        err.message,
                    ) from err
                maybe_applied = maybe_applied or isinstance(err, AMBIGUOUS)
                log.warning(
                    "%s for run %s not delivered (%s); again in %.1fs",
                    name,
                    self.run_id,
                    describe(err),
                    delay,
                    extra={"action": "retry_report", "run_id": self.run_id},
                )
                await asyncio.sleep(delay)
            except ValueError as err:  # a payload JSON cannot carry
                raise ReportFailed(f"{name} for run {self.run_id}: {err}") from err

    async def release(self) -> None:
        """Hand the attempt back (it never started): the run goes back to PENDING, the attempt
        not counted. Refused (the run moved on meanwhile: cancelled, reassigned): Fenced;
        undeliverable: ReportFailed (the worker reconciles it later)."""
        try:
            await self.client.release_run(self.worker_id, self.run_id, self.attempt)
        except FailedPrecondition as err:
            raise Fenced(self.run_id, self.attempt, err.reason, err.message) from err
        except GyozaError as err:
            raise ReportFailed(
                f"ReleaseRun for run {self.run_id} attempt {self.attempt}: {describe(err)}",
                status_code(err),
                err.message,
            ) from err

    async def _was_applied(self, event_type: runs_pb2.EventType.ValueType) -> bool:
        """After an ambiguous failure and then a refusal: did the first try land?"""
        try:
            run = await self.client.get_run(self.run_id)
        except GyozaError:
            return False
        if run.current_attempt != self.attempt and event_type != runs_pb2.EVENT_TYPE_FAILED:
            return False
        landed = {
            runs_pb2.EVENT_TYPE_STARTED: run.state == runs_pb2.RUN_STATE_RUNNING
            and run.execution_summary.worker_id == self.worker_id,
            runs_pb2.EVENT_TYPE_COMPLETED: run.state == runs_pb2.RUN_STATE_COMPLETED,
            # A FAILED with a retry left moves the run on to the next attempt.
            runs_pb2.EVENT_TYPE_FAILED: run.current_attempt > self.attempt
            or run.state == runs_pb2.RUN_STATE_FAILED,
        }
        return landed.get(event_type, False)
