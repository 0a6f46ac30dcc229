"""Engines for both backends, set up the way the store needs them.

SQLite: WAL, synchronous=NORMAL, a busy timeout, statements run on the loop's thread (see
_InlineConnection), and our own BEGIN: `BEGIN IMMEDIATE` on connections of the write engine (so
a read-then-write transaction never loses its commit to "database is locked"), none for reads.
PostgreSQL (asyncpg): a sized pool; the store takes row locks with SELECT ... FOR UPDATE;
an optional statement_timeout set on every pooled connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gyoza_grpc.config import SQLITE_SYNCHRONOUS
from gyoza_grpc.store.checkpointer import SAFETY_NET_PAGES, WalCheckpointer
from gyoza_grpc.store.wal_header import WalHeader

_WRITE_OPTION = "gyoza_write"


@dataclass(frozen=True, slots=True)
class Engines:
    """`read` and `write` are two views of one async pool (`write` begins IMMEDIATE
    transactions on SQLite): the workers' and definitions' stores and the stats use them.

    `inline` / `inline_write` (SQLite files only): a plain synchronous engine, with its own
    pool, on the same file; every RunStore operation runs on it straight from the event loop,
    without aiosqlite's thread or SQLAlchemy's greenlet (see RunStore._run_read / _run_write).
    """

    read: AsyncEngine
    write: AsyncEngine
    is_sqlite: bool
    inline: Engine | None = None
    inline_write: Engine | None = None
    # The connections kept checked out of `inline` / `inline_write` (see held()).
    _held: dict[bool, Connection] = field(default_factory=dict, repr=False, compare=False)
    # SQLite files: WAL checkpoints on a thread (store/checkpointer.py), stopped by dispose().
    checkpointer: WalCheckpointer | None = field(default=None, repr=False, compare=False)
    # SQLite files: the file's path, and its WAL-index header once mapped (see wal_header()).
    sqlite_file: str | None = None
    _wal: dict[str, WalHeader | None] = field(default_factory=dict, repr=False, compare=False)

    def held(self, *, write: bool) -> Connection:
        """A connection of `inline_write` (or `inline`) kept checked out until dispose(): a
        RunStore call then pays no pool checkout and return. One of each is enough: inline
        calls run one at a time on the loop, and writes one at a time under the store's
        writer lock."""
        conn = self._held.get(write)
        if conn is None or conn.closed or conn.invalidated:
            engine = self.inline_write if write else self.inline
            assert engine is not None, "held() is for SQLite files"
            conn = self._held[write] = engine.connect()
        return conn

    def wal_header(self) -> WalHeader | None:
        """The SQLite file's WAL-index header (store/wal_header.py), mapped once the held
        write connection has the file open in WAL mode; None: ask SQLite instead."""
        if "file" not in self._wal:
            header = None
            if self.sqlite_file is not None:
                self.held(write=True)  # the -shm exists, and stays while this is open
                header = WalHeader.open(self.sqlite_file)
            self._wal["file"] = header
        return self._wal["file"]

    async def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        header = self._wal.pop("file", None)
        if header is not None:  # unmapped before the connections that keep the -shm go
            header.close()
        for conn in self._held.values():
            conn.close()
        self._held.clear()
        await self.read.dispose()
        if self.inline is not None:
            self.inline.dispose()


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
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            sa_url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=0,
            async_creator=partial(_inline_sqlite, database or ":memory:"),
        )
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite synchronous must be one of {SQLITE_SYNCHRONOUS}")
        _setup_sqlite(engine.sync_engine, sqlite_synchronous)
        inline: Engine | None = None
        checkpointer: WalCheckpointer | None = None
        if database and database != ":memory:" and not database.startswith("file:"):
            checkpointer = WalCheckpointer(database)
            checkpointer.start()
            # check_same_thread=False: a write that must wait for another process's lock
            # runs on a worker thread (RunStore._run_write).
            inline = create_engine(
                f"sqlite:///{database}",
                echo=echo,
                pool_size=pool_size,
                max_overflow=0,
                connect_args={"check_same_thread": False},
            )
            _setup_sqlite(inline, sqlite_synchronous)
        return Engines(
            read=engine,
            write=engine.execution_options(**{_WRITE_OPTION: True}),
            is_sqlite=True,
            inline=inline,
            inline_write=(
                inline.execution_options(**{_WRITE_OPTION: True}) if inline is not None else None
            ),
            checkpointer=checkpointer,
            sqlite_file=database if inline is not None else None,
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


class _InlineConnection(aiosqlite.Connection):
    """aiosqlite that runs each SQLite call on the event loop's thread instead of its own.

    A statement on an indexed table in SQLite's page cache takes microseconds; handing it to
    aiosqlite's thread and back costs a queue put, a thread wake-up and a self-pipe write to
    wake the loop, ten times more, and a transaction makes about ten of those hand-offs. Run in
    line, a transaction also never yields to the loop halfway, which is what a writer wants.
    The price: a slow statement stalls the loop, so the store keeps its statements on indexes
    (keyset paging, no scans). WAL auto-checkpoints (every 1000 pages) also run in line. A
    lock held by another process is not waited for here but on aiosqlite's thread.
    """

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as err:
            if not is_busy(err):
                raise
        # Another process holds SQLite's write lock (this one's writers queue on the store's
        # lock first). Wait for it on aiosqlite's thread, not on the loop; nothing was done.
        return await super()._execute(_waiting_for_lock, self._conn, partial(fn, *args, **kwargs))  # type: ignore[no-untyped-call]


# In line, a busy SQLite fails at once (busy_timeout 0) and the call is retried on the thread
# with this timeout; past it, "database is locked".
_BUSY_TIMEOUT_MS = 10_000


def is_busy(err: BaseException) -> bool:
    """SQLite's "database is locked": another connection holds the write lock."""
    text = str(err)
    return "locked" in text or "busy" in text


