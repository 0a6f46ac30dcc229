"""SQLite's transactions: held connections on the event loop, group commit, the run cache.

This process is the file's one writer in normal operation, and a statement on an indexed
table takes microseconds, so every unit of work runs straight on the event loop:
- two connections are held for the server's life: one for reads, one for writes;
- a read is `BEGIN` ... `COMMIT` on the read connection: one snapshot of the WAL, whatever
  another process commits meanwhile;
- writes queue in a group commit (store/group_commit.py): the writes that arrive close together
  run in one `BEGIN IMMEDIATE` ... `COMMIT`, each with its own outcome. They first run without
  savepoints: a write that fails before changing a row (a domain error, a refused INSERT:
  SQLite undoes a failed statement) leaves nothing to undo, which `total_changes` tells. One
  that fails after changing rows sends the batch again, each write in its own SAVEPOINT. A
  write after which SQLite rolled the whole transaction back itself (a full disk, an I/O error)
  fails the batch as one. Every caller is answered after the COMMIT;
- when another process holds the write lock (a backup, the sqlite3 shell), the batch waits for
  it on a thread with a busy timeout, the loop serving everything else meanwhile.

The run cache (store/run_cache.py) stays exact: a batch forgets every run its writes touched
right after its COMMIT, before any caller or callback runs, then keeps the runs it wrote; a
commit by any other connection (another process) moves `PRAGMA data_version` on the held write
connection, which is checked at each batch's BEGIN and before a read uses the cache. A read
never sees a half-committed batch: reads and batches both run start to finish on the loop,
except a batch waiting on a thread, during which reads bypass the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from gyoza_grpc.domain.model import Run
from gyoza_grpc.server.store.db_errors import database_errors
from gyoza_grpc.server.store.group_commit import GroupCommit, Queued
from gyoza_grpc.server.store.run_cache import RunCache
from gyoza_grpc.server.store.sqlite_direct import run as run_sql
from gyoza_grpc.server.store.transactions import Tx, Work

T = TypeVar("T")

# A group commit's batch goes once no write has joined it for the first figure, or the second
# after its first write (see store/group_commit.py and docs/benchmarks.md).
GROUP_WINDOW_S = (0.0005, 0.002)
# A batch waiting for another process's lock gives up after this long ("database is locked").
BUSY_TIMEOUT_MS = 10_000


# A write's outcome in its batch: (its error, or None and its result and Tx).
_Outcome = tuple[Exception | None, Any, Tx | None]


class _PartlyWritten(Exception):
    """A write of a batch without savepoints failed after changing rows."""


class _LockedByOther(Exception):
    """SQLite's write lock is held by another process: wait for it off the loop."""


def is_busy(err: BaseException) -> bool:
    """SQLite's "database is locked": another connection holds the write lock."""
    text = str(err)
    return "locked" in text or "busy" in text


@contextlib.contextmanager
def _waiting_for_lock(raw: sqlite3.Connection) -> Iterator[None]:
    """Within: SQLite waits up to BUSY_TIMEOUT_MS for another connection's write lock."""
    raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    try:
        yield
    finally:
        raw.execute("PRAGMA busy_timeout=0")


def _driver(conn: Connection) -> sqlite3.Connection:
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def _end(conn: Connection, raw: sqlite3.Connection) -> None:
    """End whatever transaction is open on the connection (SQLAlchemy's view and the driver's)."""
    if conn.in_transaction():  # a statement that went through SQLAlchemy began one
        conn.rollback()
    if raw.in_transaction:
        raw.rollback()


