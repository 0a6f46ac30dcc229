"""Test doubles for the worker's pieces: claims made from protos, and a fake server client
that records events and fails on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from gyoza.v1 import runs_pb2, workers_pb2
from gyoza_grpc.worker.client import ClaimedRun, HeartbeatReply, to_struct


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


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


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
    """Stands in for ServerClient. `fail_next` holds errors the next add_event calls raise."""

    call_timeout_s: float = 1.0
    events: list[Sent] = field(default_factory=list)
    fail_next: list[grpc.aio.AioRpcError] = field(default_factory=list)
    # Called with each event before it is recorded: may raise, or wait.
    before_event: Callable[[Sent], Any] | None = None
    runs: dict[str, runs_pb2.Run] = field(default_factory=dict)
    held_attempts: list[tuple[str, int]] = field(default_factory=list)
    heartbeats: list[list[tuple[str, int]]] = field(default_factory=list)
    not_ready_reasons: list[str] = field(default_factory=list)
    replies: list[HeartbeatReply | grpc.aio.AioRpcError] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def add_event(
        self,
        run_id: str,
        attempt: int,
        event_type: int,
        *,
        msg: str = "",
        payload: Mapping[str, Any] | None = None,
        progress: int | None = None,
    ) -> None:
        if payload:
            to_struct(payload)  # as ServerClient does: ValueError for what JSON cannot carry
        sent = Sent(
            run_id,
            attempt,
            runs_pb2.EventType.Name(event_type).removeprefix("EVENT_TYPE_"),
            msg,
            dict(payload or {}),
            progress,
        )
        if self.fail_next:
            raise self.fail_next.pop(0)
        if self.before_event is not None:
            result = self.before_event(sent)
            if asyncio.iscoroutine(result):
                await result
        self.events.append(sent)
        self.changed.set()

    def types(self, run_id: str | None = None) -> list[str]:
        return [e.type for e in self.events if run_id is None or e.run_id == run_id]

    async def get_run(self, run_id: str) -> runs_pb2.Run:
        return self.runs[run_id]

    async def heartbeat(
        self,
        worker_id: str,
        resources: Any,
        tags: Any,
        running: list[tuple[str, int]],
        not_ready_reason: str = "",
    ) -> HeartbeatReply:
        self.heartbeats.append(list(running))
        self.not_ready_reasons.append(not_ready_reason)
        reply = self.replies.pop(0) if self.replies else HeartbeatReply(lease_s=3, stop=[])
        if isinstance(reply, grpc.aio.AioRpcError):
            raise reply
        return reply

    async def held(self, worker_id: str) -> list[tuple[str, int]]:
        return list(self.held_attempts)

    async def release(self, worker_id: str, run_id: str, attempt: int) -> None:
        self.released.append(run_id)


async def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a synchronous condition until true (fails after `timeout_s`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)