def _waiting_for_lock(conn: sqlite3.Connection, call: Callable[[], Any]) -> Any:
    with waiting_for_lock(conn):
        return call()


@contextlib.contextmanager
def waiting_for_lock(conn: sqlite3.Connection) -> Iterator[None]:
    """Within: SQLite waits up to _BUSY_TIMEOUT_MS for another connection's write lock."""
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    try:
        yield
    finally:
        conn.execute("PRAGMA busy_timeout=0")


async def _inline_sqlite(database: str) -> aiosqlite.Connection:
    # check_same_thread=False: aiosqlite's thread opens and closes the connection.
    connector = partial(sqlite3.connect, database, check_same_thread=False)
    conn = _InlineConnection(connector, iter_chunk_size=64)
    conn._thread.daemon = True
    return await conn


def _setup_sqlite(engine: Engine, synchronous: str) -> None:
    """WAL with synchronous=NORMAL: a commit survives a crash of the process (the WAL is
    written before COMMIT returns) and costs no fsync; a power loss may lose the last ones.
    FULL: an fsync per commit, and a power loss loses none."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver: the "begin" hook below emits the right one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous.upper()}",
            "PRAGMA busy_timeout=0",  # see _InlineConnection._execute
            "PRAGMA foreign_keys=ON",
            # A file's checkpoints run on WalCheckpointer's thread; this is the backstop.
            f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Reads need no BEGIN: their statements run in line, one after another, without the
        # loop running in between, so no write of this process can come between them.
        if not conn.get_execution_options().get(_WRITE_OPTION, False):
            return
        raw = conn.connection.driver_connection
        if isinstance(raw, sqlite3.Connection) and raw.in_transaction:
            return  # RunStore began it on the driver itself (RunStore._write_inline)
        conn.exec_driver_sql("BEGIN IMMEDIATE")
