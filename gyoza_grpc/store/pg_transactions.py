"""PostgreSQL's transactions: one pooled asyncpg connection and one greenlet per transaction.

A unit of work is synchronous code over a SQLAlchemy Connection; `AsyncConnection.run_sync`
runs it in one greenlet, each statement awaiting asyncpg underneath, so a transaction costs one
switch into the greenlet, not one per statement.
- A read is one snapshot: REPEATABLE READ, READ ONLY (PostgreSQL takes the snapshot at the first
  statement; a read-only transaction never waits for a lock).
- A write is READ COMMITTED with explicit row locks (`FOR UPDATE`, `SKIP LOCKED` for claims):
  the store locks what it changes. Just before COMMIT it sends one `pg_notify` naming what it
  touched (store/wakeups.py), which PostgreSQL delivers to the other replicas only if the
  transaction commits. The work's after-commit callbacks then run, still in its greenlet.
"""

from __future__ import annotations

from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gyoza_grpc.store.db_errors import database_errors
from gyoza_grpc.store.transactions import Tx, Work
from gyoza_grpc.store.wakeups import CHANNEL

T = TypeVar("T")


class PgTransactions:
    """`Transactions` over PostgreSQL (see the module docstring). `origin` tags this replica's
    notifications (None: send none)."""

    is_sqlite = False
    caches_runs = False

    def __init__(self, engine: AsyncEngine, *, origin: str | None = None) -> None:
        self._engine = engine
        self._reads = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        self._origin = origin

    async def close(self) -> None:
        return None

    async def read(self, work: Work[T]) -> T:
        with database_errors():
            async with self._reads.connect() as conn:
                return await conn.run_sync(self._read, work)

    @staticmethod
    def _read(conn: Connection, work: Work[T]) -> T:
        with conn.begin():
            return work(Tx(conn, is_sqlite=False))

    async def write(self, work: Work[T]) -> T:
        with database_errors():
            async with self._engine.connect() as conn:
                return await conn.run_sync(self._write, work)

    def _write(self, conn: Connection, work: Work[T]) -> T:
        tx = Tx(conn, is_sqlite=False)
        with conn.begin():
            result = work(tx)
            if self._origin is not None and tx.wakeups:
                payload = tx.wakeups.encode(self._origin)
                conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))
        tx.committed()
        return result
