"""How the client commands fail: exit codes and the one-line error report.

Exit codes (the same for every client command):
  0    success; `runs watch`: the run ended COMPLETED
  1    `runs watch`: the run ended FAILED
  2    `runs watch`: the run ended CANCELLED; any command: a usage error (a bad flag,
       a bad --input, an unreadable or malformed file), nothing was sent
  3    the server refused the request: NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION,
       ALREADY_EXISTS, OUT_OF_RANGE, UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...
  4    the server could not be reached, did not answer in time, or failed (UNAVAILABLE,
       DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ...); a watch stream that ended before the run did
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = __doc__.split("\n\n", 1)[1].strip() if __doc__ else ""

# The statuses a client causes: asking again unchanged would be refused again.
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class UsageError(Exception):
    """The command line (or a file it names) is wrong; nothing was sent."""


def report_usage(err: UsageError, stream: TextIO = sys.stderr) -> int:
    print(f"error: {err}", file=stream)
    return EXIT_USAGE


def report_rpc_error(err: grpc.RpcError, stream: TextIO = sys.stderr) -> int:
    """`error: CODE: message`, then one line per BadRequest field violation; the exit code."""
    code: Any = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = err.details() if isinstance(err, grpc.Call) else str(err)
    print(f"error: {code.name}: {message}", file=stream)
    for violation in _field_violations(err):
        print(f"  {violation.field}: {violation.description}", file=stream)
    return EXIT_REFUSED if code in REFUSALS else EXIT_UNAVAILABLE


def _field_violations(err: grpc.RpcError) -> list[Any]:
    try:
        status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    except ValueError:  # details that contradict the call's code or message
        return []
    if status is None:
        return []
    found: list[Any] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            found.extend(bad.field_violations)
    return found
