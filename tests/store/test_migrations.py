"""Alembic migrations on both backends: the head matches the tables, an older database with
data upgrades without losing it, and a server refuses a schema that is behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from gyoza_grpc.server import start_server
from gyoza_grpc.server.config import ServerConfig
from gyoza_grpc.server.store.engine import Engines, make_engines
from gyoza_grpc.server.store.schema import SchemaOutOfDate, migrate, schema_status
from gyoza_grpc.server.store.tables import metadata
from tests import databases


@pytest.fixture(params=databases.BACKENDS)
async def empty_url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    """A database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/empty.db"
        return
    base = databases.postgres_base_url()
    name = f"gyoza_m_{uuid.uuid4().hex[:12]}"
    await databases.admin(base, f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        await databases.drop_postgres_database(url)


def _index_name(item: object) -> str | None:
    if isinstance(item, tuple) and item and item[0] in ("add_index", "remove_index"):
        return str(item[1].name)
    return None


async def _diff(engines: Engines) -> list[object]:
    diff = await engines.run_sync(
        lambda c: compare_metadata(MigrationContext.configure(c), metadata)
    )
    if engines.is_sqlite:
        # alembic cannot compare SQLite expression indexes (priority DESC): it says so in a
        # warning and reports them as differing; the index itself is checked below.
        diff = [d for d in diff if _index_name(d) != "ix_runs_claim"]
    return diff


async def test_head_matches_the_tables(empty_url: str) -> None:
    engines = make_engines(empty_url)
    try:
        status = await migrate(engines)
        assert status.up_to_date
        assert await _diff(engines) == []
        indexes = await engines.run_sync(lambda c: sa.inspect(c).get_indexes("runs"))
        assert "ix_runs_claim" in {ix["name"] for ix in indexes}
    finally:
        await engines.dispose()


_PARTIAL = {
    "ix_runs_op_definition_created": "op_definition",
    "ix_runs_topic_created": "topic",
    "uq_runs_request_id": "request_id",
}


async def _index_sql(engines: Engines) -> dict[str, str]:
    query = (
        "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
        if engines.is_sqlite
        else "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'runs'"
    )
    found = await engines.run_sync(lambda c: c.execute(sa.text(query)).all())
    return {str(n): str(s) for n, s in found}


async def test_nullable_run_columns_have_partial_indexes_that_queries_use(
    empty_url: str,
) -> None:
    engines = make_engines(empty_url)
    try:
        await migrate(engines, "0003")
        before = await _index_sql(engines)
        assert all("WHERE" not in before[n] for n in _PARTIAL)
        await migrate(engines)
        found = await _index_sql(engines)
        for name, column in _PARTIAL.items():
            assert f"WHERE ({column} IS NOT NULL)" in found[name] or (
                f"WHERE {column} IS NOT NULL" in found[name]
            ), found[name]
        if engines.is_sqlite:
            for name, column in _PARTIAL.items():
                query = sa.text(f"EXPLAIN QUERY PLAN SELECT id FROM runs WHERE {column} = :v")
                plan = await engines.run_sync(lambda c, q=query: c.execute(q, {"v": "x"}).all())
                assert any(name in str(row) for row in plan), plan
    finally:
        await engines.dispose()


async def test_upgrade_from_the_first_revision_keeps_data(empty_url: str) -> None:
    engines = make_engines(empty_url)
    try:
        await migrate(engines, "0001")

        def seed(conn: sa.Connection) -> None:
            conn.execute(
                sa.text(
                    "INSERT INTO runs (id, state, priority, image, inputs, max_attempts, "
                    "topic_attributes, current_attempt, last_seq, created_at, updated_at) "
                    "VALUES ('r1', 'RUNNING', 7, 'img', '{\"a\": 1}', 2, '{}', 1, 0, 10, 20)"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO attempts (run_id, attempt, id, state, progress, outputs, "
                    "duration_ms, worker_id, error_message, created_at) "
                    "VALUES ('r1', 1, 'a1', 'RUNNING', 40, '{}', 0, 'w', '', 10)"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO events (run_id, seq, attempt, type, time, state, msg, payload) "
                    "VALUES ('r1', 0, 1, 'STARTED', 15, 'RUNNING', '', '{}')"
                )
            )

        await engines.run_sync(seed, write=True)
        status = await schema_status(engines)
        assert status.current == "0001" and not status.up_to_date and not status.empty
    finally:
        await engines.dispose()

    # A server refuses a schema that is behind, unless it is told to migrate.
    config = ServerConfig(host="127.0.0.1", port=0, database_url=empty_url)
    with pytest.raises(SchemaOutOfDate, match="gyoza-grpc migrate"):
        await start_server(config)
    gs = await start_server(
        ServerConfig(host="127.0.0.1", port=0, database_url=empty_url, migrate=True)
    )
    try:
        run, run_events = await gs.store.get_run("r1", with_events=True)
        assert (run.state, run.priority, run.inputs, run.attempt.progress) == (
            "RUNNING",
            7,
            {"a": 1},
            40,
        )
        assert run.next_attempt_at is None and run.uncounted_attempts == 0
        assert run.retry_policy.max_attempts == 2 and not run.retry_policy.initial_backoff
        assert [e.type for e in run_events] == ["STARTED"]
        assert (await schema_status(gs.engines)).up_to_date
    finally:
        await gs.stop(0)
