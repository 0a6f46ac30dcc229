"""Database failures a client should see as UNAVAILABLE, not as a server bug (INTERNAL).

The one place that decides it, for the run store (`database_errors`) and for whatever else
escapes a handler (api/errors.py). Three kinds, each with its ErrorInfo reason:
- DATABASE_BUSY: no pooled connection came free in time;
- DATABASE_TIMEOUT: a statement cut off by `--db-statement-timeout` (or a lock timeout), rolled
  back with its transaction;
- DATABASE_UNAVAILABLE: the database is out of reach (`is_database_unreachable`): refused or
  dropped connections (asyncpg raises OSError on connect, SQLAlchemy wraps the rest), a
  database that does not accept connections (ALLOW_CONNECTIONS false, renamed, shutting down,
  too many clients), and SQLite's OperationalError ("database is locked" past the busy
  timeout, "unable to open database file").
All are passing and safe to retry with backoff, which is what UNAVAILABLE tells a gRPC client.
Anything else stays an unexpected error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import exc

from gyoza_grpc.domain.errors import Unavailable

# query_canceled (statement_timeout), lock_not_available (lock_timeout).
_TIMEOUT_STATES = frozenset({"57014", "55P03"})
# SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many
# connections), 57 operator intervention (admin shutdown, cannot connect now), 28 invalid
# authorisation; and single codes: 3D000 the database does not exist (renamed or dropped).
_UNREACHABLE_CLASSES = ("08", "53", "57", "28")
_UNREACHABLE_STATES = frozenset({"3D000"})
# 55000 (object not in prerequisite state) is also used for other things; only this one.
_NOT_ACCEPTING = "not currently accepting connections"


def _sqlstate(err: exc.DBAPIError) -> str:
    return str(getattr(err.orig, "sqlstate", None) or "")


def is_database_unreachable(err: BaseException) -> bool:
    """True for errors that say the database is down or out of reach, not a bad query (nor a
    statement cut off by a timeout: the database answered that)."""
    if isinstance(err, (OSError, TimeoutError, exc.TimeoutError)):
        return True
    if not isinstance(err, exc.DBAPIError):
        return False
    state = _sqlstate(err)
    if state in _TIMEOUT_STATES:
        return False
    if err.connection_invalidated or isinstance(err, (exc.OperationalError, exc.InterfaceError)):
        return True
    if isinstance(err.orig, OSError):
        return True
    if state.startswith(_UNREACHABLE_CLASSES) or state in _UNREACHABLE_STATES:
        return True
    return state == "55000" and _NOT_ACCEPTING in str(err.orig)


def translate(err: BaseException) -> Unavailable | None:
    """The UNAVAILABLE error for a transient database failure, or None."""
    if isinstance(err, exc.TimeoutError):  # no pooled connection came free in time
        return Unavailable(
            "no database connection became free in time (the pool is exhausted); retry",
            reason="DATABASE_BUSY",
        )
    if isinstance(err, exc.DBAPIError) and _sqlstate(err) in _TIMEOUT_STATES:
        return Unavailable(
            "a database statement ran past the statement timeout and was rolled back; retry",
            reason="DATABASE_TIMEOUT",
        )
    if is_database_unreachable(err):
        return Unavailable("the database is unavailable; retry", reason="DATABASE_UNAVAILABLE")
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
