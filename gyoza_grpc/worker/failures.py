"""Failed calls as the worker weighs them: which ones trying again may fix, which ones may
have been applied all the same, and one line to log for each.

Calls go through `gyoza_grpc.client`, so a failure is the server's own GyozaError class
(`Unavailable`, `FailedPrecondition` with its reason `STALE_ATTEMPT`, ...).
"""

from __future__ import annotations

from gyoza_grpc.domain.errors import Cancelled, DeadlineExceeded, GyozaError, Unavailable

# Failures after which the same call may succeed: the server was unreachable, restarting or slow.
TRANSIENT: tuple[type[GyozaError], ...] = (Unavailable, DeadlineExceeded)
# Transient failures after which the server may still have applied the call.
AMBIGUOUS: tuple[type[GyozaError], ...] = (*TRANSIENT, Cancelled)


def is_transient(err: BaseException) -> bool:
    return isinstance(err, TRANSIENT)


def describe(err: BaseException) -> str:
    """`CODE: message` for a refused or failed call, `Type: message` for anything else."""
    if isinstance(err, GyozaError):
        return f"{err.code}: {err.message}"
    return f"{type(err).__name__}: {err}"
