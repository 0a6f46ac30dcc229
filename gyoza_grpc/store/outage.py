"""Which store errors mean "the database cannot be reached right now".

Those are the server's trouble, not the caller's, and passing: the API answers them
UNAVAILABLE (clients retry) instead of INTERNAL, and the health monitor reports NOT_SERVING.
What counts: refused or dropped connections (asyncpg raises OSError on connect, SQLAlchemy
wraps the rest), pool and statement timeouts, a database that does not accept connections
(ALLOW_CONNECTIONS false, renamed, shutting down, too many clients), and SQLite's
OperationalError ("database is locked" past the busy timeout, "unable to open database file").
"""

from __future__ import annotations

from sqlalchemy import exc

# PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many
# connections), 57 operator intervention (admin shutdown, cannot connect now), 28 invalid
# authorisation; and single codes: 3D000 the database does not exist (renamed or dropped).
_UNREACHABLE_CLASSES = ("08", "53", "57", "28")
_UNREACHABLE_CODES = ("3D000",)
# 55000 (object not in prerequisite state) is also used for other things; only this one.
_NOT_ACCEPTING = "not currently accepting connections"


def is_database_unreachable(err: BaseException) -> bool:
    """True for errors that say the database is down or out of reach, not a bad query."""
    if isinstance(err, (OSError, TimeoutError, exc.TimeoutError)):
        return True
    if not isinstance(err, exc.DBAPIError):
        return False
    if err.connection_invalidated or isinstance(err, (exc.OperationalError, exc.InterfaceError)):
        return True
    sqlstate = getattr(err.orig, "sqlstate", None) or ""
    if sqlstate.startswith(_UNREACHABLE_CLASSES) or sqlstate in _UNREACHABLE_CODES:
        return True
    return sqlstate == "55000" and _NOT_ACCEPTING in str(err.orig)
