"""Engines for both backends, set up the way the store needs them.

SQLite: WAL, synchronous=NORMAL, a busy timeout, and our own BEGIN: `BEGIN IMMEDIATE` on
connections of the write engine (so a read-then-write transaction never loses its commit to
"database is locked"), a deferred `BEGIN` for reads (a consistent snapshot).
PostgreSQL (asyncpg): a sized pool; the store takes row locks with SELECT ... FOR UPDATE;
an optional statement_timeout set on every pooled connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///gyoza.db"
_WRITE_OPTION = "gyoza_write"


@dataclass(frozen=True, slots=True)
class Engines:
    """One pool, two views: `write` begins IMMEDIATE transactions on SQLite."""

    read: AsyncEngine
    write: AsyncEngine
    is_sqlite: bool

    async def dispose(self) -> None:
        await self.read.dispose()


def make_engines(
    url: str, *, pool_size: int = 10, echo: bool = False, statement_timeout_s: float = 0
) -> Engines:
    """`statement_timeout_s` (PostgreSQL only; 0 = none) cuts off any one statement that runs
    longer, a lock wait included."""
    sa_url = make_url(url)
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        database = sa_url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(sa_url, echo=echo, pool_size=pool_size, max_overflow=0)
        _setup_sqlite(engine)
        return Engines(
            read=engine, write=engine.execution_options(**{_WRITE_OPTION: True}), is_sqlite=True
        )
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if statement_timeout_s > 0:
            timeout_ms = max(1, round(statement_timeout_s * 1000))
            connect_args["server_settings"] = {"statement_timeout": str(timeout_ms)}
        engine = create_async_engine(
            sa_url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
        return Engines(read=engine, write=engine, is_sqlite=False)
    raise ValueError(
        f"unsupported database URL {sa_url.render_as_string(hide_password=True)!r}: "
        "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
    )


def _setup_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver: the "begin" hook below emits the right one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=10000",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
