"""A failed call as the same exception the server raised: the vocabulary read backwards.

The server turns a `GyozaError` into a status with a google.rpc.ErrorInfo (reason, metadata)
and, for field errors, a google.rpc.BadRequest (`gyoza_grpc.server.api.errors.to_status`). Here a
status becomes the class of its code (`ERRORS_BY_CODE`) again, carrying the message, the
reason, the metadata and the field violations. The grpc error it came from is its
`__cause__` (its trailing metadata, its debug string).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from gyoza_grpc.domain.errors import (
    ERRORS_BY_CODE,
    FieldViolation,
    GyozaError,
    Unknown,
)

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# What a failed call raises: grpc.aio's AioRpcError, or a blocking call's grpc.Call error.
_CALLS = (grpc.aio.AioRpcError, grpc.Call)


def from_rpc_error(err: grpc.RpcError) -> GyozaError:
    """The GyozaError of a failed call (a grpc.aio.AioRpcError, or a blocking call's error)."""
    call = isinstance(err, _CALLS)
    code: Any = err.code() if call else None
    message = err.details() if call else str(err)
    cls = ERRORS_BY_CODE.get(code.name if code is not None else "", Unknown)
    status = _rich_status(err)
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            reason = info.reason or None
            metadata.update(info.metadata)
        elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return cls(message or "", violations=violations, metadata=metadata, reason=reason)


def sent_reason(err: GyozaError) -> str | None:
    """The ErrorInfo reason the server sent with `err`, or None when its status carried none
    (the server out of reach, a deadline passed, a proxy or another server answered):
    `err.reason` is then only its class's default."""
    given = vars(err).get("reason")  # GyozaError keeps a reason given to it on the instance
    return given if isinstance(given, str) else None


def status_code(err: GyozaError) -> grpc.StatusCode:
    """The grpc.StatusCode of an error (its `code` is the code's name)."""
    return grpc.StatusCode[err.code]


def _rich_status(err: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status the server put in the trailers, if any (and if it parses)."""
    trailing = err.trailing_metadata() if isinstance(err, _CALLS) else None
    for key, value in trailing or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:  # a proxy's garbage: the code and message still stand
                return None
    return None
