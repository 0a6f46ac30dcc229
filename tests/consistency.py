"""What must hold in the database whatever clients sent and however the server died.

Read straight from the tables (SQLAlchemy Core, both backends): every run has its attempt
rows 1..current_attempt and shows its current attempt's state; a run's events are gap-free
0..last_seq; after an event in a terminal state comes only a RETRIED that opens the next
attempt; closed attempts are terminal; topic cursors are gap-free and point at real events.
On SQLite, `PRAGMA integrity_check` is "ok" and no foreign key dangles.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from gyoza_grpc.server.store.engine import make_engines
from gyoza_grpc.server.store.tables import attempts, events, runs, topic_events, topics

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


async def database_problems(url: str) -> list[str]:
    """Every inconsistency found (an empty list when the database is sound)."""
    engines = make_engines(url, pool_size=1)
    problems: list[str] = []

    def read(conn: sa.Connection) -> tuple[list[Any], ...]:
        if engines.is_sqlite:
            check = conn.exec_driver_sql("PRAGMA integrity_check").scalars().all()
            if list(check) != ["ok"]:
                problems.append(f"integrity_check: {check}")
            dangling = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if dangling:
                problems.append(f"foreign_key_check: {dangling[:5]}")
        return (
            list(conn.execute(sa.select(runs)).all()),
            list(conn.execute(sa.select(attempts)).all()),
            list(conn.execute(sa.select(events).order_by(events.c.seq)).all()),
            list(conn.execute(sa.select(topics)).all()),
            list(conn.execute(sa.select(topic_events).order_by(topic_events.c.cursor)).all()),
        )

    try:
        run_rows, attempt_rows, event_rows, topic_rows, cursor_rows = await engines.run_sync(read)
    finally:
        await engines.dispose()
    by_run_attempts: dict[str, dict[int, Any]] = defaultdict(dict)
    for a in attempt_rows:
        by_run_attempts[a.run_id][a.attempt] = a
    by_run_events: dict[str, list[Any]] = defaultdict(list)
    for e in event_rows:
        by_run_events[e.run_id].append(e)
    run_ids = {r.id for r in run_rows}
    for run_id in set(by_run_attempts) - run_ids:
        problems.append(f"attempts of a missing run {run_id!r}")
    for run_id in set(by_run_events) - run_ids:
        problems.append(f"events of a missing run {run_id!r}")
    for r in run_rows:
        problems.extend(_run_problems(r, by_run_attempts[r.id], by_run_events[r.id]))
    event_keys = {(e.run_id, e.seq) for e in event_rows}
    cursors: dict[str, list[int]] = defaultdict(list)
    for c in cursor_rows:
        cursors[c.topic].append(c.cursor)
        if (c.run_id, c.seq) not in event_keys:
            problems.append(f"topic {c.topic!r} cursor {c.cursor} names a missing event")
    for t in topic_rows:
        if cursors[t.name] != list(range(1, t.last_cursor + 1)):
            problems.append(
                f"topic {t.name!r}: cursors {cursors[t.name][:10]}... are not 1..{t.last_cursor}"
            )
    return problems


def _run_problems(r: Any, run_attempts: dict[int, Any], run_events: list[Any]) -> list[str]:
    out: list[str] = []
    where = f"run {r.id}"
    if sorted(run_attempts) != list(range(1, r.current_attempt + 1)):
        out.append(f"{where}: attempts {sorted(run_attempts)} for current {r.current_attempt}")
        return out
    if run_attempts[r.current_attempt].state != r.state:
        current = run_attempts[r.current_attempt].state
        out.append(f"{where}: state {r.state} but its current attempt is {current}")
    for n, a in run_attempts.items():
        if n < r.current_attempt and a.state not in TERMINAL:
            out.append(f"{where}: closed attempt {n} is {a.state}")
    seqs = [e.seq for e in run_events]
    if seqs != list(range(r.last_seq + 1)):
        out.append(f"{where}: seqs {seqs[:10]}... are not 0..{r.last_seq}")
        return out
    if not run_events:
        if r.state != "PENDING" or r.current_attempt != 1:
            out.append(f"{where}: {r.state} attempt {r.current_attempt} without any event")
        return out
    if run_events[-1].state != r.state:
        out.append(f"{where}: last event state {run_events[-1].state}, run {r.state}")
    for before, after in itertools.pairwise(run_events):
        if after.attempt < before.attempt:
            out.append(f"{where}: event {after.seq} goes back to attempt {after.attempt}")
        if before.state in TERMINAL and (
            after.type != "RETRIED" or after.attempt != before.attempt + 1
        ):
            out.append(
                f"{where}: event {after.seq} ({after.type}, attempt {after.attempt}) after "
                f"terminal event {before.seq} ({before.state}, attempt {before.attempt})"
            )
        if after.type == "RETRIED" and after.attempt != before.attempt + 1:
            out.append(f"{where}: RETRIED event {after.seq} does not open the next attempt")
    if run_events[-1].attempt != r.current_attempt:
        out.append(f"{where}: last event is of attempt {run_events[-1].attempt}")
    return out
