"""PostgreSQL's transactions: asyncpg connections, one greenlet per transaction, group commit.

A unit of work is synchronous code over a SQLAlchemy Connection; `AsyncConnection.run_sync`
runs it in one greenlet, each statement awaiting asyncpg underneath, so a transaction costs one
switch into the greenlet, not one per statement.
- A read is one snapshot: REPEATABLE READ, READ ONLY (PostgreSQL takes the snapshot at the first
  statement; a read-only transaction never waits for a lock).
- Writes are READ COMMITTED with explicit row locks (`FOR UPDATE`, `SKIP LOCKED` for claims):
  the store locks what it changes. They go through a group commit in `lanes`: the writes that
  arrive close together in one lane share one transaction (one BEGIN, one NOTIFY, one COMMIT and
  its WAL flush, one pooled connection), and the lanes run side by side. Writes with the same
  key (a run id) always take the same lane, so they commit in the order they were made.
- Just before COMMIT a batch sends one `pg_notify` naming what its writes touched
  (store/wakeups.py), which PostgreSQL delivers to the other replicas only if it commits. The
  writes' after-commit callbacks then run, in order.

A write that raises inside a batch (a domain error, a refused statement, a deadlock with another
lane or replica) rolls the batch back before its COMMIT; the batch's writes then run again, each
in a transaction of its own, so each gets its own outcome. A failed COMMIT fails every write of
the batch: whether it committed is unknown, as for a single write.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gyoza_grpc.server.store import pg_direct
from gyoza_grpc.server.store.db_errors import database_errors
from gyoza_grpc.server.store.group_commit import GroupCommit, Queued
from gyoza_grpc.server.store.transactions import Tx, Work
from gyoza_grpc.server.store.wakeups import CHANNEL, Wakeups

T = TypeVar("T")

# A batch goes once no write has joined it for the first figure, or the second after its first
# write (store/group_commit.py); lanes of batches run side by side (docs/benchmarks.md).
GROUP_WINDOW_S = (0.0005, 0.002)
DEFAULT_LANES = 4
_NOTIFY = sa.select(
    sa.func.pg_notify(
        sa.bindparam("b_channel", type_=sa.String), sa.bindparam("b_payload", type_=sa.String)
    )
)

# A write's outcome in its batch: (its error, or None and its result and Tx).
_Outcome = tuple[Exception | None, Any, Tx | None]


class _CommitFailed(Exception):
    """The batch's COMMIT (or its NOTIFY) failed: no write of it is known to have committed."""


class PgTransactions:
    """`Transactions` over PostgreSQL (see the module docstring). `origin` tags this replica's
    notifications (None: send none)."""

    is_sqlite = False
    caches_runs = False

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        origin: str | None = None,
        lanes: int = DEFAULT_LANES,
        group_window_s: tuple[float, float] = GROUP_WINDOW_S,
    ) -> None:
        self._engine = engine
        self._reads = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        self._origin = origin
        self._lanes = [
            GroupCommit(
                self._commit_batch,
                asyncio.Lock(),
                quiet_s=group_window_s[0],
                max_wait_s=group_window_s[1],
            )
            for _ in range(max(1, lanes))
        ]
        self._round_robin = itertools.cycle(self._lanes)

    @property
    def lanes(self) -> Sequence[GroupCommit]:
        """The write queues (their counters tell how writes were batched)."""
        return self._lanes

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

    async def write(self, work: Work[T], *, key: str = "") -> T:
        lane = self._lanes[hash(key) % len(self._lanes)] if key else next(self._round_robin)
        with database_errors():
            return await lane.submit(work)

    async def _commit_batch(self, batch: Sequence[Queued[Any]]) -> None:
        live = [q for q in batch if not q.future.done()]  # a caller that gave up is not written
        if not live:
            return
        try:
            async with self._engine.connect() as conn:
                outcomes: list[_Outcome] = await conn.run_sync(self._write_batch, live)
        except Exception as err:  # no connection, or the COMMIT failed: none is known written
            cause = err.__cause__ if isinstance(err, _CommitFailed) else err
            for q in live:
                if not q.future.done():
                    q.future.set_exception(cause if isinstance(cause, Exception) else err)
            return
        for q, (error, value, _tx) in zip(live, outcomes, strict=True):
            if q.future.done():
                continue
            if error is not None:
                q.future.set_exception(error)
            else:
                q.future.set_result(value)

    def _write_batch(self, conn: Connection, batch: Sequence[Queued[Any]]) -> list[_Outcome]:
        """The batch in one transaction; after a write raised, each in one of its own."""
        if len(batch) > 1:
            try:
                return self._in_transaction(conn, batch)
            except _CommitFailed:
                raise
            except Exception:
                pass  # rolled back: each write again, alone
        out: list[_Outcome] = []
        for q in batch:
            try:
                out.extend(self._in_transaction(conn, [q]))
            except _CommitFailed as failed:
                cause = failed.__cause__
                out.append((cause if isinstance(cause, Exception) else failed, None, None))
            except Exception as err:
                out.append((err, None, None))
        return out

    def _in_transaction(self, conn: Connection, batch: Sequence[Queued[Any]]) -> list[_Outcome]:
        done: list[tuple[Tx, Any]] = []
        tx_scope = conn.begin()
        try:
            for q in batch:
                tx = Tx(conn, is_sqlite=False)
                done.append((tx, q.work(tx)))
        except BaseException:
            tx_scope.rollback()
            raise
        try:
            touched = Wakeups()
            for tx, _ in done:
                touched.merge(tx.wakeups)
            if self._origin is not None and touched:
                payload = touched.encode(self._origin)
                pg_direct.mappings(conn, _NOTIFY, {"b_channel": CHANNEL, "b_payload": payload})
            tx_scope.commit()
        except Exception as err:
            if tx_scope.is_active:
                tx_scope.rollback()
            raise _CommitFailed from err
        for tx, _ in done:
            tx.committed()
        return [(None, value, tx) for tx, value in done]
