"""Reads of the hot paths, straight through SQLite's driver.

A SELECT by primary key takes SQLite a few microseconds; SQLAlchemy's execution around it
(an execution context, a compiled-cache lookup, a result object, row processing) takes ten
times that, on every GetRun and every state change. For the store's few constant statements
on SQLite, `mappings()` runs the statement's SQL, compiled once, on the connection's sqlite3
handle and returns plain dicts. The columns these statements read are integers, floats and
text, which the driver returns as SQLAlchemy would. Other connections (PostgreSQL, the
async engine's aiosqlite) go through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Select

_NAMED = sqlite.dialect(paramstyle="named")
# statement -> its SQL; the statements are module constants, kept alive by this dict.
_compiled: dict[Select[Any], str] = {}


def mappings(
    conn: Connection, stmt: Select[Any], params: Mapping[str, Any]
) -> list[Mapping[Any, Any]]:
    """The rows of a constant SELECT as mappings keyed by column label."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):  # PostgreSQL, or aiosqlite's async engine
        return [r._mapping for r in conn.execute(stmt, params)]  # no copy
    sql = _compiled.get(stmt)
    if sql is None:
        sql = _compiled[stmt] = str(stmt.compile(dialect=_NAMED))
    cursor = raw.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
