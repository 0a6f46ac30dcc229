"""PostgreSQL: a transition's writes, and a new run's two rows, each as one statement.

Each statement costs a round trip and a pass through PostgreSQL's protocol and executor (its
snapshot, its relation locks, its plan), whatever it changes. A state change writes up to four
statements (the run, the attempt it closes or changes, the attempt it opens, its events), and
a new run two. On PostgreSQL these become one statement each: data-modifying CTEs (`WITH u AS
(UPDATE runs ...), a AS (UPDATE attempts ...) INSERT INTO events ...`). The parts touch different
tables, run on one snapshot, and their constraints are checked when the statement ends, so the
result is the result of the separate statements; an error in any part fails the whole
statement, as it would fail the transaction.

A statement is built once per shape (which run and attempt columns changed, whether an attempt
is opened, how many events) and kept: it is compiled once (store/pg_direct.py) and asyncpg
prepares it once per connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.sql import Executable

from gyoza_grpc.server.store import pg_direct
from gyoza_grpc.server.store.tables import attempts, events, runs

# Shapes kept (a transition's shapes are few: one per kind of event, in practice).
_MAX_SHAPES = 256
_Shape = tuple[tuple[str, ...], tuple[str, ...], bool, int]
_statements: dict[_Shape, Executable] = {}

_EVENT_COLUMNS = tuple(c.name for c in events.c)
_ATTEMPT_COLUMNS = tuple(c.name for c in attempts.c)


def _build(shape: _Shape) -> Executable:
    run_columns, attempt_columns, opens_attempt, n_events = shape
    parts = []
    if run_columns:
        parts.append(
            runs.update()
            .where(runs.c.id == sa.bindparam("b_run_id"))
            .values({c: sa.bindparam(f"r_{c}") for c in run_columns})
            .cte("w_run")
        )
    if attempt_columns:
        parts.append(
            attempts.update()
            .where(
                attempts.c.run_id == sa.bindparam("b_run_id"),
                attempts.c.attempt == sa.bindparam("b_attempt"),
            )
            .values({c: sa.bindparam(f"a_{c}") for c in attempt_columns})
            .cte("w_attempt")
        )
    if opens_attempt:
        parts.append(
            attempts.insert()
            .values({c: sa.bindparam(f"n_{c}") for c in _ATTEMPT_COLUMNS})
            .cte("w_new_attempt")
        )
    values: list[dict[str, Any]] = [
        {c: sa.bindparam(f"e{i}_{c}") for c in _EVENT_COLUMNS} for i in range(n_events)
    ]
    return events.insert().values(values).add_cte(*parts)


def write_transition(
    conn: Connection,
    run_id: str,
    run_changes: Mapping[str, Any],
    attempt: tuple[int, Mapping[str, Any]] | None,
    new_attempt: Mapping[str, Any] | None,
    new_events: Sequence[Mapping[str, Any]],
) -> None:
    """One statement: the run's changed columns, the changed columns of its attempt number
    `attempt[0]`, the attempt it opens, and its events (at least one)."""
    attempt_changes: Mapping[str, Any] = attempt[1] if attempt is not None else {}
    shape: _Shape = (
        tuple(run_changes),
        tuple(attempt_changes),
        new_attempt is not None,
        len(new_events),
    )
    stmt = _statements.get(shape)
    if stmt is None:
        stmt = _build(shape)
        if len(_statements) < _MAX_SHAPES:
            _statements[shape] = stmt
    params: dict[str, Any] = {"b_run_id": run_id}
    for k, v in run_changes.items():
        params[f"r_{k}"] = v
    if attempt is not None:
        params["b_attempt"] = attempt[0]
        for k, v in attempt_changes.items():
            params[f"a_{k}"] = v
    if new_attempt is not None:
        for k in _ATTEMPT_COLUMNS:
            params[f"n_{k}"] = new_attempt[k]
    for i, e in enumerate(new_events):
        for k in _EVENT_COLUMNS:
            params[f"e{i}_{k}"] = e[k]
    pg_direct.execute(conn, stmt, params)


# A new run and its first attempt.
_INSERT_RUN_AND_ATTEMPT: dict[tuple[str, ...], Executable] = {}


def insert_run(
    conn: Connection, run_row: Mapping[str, Any], attempt_row: Mapping[str, Any]
) -> None:
    """The run's row and its first attempt's, in one statement."""
    keys = tuple(run_row)
    stmt = _INSERT_RUN_AND_ATTEMPT.get(keys)
    if stmt is None:
        stmt = (
            attempts.insert()
            .values({c: sa.bindparam(f"n_{c}") for c in _ATTEMPT_COLUMNS})
            .add_cte(runs.insert().values({c: sa.bindparam(f"r_{c}") for c in keys}).cte("w_run"))
        )
        if len(_INSERT_RUN_AND_ATTEMPT) < _MAX_SHAPES:
            _INSERT_RUN_AND_ATTEMPT[keys] = stmt
    params = {f"r_{k}": v for k, v in run_row.items()}
    for k in _ATTEMPT_COLUMNS:
        params[f"n_{k}"] = attempt_row[k]
    pg_direct.execute(conn, stmt, params)
