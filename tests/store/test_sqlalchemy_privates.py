"""The private members of SQLAlchemy that `store/pg_direct.py` reads, checked as that module
uses them: SQLAlchemy is pinned to one minor version (pyproject.toml), and an upgrade that
changes one of these fails here, by name, before the PostgreSQL tests fail less plainly."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

from gyoza_grpc.server.store import tables


def test_sqlalchemy_is_the_pinned_minor_version() -> None:
    assert sa.__version__.startswith("2.1."), "pg_direct.py was checked against 2.1 only"


def test_a_compiled_statement_has_what_pg_direct_reads() -> None:
    dialect = asyncpg.dialect()
    runs = tables.runs
    stmt = sa.select(runs.c.id, runs.c.priority, runs.c.inputs).where(
        runs.c.id == sa.bindparam("id")
    )
    compiled = stmt.compile(dialect=dialect, column_keys=["id"])
    # The parameters in the order of $1, $2, ... and which need converting by SQLAlchemy.
    assert list(compiled.positiontup) == ["id"]
    assert isinstance(compiled._bind_processors, Mapping)
    assert "$1" in str(compiled)
    # Each result column's type, fourth in its entry, and its result processor by database
    # type (None when the driver's value is already the one SQLAlchemy would return).
    types = [entry[3] for entry in compiled._result_columns]
    assert [type(t) for t in types] == [
        type(c.type) for c in (runs.c.id, runs.c.priority, runs.c.inputs)
    ]
    for type_ in types:
        assert isinstance(type_, TypeEngine)
        processor = type_._cached_result_processor(dialect, None)
        assert processor is None or callable(processor)


def test_connection_handles_a_dbapi_error_as_pg_direct_calls_it() -> None:
    names = list(inspect.signature(Connection._handle_dbapi_exception).parameters)
    assert names[:6] == ["self", "e", "statement", "parameters", "cursor", "context"]
