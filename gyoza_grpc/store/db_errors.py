"""Database failures a client should see as UNAVAILABLE, not as a server bug (INTERNAL).

A statement cut off by `--db-statement-timeout` (or a lock timeout) was rolled back with its
transaction, and a database that is restarting or out of reach is a transient condition: both
are safe to retry with backoff, which is what UNAVAILABLE tells a gRPC client. Anything else
stays an unexpected error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import exc

from gyoza_grpc.domain.errors import Unavailable

# query_canceled (statement_timeout), lock_not_available (lock_timeout).
_TIMEOUT_STATES = frozenset({"57014", "55P03"})
# admin_shutdown, crash_shutdown, cannot_connect_now; class 08 is "connection exception".
_GONE_STATES = frozenset({"57P01", "57P02", "57P03"})


def _sqlstate(err: exc.DBAPIError) -> str:
    return str(getattr(err.orig, "sqlstate", None) or "")


def translate(err: Exception) -> Unavailable | None:
    """The UNAVAILABLE error for a transient database failure, or None."""
    if isinstance(err, exc.TimeoutError):  # no pooled connection came free in time
        return Unavailable(
            "no database connection became free in time (the pool is exhausted); retry",
            reason="DATABASE_BUSY",
        )
    if not isinstance(err, exc.DBAPIError):
        return None
    state = _sqlstate(err)
    if state in _TIMEOUT_STATES:
        return Unavailable(
            "a database statement ran past the statement timeout and was rolled back; retry",
            reason="DATABASE_TIMEOUT",
        )
    if state in _GONE_STATES or state.startswith("08") or err.connection_invalidated:
        return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
    if isinstance(err.orig, OSError):
        return Unavailable("the database is unreachable; retry", reason="DATABASE_UNAVAILABLE")
    return None


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Re-raise transient database failures as Unavailable (the cause kept for the log)."""
    try:
        yield
    except (exc.DBAPIError, exc.TimeoutError) as err:
        mapped = translate(err)
        if mapped is None:
            raise
        raise mapped from err
