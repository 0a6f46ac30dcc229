"""The one error vocabulary of gyoza-grpc.

The domain and the store raise these; `gyoza_grpc.server.api.errors` turns each into a gRPC status
with a google.rpc.ErrorInfo (and a BadRequest for field violations), and the client
(`gyoza_grpc.client`) turns a status back into the same class, with the same reason,
metadata and violations. There is one class per gRPC status code (`ERRORS_BY_CODE`, the
table both directions use); the ErrorInfo reason (`RUN_LOCKED`, `STALE_ATTEMPT`, ...) says
which refusal of that code it is. The code names are gRPC's, spelled as strings so the domain
does not import grpc.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: `field` is its path (e.g. "constraints.cpu")."""

    field: str
    description: str


class GyozaError(Exception):
    """Base of every error a client can cause; `code` is the gRPC status code name."""

    code: ClassVar[str] = "UNKNOWN"
    reason: ClassVar[str] = "GYOZA_ERROR"

    def __init__(
        self,
        message: str,
        *,
        violations: Iterable[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})
        if reason is not None:
            self.reason = reason  # type: ignore[misc]


class Cancelled(GyozaError):
    code = "CANCELLED"
    reason = "CANCELLED"


class Unknown(GyozaError):
    code = "UNKNOWN"
    reason = "UNKNOWN"


class InvalidArgument(GyozaError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    @classmethod
    def for_fields(cls, violations: Iterable[FieldViolation]) -> InvalidArgument:
        """One error listing every violation, its message naming each field."""
        items = tuple(violations)
        message = "; ".join(f"{v.field}: {v.description}" for v in items)
        return cls(message, violations=items)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls.for_fields([FieldViolation(field, description)])


class DeadlineExceeded(GyozaError):
    code = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class NotFound(GyozaError):
    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class AlreadyExists(GyozaError):
    code = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class PermissionDenied(GyozaError):
    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class FailedPrecondition(GyozaError):
    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class Aborted(GyozaError):
    code = "ABORTED"
    reason = "ABORTED"


class OutOfRange(GyozaError):
    code = "OUT_OF_RANGE"
    reason = "OUT_OF_RANGE"


class ResourceExhausted(GyozaError):
    code = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


class Unimplemented(GyozaError):
    code = "UNIMPLEMENTED"
    reason = "UNIMPLEMENTED"


class Internal(GyozaError):
    code = "INTERNAL"
    reason = "INTERNAL"


class Unavailable(GyozaError):
    code = "UNAVAILABLE"
    reason = "UNAVAILABLE"


class DataLoss(GyozaError):
    code = "DATA_LOSS"
    reason = "DATA_LOSS"


class Unauthenticated(GyozaError):
    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


# The one table of the vocabulary: a gRPC status code name -> its class. The server sends
# `type(err).code`; the client raises ERRORS_BY_CODE[code] (Unknown for a code not here).
ERRORS_BY_CODE: Mapping[str, type[GyozaError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def run_not_found(run_id: str) -> NotFound:
    return NotFound(
        f"run '{run_id}' not found", reason="RUN_NOT_FOUND", metadata={"run_id": run_id}
    )
