"""gRPC statuses -> the original's HTTP codes and FastAPI-shaped error bodies.

The original answers 400 for everything its router refuses (bad filters, a locked run, an
illegal event, cancelling a terminal run), 404 for an unknown run, and FastAPI's 422 for a
request it cannot read. So FAILED_PRECONDITION is 400 here, like INVALID_ARGUMENT; the
codes the original never produced get their usual HTTP meaning.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    # The original: "400 if run is locked or event is invalid", "400 if run is already terminal".
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
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


def http_status(code: grpc.StatusCode) -> int:
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


def from_rpc(err: grpc.aio.AioRpcError, run_id: str | None = None) -> HttpError:
    """A gRPC error as the HTTP answer. On a `/runs/{id}` route an unknown run, or an id the
    server refuses to look up (empty, too long, a NUL), is the original's 404."""
    body = rpc_error_body(err)
    if run_id is not None:
        if body.get("reason") == "RUN_NOT_FOUND":
            return run_not_found(run_id)
        fields = {v["field"] for v in body.get("errors", ())}
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields and fields <= _ID_FIELDS:
            return run_not_found(run_id)
    detail = body.pop("detail")
    return HttpError(http_status(err.code()), detail, **body)


_ID_FIELDS = {"id", "run_id"}


def rpc_error_body(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    """`{"detail": the gRPC message, "code": its name}` plus, when the server sent them, the
    ErrorInfo `reason`/`metadata` and the BadRequest field violations as `errors`."""
    code = err.code()
    body: dict[str, Any] = {"detail": err.details() or code.name, "code": code.name}
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # trailers that disagree with the status: keep the plain message
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            body["reason"] = info.reason
            if info.metadata:
                body["metadata"] = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            body["errors"] = [
                {"field": v.field, "description": v.description} for v in bad.field_violations
            ]
    return body
