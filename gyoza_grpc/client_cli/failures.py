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
from typing import TextIO

from gyoza_grpc.domain.errors import GyozaError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = __doc__.split("\n\n", 1)[1].strip() if __doc__ else ""

# The statuses a client causes: asking again unchanged would be refused again.
REFUSALS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        "UNIMPLEMENTED",
    }
)


class UsageError(Exception):
    """The command line (or a file it names) is wrong; nothing was sent."""


def report_usage(err: UsageError, stream: TextIO = sys.stderr) -> int:
    print(f"error: {err}", file=stream)
    return EXIT_USAGE


def report_error(err: GyozaError, stream: TextIO = sys.stderr) -> int:
    """`error: CODE: message`, then one line per BadRequest field violation; the exit code."""
    print(f"error: {err.code}: {err.message}", file=stream)
    for violation in err.violations:
        print(f"  {violation.field}: {violation.description}", file=stream)
    return EXIT_REFUSED if err.code in REFUSALS else EXIT_UNAVAILABLE