class SQLiteTransactions:
    """`Transactions` over a SQLite file (see the module docstring)."""

    is_sqlite = True
    caches_runs = True

    def __init__(
        self, engine: Engine, *, group_window_s: tuple[float, float] = GROUP_WINDOW_S
    ) -> None:
        self._engine = engine
        self._held: dict[bool, Connection] = {}
        self._cache = RunCache()
        self._writing_elsewhere = False
        # Write transactions begun (a batch sent again with savepoints counts twice).
        self.begun = 0
        # The runs as the current batch's committed-so-far writes left them.
        self._batch_runs: dict[str, Run] = {}
        self._group = GroupCommit(
            self._commit_batch,
            asyncio.Lock(),
            quiet_s=group_window_s[0],
            max_wait_s=group_window_s[1],
        )

    @property
    def waiting_for_lock(self) -> bool:
        """Whether a batch is waiting, on a thread, for another process's write lock."""
        return self._writing_elsewhere

    @property
    def group(self) -> GroupCommit:
        """The write queue (its counters tell how writes were batched)."""
        return self._group

    def _conn(self, *, write: bool) -> Connection:
        """A connection kept checked out until close(): no pool checkout per transaction."""
        conn = self._held.get(write)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._held[write] = self._engine.connect()
        return conn

    async def close(self) -> None:
        for conn in self._held.values():
            conn.close()
        self._held.clear()

    # -- reads -----------------------------------------------------------------------------

    async def read(self, work: Work[T]) -> T:
        with database_errors():
            conn = self._conn(write=False)
            raw = _driver(conn)
            run_sql(raw, "BEGIN")
            try:
                return work(Tx(conn, is_sqlite=True, open_cache=self._usable_cache))
            finally:
                _end(conn, raw)

    def _usable_cache(self) -> RunCache | None:
        """The cache, checked against other connections' commits; None while a batch runs
        on a thread (it may commit in the middle of a read)."""
        if self._writing_elsewhere:
            return None
        self._cache.check(self._data_version())
        return self._cache

    def _data_version(self) -> int:
        """SQLite's count of commits by other connections, seen from the write connection
        (this process's own commits all go through it)."""
        raw = _driver(self._conn(write=True))
        return int(run_sql(raw, "PRAGMA data_version").fetchone()[0])

    # -- writes ----------------------------------------------------------------------------

    async def write(self, work: Work[T], *, key: str = "") -> T:
        # One writer: every write commits in the order it was made, whatever its key.
        with database_errors():
            return await self._group.submit(work)

    async def _commit_batch(self, batch: Sequence[Queued[Any]]) -> None:
        """One batch in one transaction; answers each queued future."""
        live = [q for q in batch if not q.future.done()]  # a caller that gave up is not written
        if not live:
            return
        outcomes: list[tuple[Exception | None, Any, Tx | None]] = []
        try:
            try:
                outcomes = self._write_batch(live, False)
            except _LockedByOther:
                # Only another process holds it (ours queue in the group commit): wait on a
                # thread with a busy timeout, the loop serving everything else meanwhile.
                self._writing_elsewhere = True
                try:
                    outcomes = await asyncio.to_thread(self._write_batch, live, True)
                finally:
                    self._writing_elsewhere = False
        except Exception as err:  # BEGIN or COMMIT failed: none of the batch was written
            self._after(outcomes=[], touched=self._batch_runs.keys())
            for q in live:
                if not q.future.done():
                    q.future.set_exception(err)
            return
        # Committed: the cache first, then what the writes asked for, then their callers.
        touched = [r for _, _, tx in outcomes if tx is not None for r in tx.written]
        self._after(outcomes=outcomes, touched=touched)
        for q, (error, value, _tx) in zip(live, outcomes, strict=True):
            if q.future.done():
                continue
            if error is not None:
                q.future.set_exception(error)
            else:
                q.future.set_result(value)

    def _after(
        self, *, outcomes: Sequence[tuple[Exception | None, Any, Tx | None]], touched: Any
    ) -> None:
        cache = self._cache
        cache.forget(list(touched))
        self._batch_runs = {}
        for _, _, tx in outcomes:
            if tx is not None:
                for run in tx.written.values():
                    cache.put(run)
        for _, _, tx in outcomes:
            if tx is not None:
                tx.committed()

    def _write_batch(self, batch: Sequence[Queued[Any]], wait_for_lock: bool) -> list[_Outcome]:
        """Each write of `batch` in one transaction: (error, result, its Tx when it succeeded).
        One write alone needs nothing more: its error rolls the whole back."""
        if len(batch) == 1:
            return self._in_transaction(partial(self._each_write, batch, False), wait_for_lock)
        try:
            return self._in_transaction(partial(self._each_write, batch, False), wait_for_lock)
        except _PartlyWritten:
            self._batch_runs = {}  # what the rolled-back pass made of its runs
            return self._in_transaction(partial(self._each_write, batch, True), wait_for_lock)

    def _each_write(
        self, batch: Sequence[Queued[Any]], savepoints: bool, conn: Connection
    ) -> list[tuple[Exception | None, Any, Tx | None]]:
        raw = _driver(conn)
        out: list[tuple[Exception | None, Any, Tx | None]] = []
        alone = len(batch) == 1
        for q in batch:
            tx = Tx(conn, is_sqlite=True, cache=self._cache, shared=self._batch_runs)
            if savepoints:
                run_sql(raw, "SAVEPOINT w")
            changes = raw.total_changes
            try:
                value = q.work(tx)
            except Exception as err:
                if alone or not raw.in_transaction:
                    # Alone, its error is the transaction's. Or SQLite rolled the whole
                    # transaction back (a full disk, an I/O error): the writes after this one
                    # must not run outside it. The batch fails as one.
                    raise
                if savepoints:
                    run_sql(raw, "ROLLBACK TO w")
                    run_sql(raw, "RELEASE w")
                elif raw.total_changes != changes:
                    raise _PartlyWritten from err
                out.append((err, None, None))
            else:
                if savepoints:
                    run_sql(raw, "RELEASE w")
                self._batch_runs.update(tx.written)
                out.append((None, value, tx))
        return out

    def _in_transaction(
        self, fn: Callable[[Connection], list[_Outcome]], wait_for_lock: bool
    ) -> list[_Outcome]:
        """`fn(conn)` between BEGIN IMMEDIATE and COMMIT on the held write connection, begun and
        committed on the driver itself (SQLAlchemy's begin and commit cost more than the
        statements)."""
        conn = self._conn(write=True)
        raw = _driver(conn)
        waiting: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if wait_for_lock:
            waiting = _waiting_for_lock(raw)
        self.begun += 1
        with waiting:
            try:
                run_sql(raw, "BEGIN IMMEDIATE")
            except OperationalError as err:
                if not wait_for_lock and is_busy(err):
                    raise _LockedByOther from err
                raise
        try:
            # Holding the write lock: no commit can come between this check and the COMMIT.
            self._cache.check(self._data_version())
            result = fn(conn)
            run_sql(raw, "COMMIT")
        except BaseException:
            _end(conn, raw)
            raise
        if conn.in_transaction():
            conn.rollback()  # SQLAlchemy's view only: the driver has committed
        return result
