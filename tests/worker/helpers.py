"""Test doubles for the worker's pieces: claims made from protos, and a fake AsyncClient that
records events and fails on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from gyoza.v1 import runs_pb2, workers_pb2
from gyoza_grpc.client import EventType, GyozaError
from gyoza_grpc.client.convert import to_struct
from gyoza_grpc.domain.errors import ERRORS_BY_CODE
from gyoza_grpc.worker.claims import ClaimedRun


def make_claim(
    run_id: str = "r1",
    attempt: int = 1,
    *,
    inputs: Mapping[str, Any] | None = None,
    gpu_id: int | None = None,
    image: str = "img",
    **constraints: int,
) -> ClaimedRun:
    struct = struct_pb2.Struct()
    json_format.ParseDict(dict(inputs or {}), struct)
    run = runs_pb2.Run(
        id=run_id,
        current_attempt=attempt,
        inputs=struct,
        constraints=runs_pb2.Constraints(**constraints),
        priority=5,
        image=image,
    )
    claim = workers_pb2.Claim(run=run, attempt=attempt)
    if gpu_id is not None:
        claim.gpu_id = gpu_id
    return ClaimedRun.from_pb(claim)


def rpc_error(code: grpc.StatusCode, details: str = "") -> GyozaError:
    """A failed call as the client raises it: the error class of its status code."""
    return ERRORS_BY_CODE[code.name](details)


def beat(
    lease_s: int = 3, stop: Iterable[tuple[str, int, str]] = ()
) -> workers_pb2.HeartbeatResponse:
    """A heartbeat's answer: the lease, and (run_id, attempt, reason) stop orders."""
    orders = [workers_pb2.StopOrder(run_id=r, attempt=a, reason=why) for r, a, why in stop]
    return workers_pb2.HeartbeatResponse(lease_seconds=lease_s, stop=orders)


@dataclass
class Sent:
    run_id: str
    attempt: int
    type: str
    msg: str
    payload: dict[str, Any]
    progress: int | None


@dataclass
class FakeClient:
    """Stands in for the worker's AsyncClient (the calls it makes, with their signatures).
    `fail_next` holds errors the next add_event calls raise."""

    timeout: timedelta = timedelta(seconds=1)
    events: list[Sent] = field(default_factory=list)
    fail_next: list[GyozaError] = field(default_factory=list)
    # Called with each event before it is recorded: may raise, or wait.
    before_event: Callable[[Sent], Any] | None = None
    runs: dict[str, runs_pb2.Run] = field(default_factory=dict)
    held_attempts: list[tuple[str, int]] = field(default_factory=list)
    heartbeats: list[list[tuple[str, int]]] = field(default_factory=list)
    not_ready_reasons: list[str] = field(default_factory=list)
    replies: list[workers_pb2.HeartbeatResponse | GyozaError] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def add_event(
        self,
        run_id: str,
        type: EventType,
        *,
        msg: str = "",
        progress: int | None = None,
        payload: Mapping[str, Any] | None = None,
        attempt: int | None = None,
        timeout: timedelta | None = None,
    ) -> runs_pb2.AddEventResponse:
        # As the client does: ValueError for what JSON cannot carry.
        to_struct(payload or {}, "payload")
        assert attempt is not None, "a worker's every event names its attempt"
        sent = Sent(run_id, attempt, EventType(type).name, msg, dict(payload or {}), progress)
        if self.fail_next:
            raise self.fail_next.pop(0)
        if self.before_event is not None:
            result = self.before_event(sent)
            if asyncio.iscoroutine(result):
                await result
        self.events.append(sent)
        self.changed.set()
        return runs_pb2.AddEventResponse()

    def types(self, run_id: str | None = None) -> list[str]:
        return [e.type for e in self.events if run_id is None or e.run_id == run_id]

    async def get_run(
        self, run_id: str, *, with_events: bool = False, timeout: timedelta | None = None
    ) -> runs_pb2.Run:
        return self.runs[run_id]

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
        self.heartbeats.append(list(running))
        self.not_ready_reasons.append(not_ready_reason)
        reply = self.replies.pop(0) if self.replies else beat()
        if isinstance(reply, GyozaError):
            raise reply
        return reply

    async def get_worker(
        self, worker_id: str, *, timeout: timedelta | None = None
    ) -> workers_pb2.Worker:
        held = [workers_pb2.HeldAttempt(run_id=r, attempt=a) for r, a in self.held_attempts]
        return workers_pb2.Worker(worker_id=worker_id, held=held)

    async def release_run(
        self, worker_id: str, run_id: str, attempt: int, *, timeout: timedelta | None = None
    ) -> runs_pb2.Run:
        self.released.append(run_id)
        return runs_pb2.Run(id=run_id)


async def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a synchronous condition until true (fails after `timeout_s`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)
