"""The database engines of both backends, configured the way the store needs them.

SQLite (a file): a synchronous SQLAlchemy engine on the sqlite3 driver: WAL,
synchronous=NORMAL (or FULL), foreign keys, no busy wait (a lock held by another process is
waited for on a thread: store/sqlite_transactions.py), and no BEGIN of the driver's own: the
transaction layer says BEGIN / BEGIN IMMEDIATE itself. WAL checkpoints run on a thread
(store/checkpointer.py). The URL's `+aiosqlite` driver name is accepted and means the same
file: the server never needs aiosqlite's thread, as its statements take microseconds.

PostgreSQL: an async engine on asyncpg with a sized pool (no pre-ping), and an optional
statement_timeout on every pooled connection.

`run_sync` runs a synchronous function of a Connection away from the hot path (migrations, the
gauges' aggregate reads, the ping): on a thread of its own connection for SQLite, in
SQLAlchemy's greenlet for PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gyoza_grpc.server.config import SQLITE_SYNCHRONOUS
from gyoza_grpc.server.store.checkpointer import SAFETY_NET_PAGES, WalCheckpointer
from gyoza_grpc.server.store.transactions import Transactions

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Engines:
    """The engine of one database: `sqlite` (a file) or `postgres` (asyncpg)."""

    sqlite: Engine | None = None
    postgres: AsyncEngine | None = None
    # SQLite: the file, and the thread that checkpoints its WAL (stopped by dispose()).
    sqlite_file: str | None = None
    checkpointer: WalCheckpointer | None = field(default=None, repr=False, compare=False)

    @property
    def is_sqlite(self) -> bool:
        return self.sqlite is not None

    async def run_sync(self, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        """`fn(conn)` in a transaction of its own, off the loop: committed if it returns
        (`write`), else a read (on SQLite a deferred BEGIN: it takes no write lock)."""
        if self.sqlite is not None:
            engine = self.sqlite

            def on_thread() -> T:
                if write:
                    with engine.begin() as conn:  # BEGIN IMMEDIATE (see _on_begin)
                        return fn(conn)
                with engine.connect() as conn:
                    raw: Any = conn.connection.driver_connection
                    raw.execute("BEGIN")  # before SQLAlchemy's: _on_begin then adds nothing
                    try:
                        return fn(conn)
                    finally:
                        conn.rollback()
                        if raw.in_transaction:
                            raw.rollback()

            return await asyncio.to_thread(on_thread)
        assert self.postgres is not None
        async with self.postgres.begin() as conn:
            return await conn.run_sync(fn)

    async def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.sqlite is not None:
            self.sqlite.dispose()
        if self.postgres is not None:
            await self.postgres.dispose()


def make_engines(
    url: str,
    *,
    pool_size: int = 10,
    echo: bool = False,
    statement_timeout_s: float = 0,
    sqlite_synchronous: str = "normal",
) -> Engines:
    """`statement_timeout_s` (PostgreSQL only; 0 = none) cuts off any one statement that runs
    longer, a lock wait included."""
    sa_url = make_url(url)
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        database = sa_url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError(
                "gyoza-grpc keeps SQLite in a file: use sqlite+aiosqlite:///PATH "
                "(an in-memory database would vanish with its connection)"
            )
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite synchronous must be one of {SQLITE_SYNCHRONOUS}")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: a write that waits for another process's lock, the
        # gauges' reads and migrations run on threads.
        engine = create_engine(
            f"sqlite:///{database}",
            echo=echo,
            pool_size=pool_size,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
        _setup_sqlite(engine, sqlite_synchronous)
        checkpointer = WalCheckpointer(database)
        checkpointer.start()
        return Engines(sqlite=engine, sqlite_file=database, checkpointer=checkpointer)
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if statement_timeout_s > 0:
            timeout_ms = max(1, round(statement_timeout_s * 1000))
            connect_args["server_settings"] = {"statement_timeout": str(timeout_ms)}
        pg = create_async_engine(
            sa_url.set(drivername="postgresql+asyncpg"),
            echo=echo,
            pool_size=pool_size,
            max_overflow=0,
            # No ping per checkout (a round trip per transaction): a connection the
            # database dropped fails its next statement, and SQLAlchemy then replaces every
            # pooled connection; that call answers UNAVAILABLE, which clients retry.
            pool_pre_ping=False,
            connect_args=connect_args,
        )
        return Engines(postgres=pg)
    raise ValueError(
        f"unsupported database URL {sa_url.render_as_string(hide_password=True)!r}: "
        "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
    )


def _setup_sqlite(engine: Engine, synchronous: str) -> None:
    """WAL with synchronous=NORMAL: a commit survives a crash of the process (the WAL is
    written before COMMIT returns) and costs no fsync; a power loss may lose the last ones.
    FULL: an fsync per commit, and a power loss loses none."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver: the transaction layer and _on_begin say it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous.upper()}",
            "PRAGMA busy_timeout=0",  # waits happen on a thread (sqlite_transactions.py)
            "PRAGMA foreign_keys=ON",
            # A file's checkpoints run on WalCheckpointer's thread; this is the backstop.
            f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # SQLAlchemy's own begin (the transaction layer begins on the driver, and the
        # connection is in autocommit mode): every transaction it starts may write.
        raw = conn.connection.driver_connection
        if not raw.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_transactions(engines: Engines, *, origin: str | None = None) -> Transactions:
    """The transaction layer of `engines`' database. `origin` (PostgreSQL) tags the NOTIFYs
    this replica's writes send to the others; None sends none."""
    from gyoza_grpc.server.store.pg_transactions import PgTransactions
    from gyoza_grpc.server.store.sqlite_transactions import SQLiteTransactions

    if engines.sqlite is not None:
        return SQLiteTransactions(engines.sqlite)
    assert engines.postgres is not None
    return PgTransactions(engines.postgres, origin=origin)
