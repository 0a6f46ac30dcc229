"""The Python client of gyoza-grpc: `Client` (blocking) and `AsyncClient` (asyncio).

Both have the same calls, one per RPC, with keyword arguments, returning the generated
messages (`gyoza.v1.runs_pb2.Run`, ...). They connect from the environment when not told
otherwise (GYOZA_TARGET, GYOZA_API_KEY, GYOZA_TLS*), retry what is safe to retry, page
lazily, resume watch streams, and raise errors as the server's own exception classes
(`NotFound`, `InvalidArgument`, ... with `reason`, `metadata` and `violations`).
See docs/client.md.
"""

from __future__ import annotations

from gyoza.v1.definitions_pb2 import Definition, InputSpec
from gyoza.v1.runs_pb2 import Constraints, RetryPolicy
from gyoza.v1.workers_pb2 import Gpu, Resources
from gyoza_grpc.client.async_client import AsyncClient
from gyoza_grpc.client.blocking import Client, Pager
from gyoza_grpc.client.config import DEFAULT_TIMEOUT, TlsConfig
from gyoza_grpc.client.convert import to_dict
from gyoza_grpc.client.enums import EventType, InputType, RunState, WorkerState
from gyoza_grpc.client.errors import status_code
from gyoza_grpc.client.paging import AsyncPager, Page
from gyoza_grpc.client.retry import NO_RETRY, RetryConfig
from gyoza_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    GyozaError,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncPager",
    "Cancelled",
    "Client",
    "Constraints",
    "DataLoss",
    "DeadlineExceeded",
    "Definition",
    "EventType",
    "FailedPrecondition",
    "FieldViolation",
    "Gpu",
    "GyozaError",
    "InputSpec",
    "InputType",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "Page",
    "Pager",
    "PermissionDenied",
    "ResourceExhausted",
    "Resources",
    "RetryConfig",
    "RetryPolicy",
    "RunState",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "WorkerState",
    "status_code",
    "to_dict",
]
