"""The worker's side of the wire: typed calls over the generated stubs.

Every call carries a deadline. A failed call raises `grpc.aio.AioRpcError` as the stubs do;
`is_transient()` says whether trying again may help, and `error_reason()` reads back the
gyoza ErrorInfo reason (`STALE_ATTEMPT`, `RUN_LOCKED`, `WORKER_EVICTED`, ...) of a refusal.
Claims arrive as `ClaimedRun` values: inputs as a plain dict, constraints as the domain's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.domain.model import Constraints
from gyoza_grpc.domain.placement import Capacity
from gyoza_grpc.domain.workers import MAX_NOT_READY_REASON_LEN

JSON = dict[str, Any]
EventTypePb: TypeAlias = runs_pb2.EventType.ValueType

# Codes after which the same call may succeed: the server was unreachable, restarting or slow.
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Transient codes after which the server may still have applied the call.
AMBIGUOUS_CODES = TRANSIENT_CODES | {grpc.StatusCode.CANCELLED}
DEFAULT_CALL_TIMEOUT_S = 10.0
# A long-poll is answered by the server before its wait ends; this much more is the margin.
CLAIM_DEADLINE_MARGIN_S = 5.0
_MAX_EXACT_INT = 2**53

# Worker keepalive: within the server's policy (a ping every 5 s or slower; docs/deploy.md).
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Reconnect quickly after a server restart: a worker's lease depends on it.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def code_of(err: BaseException) -> grpc.StatusCode | None:
    return err.code() if isinstance(err, grpc.aio.AioRpcError) else None


def is_transient(err: BaseException) -> bool:
    return code_of(err) in TRANSIENT_CODES


def error_reason(err: BaseException) -> str:
    """The ErrorInfo reason of a gyoza refusal, or "" when it carries none."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return ""
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return ""


def describe(err: BaseException) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return f"{type(err).__name__}: {err}"


