"""Test databases: a fresh SQLite file, or a fresh PostgreSQL database cloned from a
migrated template, one per test.

PostgreSQL tests read the server URL from GYOZA_TEST_POSTGRES_URL (set by .ci/run). Without it
they skip, saying why; under CI=true a missing server is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from gyoza_grpc.server.store.engine import make_engines
from gyoza_grpc.server.store.schema import migrate

POSTGRES_ENV = "GYOZA_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")
_TEMPLATE = f"gyoza_tmpl_{os.getpid()}"
_template_ready = False


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'gyoza.db'}"


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        reason = f"PostgreSQL tests need {POSTGRES_ENV}=postgresql+asyncpg://USER@HOST:PORT/DB"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: a missing database is a failure)")
        pytest.skip(reason)
    return url


def _dsn(url: str, database: str) -> str:
    u = make_url(url).set(drivername="postgresql", database=database)
    return u.render_as_string(hide_password=False)


async def admin(url: str, sql: str) -> None:
    """Run `sql` on the server's maintenance database (CREATE, DROP, ALTER DATABASE)."""
    try:
        conn = await asyncpg.connect(_dsn(url, make_url(url).database or "postgres"))
    except (OSError, asyncpg.PostgresError) as err:
        message = f"PostgreSQL at {POSTGRES_ENV} is unreachable: {err}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _ensure_template(url: str) -> None:
    global _template_ready
    if _template_ready:
        return
    await admin(url, f'DROP DATABASE IF EXISTS "{_TEMPLATE}"')
    await admin(url, f'CREATE DATABASE "{_TEMPLATE}"')
    engines = make_engines(make_url(url).set(database=_TEMPLATE).render_as_string(False))
    try:
        await migrate(engines)
    finally:
        await engines.dispose()
    _template_ready = True


async def create_postgres_database() -> str:
    """A new migrated database; returns its URL. Drop it with drop_postgres_database."""
    url = postgres_base_url()
    await _ensure_template(url)
    name = f"gyoza_t_{uuid.uuid4().hex[:12]}"
    await admin(url, f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def create_empty_postgres_database() -> str:
    """A new database with no tables (for `gyoza-grpc migrate`); returns its URL. Drop it with
    drop_postgres_database."""
    url = postgres_base_url()
    name = f"gyoza_t_{uuid.uuid4().hex[:12]}"
    await admin(url, f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(test_url: str) -> None:
    name = make_url(test_url).database
    base = postgres_base_url()
    for _ in range(5):
        try:
            await admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.PostgresError:
            await asyncio.sleep(0.2)


def drop_template() -> None:
    if not _template_ready:
        return
    url = os.environ[POSTGRES_ENV]
    asyncio.run(admin(url, f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)'))
