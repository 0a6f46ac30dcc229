"""The store's constant statements on PostgreSQL, straight through the asyncpg adapter's cursor.

SQLAlchemy's execution around a statement (an execution context, a compiled-cache key, the
parameters, a result object) costs more Python than asyncpg's round trip itself, on every
statement of every write; the PostgreSQL server process is then not the only one short of CPU.
For the store's constant statements (module-level, so compiled once here), these helpers run
the SQL that SQLAlchemy compiled for the connection's dialect on the DBAPI cursor of SQLAlchemy's
asyncpg adapter: the adapter still begins the transaction when the first statement runs,
prepares each statement once per connection and translates asyncpg's errors; SQLAlchemy's
`Connection` still commits or rolls it back. A statement whose types need SQLAlchemy to convert
a parameter goes through `Connection.execute` as before; a column that needs converting is
converted with SQLAlchemy's own result processor.

Errors go through SQLAlchemy's own handling of a DBAPI error: raised as its exception classes
(IntegrityError, OperationalError...), and a dropped connection invalidated with the rest of
the pool, exactly as for a statement SQLAlchemy ran.

It reads private members of SQLAlchemy (the compiler's `_bind_processors` and
`_result_columns`, `TypeEngine._cached_result_processor`, `Connection._handle_dbapi_exception`):
pyproject.toml pins SQLAlchemy to one minor version, and tests/store/test_sqlalchemy_privates.py
fails by name when an upgrade changes one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql import Executable


@dataclass(slots=True)
class _Compiled:
    sql: str
    # The parameter names in the order of $1, $2, ...
    names: tuple[str, ...]
    # Values the statement binds itself (`.values(last_cursor=0)`).
    own: dict[str, Any]
    # The result columns' SQLAlchemy types, until the first execution tells (from the
    # columns' database types) which need converting: then `convert` holds, per column, the
    # conversion or None (empty when none does).
    types: list[Any] = field(default_factory=list)
    convert: list[Callable[[Any], Any] | None] | None = None


# (statement, dialect name, parameter names) -> its SQL, or None when SQLAlchemy must convert
# a parameter; the statements are module constants.
_compiled: dict[tuple[Executable, str, tuple[str, ...]], _Compiled | None] = {}


def _compile(conn: Connection, stmt: Executable, keys: tuple[str, ...]) -> _Compiled | None:
    key = (stmt, conn.dialect.name, keys)
    try:
        return _compiled[key]
    except KeyError:
        pass
    # column_keys: an INSERT or UPDATE names just the columns given, as SQLAlchemy does.
    compiled: Any = stmt.compile(dialect=conn.dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    found: _Compiled | None = None
    if not compiled._bind_processors and compiled.positiontup is not None:
        own = {k: v for k, v in compiled.params.items() if k not in keys}
        types = [rc[3] for rc in compiled._result_columns]
        found = _Compiled(str(compiled), tuple(compiled.positiontup), own, types)
        if not types:
            found.convert = []
    _compiled[key] = found
    return found


def _conversions(conn: Connection, c: _Compiled, description: Sequence[Any]) -> list[Any]:
    """Each result column's SQLAlchemy result processor, from its database type (empty when
    no column needs one)."""
    convert = [
        type_._cached_result_processor(conn.dialect, column[1])
        for type_, column in zip(c.types, description, strict=True)
    ]
    c.convert, c.types = (convert if any(convert) else []), []
    return c.convert


def _run(conn: Connection, c: _Compiled, params: Mapping[str, Any]) -> Any:
    values = {**c.own, **params} if c.own else params
    args = tuple(values[name] for name in c.names)
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute(c.sql, args)
    except Exception as err:
        cursor.close()
        # SQLAlchemy's own handling, as for a statement it ran: the error raised as its
        # exception class, and on a dropped connection this one invalidated and every other
        # pooled one replaced before its next use.
        conn._handle_dbapi_exception(err, c.sql, args, cursor, None)
        raise
    return cursor


def mappings(
    conn: Connection, stmt: Executable, params: Mapping[str, Any]
) -> list[Mapping[Any, Any]]:
    """The rows of a constant SELECT (or a statement with RETURNING), keyed by column label."""
    c = _compile(conn, stmt, tuple(params))
    if c is None:
        return [r._mapping for r in conn.execute(stmt, params)]
    cursor = _run(conn, c, params)
    try:
        description = cursor.description
        rows = cursor.fetchall()
    finally:
        cursor.close()
    convert = c.convert
    if convert is None:
        convert = _conversions(conn, c, description)
    names = [d[0] for d in description]
    if convert:
        return [
            {n: (v if f is None else f(v)) for n, v, f in zip(names, row, convert, strict=True)}
            for row in rows
        ]
    # asyncpg's Records are read by name already; a dict keeps callers' `row["col"]` cheap.
    return [dict(zip(names, row, strict=True)) for row in rows]


def execute(conn: Connection, stmt: Executable, params: Mapping[str, Any]) -> None:
    """A constant INSERT or UPDATE (no RETURNING) with one set of values."""
    c = _compile(conn, stmt, tuple(params))
    if c is None:
        conn.execute(stmt, params)
        return
    _run(conn, c, params).close()


def execute_many(conn: Connection, stmt: Executable, params: Sequence[Mapping[str, Any]]) -> None:
    """A constant INSERT with several rows of the same columns."""
    if len(params) == 1:
        execute(conn, stmt, params[0])
    elif params:
        conn.execute(stmt, list(params))  # asyncpg's executemany: one round trip
