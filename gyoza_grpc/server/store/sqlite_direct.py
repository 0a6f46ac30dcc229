"""The store's constant statements on the hot paths, straight through SQLite's driver.

A SELECT by primary key or a one-row INSERT takes SQLite a few microseconds; SQLAlchemy's
execution around it (an execution context, a compiled-cache lookup, parameter processing, a
result object) takes ten times that, on every write and every GetRun. For the store's
constant statements on a SQLite connection, these helpers run the statement's SQL, compiled
once per set of parameter names, on the connection's sqlite3 handle. The columns involved are
integers, floats, text and booleans, which the driver binds and returns as SQLAlchemy would.
PostgreSQL's connections go through store/pg_direct.py, which does the same on asyncpg's adapter;
others (the async engine's aiosqlite) through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Executable

from gyoza_grpc.server.store import pg_direct

_NAMED = sqlite.dialect(paramstyle="named")
# (statement, parameter names) -> its SQL, and the values of the statement's own bound
# literals (`.values(last_cursor=0)`); the statements are module constants.
_compiled: dict[tuple[Executable, tuple[str, ...]], tuple[str, dict[str, Any]]] = {}


def _sql(stmt: Executable, params: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    keys = tuple(params)
    found = _compiled.get((stmt, keys))
    if found is None:
        # column_keys: an INSERT or UPDATE names just the columns given, as SQLAlchemy does.
        compiled = stmt.compile(dialect=_NAMED, column_keys=list(keys))  # type: ignore[attr-defined]
        own = {k: v for k, v in compiled.params.items() if k not in params}
        found = _compiled[(stmt, keys)] = (str(compiled), own)
    sql, own = found
    return sql, ({**own, **params} if own else params)


def run(raw: sqlite3.Connection, sql: str, params: Any = ()) -> sqlite3.Cursor:
    """`raw.execute`, with the driver's errors raised as SQLAlchemy raises them
    (IntegrityError, OperationalError...), so callers and db_errors.py see one kind."""
    try:
        return raw.execute(sql, params)
    except sqlite3.Error as err:
        raise exc.DBAPIError.instance(sql, params, err, sqlite3.Error) from err


def _driver(conn: Connection) -> sqlite3.Connection | None:
    raw = conn.connection.driver_connection
    return raw if isinstance(raw, sqlite3.Connection) else None


def mappings(
    conn: Connection, stmt: Executable, params: Mapping[str, Any]
) -> list[Mapping[Any, Any]]:
    """The rows of a constant SELECT (or a statement with RETURNING) as mappings keyed by
    column label."""
    raw = _driver(conn)
    if raw is None:
        if conn.dialect.name == "postgresql":
            return pg_direct.mappings(conn, stmt, params)
        return [r._mapping for r in conn.execute(stmt, params)]  # no copy
    cursor = run(raw, *_sql(stmt, params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def execute(conn: Connection, stmt: Executable, params: Mapping[str, Any]) -> None:
    """A constant INSERT or UPDATE with one set of values."""
    raw = _driver(conn)
    if raw is None:
        if conn.dialect.name == "postgresql":
            pg_direct.execute(conn, stmt, params)
        else:
            conn.execute(stmt, params)
    else:
        run(raw, *_sql(stmt, params))


def execute_many(conn: Connection, stmt: Executable, params: Sequence[Mapping[str, Any]]) -> None:
    """A constant INSERT with several rows of the same columns."""
    raw = _driver(conn)
    if raw is None:
        if conn.dialect.name == "postgresql":
            pg_direct.execute_many(conn, stmt, params)
        else:
            conn.execute(stmt, list(params))
    elif len(params) == 1:
        run(raw, *_sql(stmt, params[0]))
    elif params:
        sql, own = _sql(stmt, params[0])
        rows = [{**own, **p} for p in params] if own else params
        try:
            raw.executemany(sql, rows)
        except sqlite3.Error as err:
            raise exc.DBAPIError.instance(sql, params, err, sqlite3.Error) from err
