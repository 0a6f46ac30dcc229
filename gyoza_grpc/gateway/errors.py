"""gRPC statuses -> the original's HTTP codes and FastAPI-shaped error bodies.

The original answers 400 for everything its router refuses (bad filters, a locked run, an
illegal event, cancelling a terminal run), 404 for an unknown run, and FastAPI's 422 for a
request it cannot read. So FAILED_PRECONDITION is 400 here, like INVALID_ARGUMENT; the
codes the original never produced get their usual HTTP meaning.
"""

from __future__ import annotations

from typing import Any

import grpc

from gyoza_grpc.client import GyozaError
from gyoza_grpc.client.errors import from_rpc_error, sent_reason

# By gRPC status code name (a GyozaError's `code`).
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    # The original: "400 if run is locked or event is invalid", "400 if run is already terminal".
    "FAILED_PRECONDITION": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# UNKNOWN, INTERNAL, DATA_LOSS, CANCELLED: the server (or the way to it) failed.
DEFAULT_HTTP_STATUS = 500


class HttpError(Exception):
    """A request the gateway refuses before any gRPC call: `detail` is FastAPI's `detail`
    (a string, or for 422 a list of {loc, msg, type})."""

    def __init__(self, status: int, detail: Any, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra  # the gRPC status: code, reason, metadata, errors

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


class Unreadable(HttpError):
    """422: FastAPI's RequestValidationError, every error of the request."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(422, errors)


def issue(
    loc: list[str | int],
    msg: str,
    kind: str,
    value: Any,
    ctx: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One FastAPI validation error: its `type`, where (`loc`), what (`msg`), the `input`
    refused and, for some, the constraint (`ctx`), in FastAPI's key order."""
    out: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        out["ctx"] = ctx
    return out


def http_status(code: str) -> int:
    """The HTTP status of a gRPC status code (by name)."""
    return HTTP_STATUS.get(code, DEFAULT_HTTP_STATUS)


def run_not_found(run_id: str) -> HttpError:
    """The original's 404 of every `/runs/{id}` route."""
    return HttpError(
        404,
        f"OpRun '{run_id}' not found",
        code="NOT_FOUND",
        reason="RUN_NOT_FOUND",
        metadata={"run_id": run_id},
    )


def from_rpc(err: GyozaError | grpc.RpcError, run_id: str | None = None) -> HttpError:
    """A failed call as the HTTP answer: the client's GyozaError, or a stream's grpc error
    (read by the client's table). On a `/runs/{id}` route an unknown run, or an id the
    server refuses to look up (empty, too long, a NUL), is the original's 404."""
    error = err if isinstance(err, GyozaError) else from_rpc_error(err)
    body = rpc_error_body(error)
    if run_id is not None:
        if body.get("reason") == "RUN_NOT_FOUND":
            return run_not_found(run_id)
        fields = {v["field"] for v in body.get("errors", ())}
        if error.code == "INVALID_ARGUMENT" and fields and fields <= _ID_FIELDS:
            return run_not_found(run_id)
    detail = body.pop("detail")
    return HttpError(http_status(error.code), detail, **body)


_ID_FIELDS = {"id", "run_id"}


def rpc_error_body(err: GyozaError) -> dict[str, Any]:
    """`{"detail": the gRPC message, "code": its name}` plus, when the server sent them, the
    ErrorInfo `reason`/`metadata` and the BadRequest field violations as `errors`."""
    body: dict[str, Any] = {"detail": err.message or err.code, "code": err.code}
    reason = sent_reason(err)
    if reason is not None:
        body["reason"] = reason
    if err.metadata:
        body["metadata"] = dict(err.metadata)
    if err.violations:
        body["errors"] = [{"field": v.field, "description": v.description} for v in err.violations]
    return body