def plain_json(doc: Any) -> Any:
    """Struct carries every number as a double: give whole numbers back as ints (3.0 -> 3)."""
    if isinstance(doc, float) and doc.is_integer() and abs(doc) <= _MAX_EXACT_INT:
        return int(doc)
    if isinstance(doc, dict):
        return {k: plain_json(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [plain_json(v) for v in doc]
    return doc


def to_struct(doc: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a Struct; ValueError for anything JSON cannot carry (NaN included)."""
    _check_finite(doc)
    struct = struct_pb2.Struct()
    try:
        json_format.ParseDict(dict(doc), struct)
    except (json_format.ParseError, TypeError, AttributeError) as err:
        raise ValueError(f"not a JSON object: {err}") from err
    return struct


def _check_finite(doc: Any) -> None:
    if isinstance(doc, float) and not math.isfinite(doc):
        raise ValueError(f"not a JSON object: {doc} is not a finite number")
    if isinstance(doc, Mapping):
        for v in doc.values():
            _check_finite(v)
    elif isinstance(doc, list | tuple):
        for v in doc:
            _check_finite(v)


def _opt(msg: Any, name: str) -> int | None:
    return int(getattr(msg, name)) if msg.HasField(name) else None


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """One run handed to this worker: report its events with `attempt`."""

    run_id: str
    attempt: int
    inputs: JSON
    constraints: Constraints
    gpu_id: int | None
    priority: int
    image: str
    run: runs_pb2.Run

    @classmethod
    def from_pb(cls, claim: workers_pb2.Claim) -> ClaimedRun:
        run = claim.run
        c = run.constraints
        return cls(
            run_id=run.id,
            attempt=claim.attempt,
            inputs=plain_json(json_format.MessageToDict(run.inputs)),
            constraints=Constraints(
                cpu=_opt(c, "cpu"),
                ram_mb=_opt(c, "ram_mb"),
                vram_mb=_opt(c, "vram_mb"),
                gpu_id=_opt(c, "gpu_id"),
            ),
            gpu_id=claim.gpu_id if claim.HasField("gpu_id") else None,
            priority=run.priority,
            image=run.image,
            run=run,
        )


@dataclass(frozen=True, slots=True)
class StopOrder:
    run_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    lease_s: int
    stop: list[StopOrder]


def resources_pb(capacity: Capacity) -> workers_pb2.Resources:
    return workers_pb2.Resources(
        cpu=capacity.cpu,
        ram_mb=capacity.ram_mb,
        gpus=[workers_pb2.Gpu(gpu_id=g.gpu_id, vram_mb=g.vram_mb) for g in capacity.gpus],
    )


class ServerClient:
    """The RunService and WorkerService calls a worker makes, each with a deadline."""

    def __init__(
        self, channel: grpc.aio.Channel, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    ) -> None:
        self.runs = runs_pb2_grpc.RunServiceStub(channel)
        self.workers = workers_pb2_grpc.WorkerServiceStub(channel)
        self.call_timeout_s = call_timeout_s

    async def heartbeat(
        self,
        worker_id: str,
        resources: Capacity,
        tags: Sequence[str],
        running: Iterable[tuple[str, int]],
        not_ready_reason: str = "",
    ) -> HeartbeatReply:
        req = workers_pb2.HeartbeatRequest(
            worker_id=worker_id,
            resources=resources_pb(resources),
            tags=list(tags),
            running=[workers_pb2.HeldAttempt(run_id=r, attempt=a) for r, a in running],
            not_ready_reason=not_ready_reason[:MAX_NOT_READY_REASON_LEN],
        )
        resp = await self.workers.Heartbeat(req, timeout=self.call_timeout_s)
        return HeartbeatReply(
            lease_s=resp.lease_seconds,
            stop=[StopOrder(s.run_id, s.attempt, s.reason) for s in resp.stop],
        )

    async def claim(self, worker_id: str, max_runs: int, wait_s: float) -> list[ClaimedRun]:
        wait = duration_pb2.Duration()
        wait.FromNanoseconds(int(wait_s * 1e9))
        req = workers_pb2.ClaimRunsRequest(worker_id=worker_id, max_runs=max_runs, wait=wait)
        resp = await self.workers.ClaimRuns(
            req, timeout=wait_s + max(CLAIM_DEADLINE_MARGIN_S, self.call_timeout_s)
        )
        return [ClaimedRun.from_pb(c) for c in resp.claims]

    async def wait_for_stop_orders(
        self, worker_id: str, running: Iterable[tuple[str, int]], wait_s: float
    ) -> list[StopOrder]:
        """The stop orders for `running`, as soon as there are any, or [] after `wait_s`."""
        wait = duration_pb2.Duration()
        wait.FromNanoseconds(int(wait_s * 1e9))
        req = workers_pb2.WaitForStopOrdersRequest(
            worker_id=worker_id,
            running=[workers_pb2.HeldAttempt(run_id=r, attempt=a) for r, a in running],
            wait=wait,
        )
        resp = await self.workers.WaitForStopOrders(
            req, timeout=wait_s + max(CLAIM_DEADLINE_MARGIN_S, self.call_timeout_s)
        )
        return [StopOrder(s.run_id, s.attempt, s.reason) for s in resp.stop]

    async def add_event(
        self,
        run_id: str,
        attempt: int,
        event_type: EventTypePb,
        *,
        msg: str = "",
        payload: Mapping[str, Any] | None = None,
        progress: int | None = None,
    ) -> None:
        req = runs_pb2.AddEventRequest(run_id=run_id, type=event_type, msg=msg, attempt=attempt)
        if payload:
            req.payload.CopyFrom(to_struct(payload))
        if progress is not None:
            req.progress = progress
        await self.runs.AddEvent(req, timeout=self.call_timeout_s)

    async def get_run(self, run_id: str) -> runs_pb2.Run:
        resp = await self.runs.GetRun(
            runs_pb2.GetRunRequest(id=run_id), timeout=self.call_timeout_s
        )
        run: runs_pb2.Run = resp.run
        return run

    async def held(self, worker_id: str) -> list[tuple[str, int]]:
        """The attempts the server counts as this worker's (its ASSIGNED and RUNNING runs)."""
        resp = await self.workers.GetWorker(
            workers_pb2.GetWorkerRequest(worker_id=worker_id), timeout=self.call_timeout_s
        )
        return [(h.run_id, h.attempt) for h in resp.worker.held]

    async def release(self, worker_id: str, run_id: str, attempt: int) -> None:
        """Hand an ASSIGNED attempt back: the run goes back to PENDING (same attempt; not
        counted as a try)."""
        req = workers_pb2.ReleaseRunRequest(worker_id=worker_id, run_id=run_id, attempt=attempt)
        await self.workers.ReleaseRun(req, timeout=self.call_timeout_s)
