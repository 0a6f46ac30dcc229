"""RunStore: the operations the services need, each one transaction.

A state change locks the run row (SELECT ... FOR UPDATE on PostgreSQL; BEGIN IMMEDIATE and a
process-wide writer lock on SQLite), hands the run to a pure domain function, writes what it
returns (the run, its attempts, its events with seqs taken from the run row), commits, and only
then tells the fan-out. The store never decides a transition itself.

Each operation is a plain synchronous function of a Connection, run as one unit: on a SQLite
file straight on the event loop (its statements take microseconds; see engine.py), the writes
grouped into shared transactions (store/group_commit.py); on PostgreSQL in one SQLAlchemy
greenlet per transaction (not one per statement).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import greenlet_spawn

from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import AlreadyExists, InvalidArgument, run_not_found
from gyoza_grpc.domain.model import Attempt, Event, Run, RunState, TopicEvent
from gyoza_grpc.domain.state_machine import Transition
from gyoza_grpc.store import rows
from gyoza_grpc.store.db_errors import database_errors
from gyoza_grpc.store.engine import Engines, is_busy, waiting_for_lock
from gyoza_grpc.store.group_commit import GroupCommit, Queued
from gyoza_grpc.store.run_cache import RunCache
from gyoza_grpc.store.sqlite_direct import execute, execute_many, mappings
from gyoza_grpc.store.sqlite_direct import run as run_sql
from gyoza_grpc.store.tables import attempts, events, runs, topic_events, topics
from gyoza_grpc.store.wakeups import CHANNEL, Wakeups

# Keys per IN (...) list when looking up the positions of many runs or topics.
_POSITIONS_CHUNK = 500

# A group commit's batch goes once no write has joined it for the first figure, or the second
# after its first write (see store/group_commit.py). Measured at concurrency 32
# (docs/benchmarks.md): (0.5 ms, 4 ms) served about twice the writes of per-write commits;
# 8 ms or 16 ms left the server idle while every client waited in the batch. Under steady load
# the writes come closer than 0.5 ms apart, so the cap sets the pace: 2 ms (1.5 to 3 ms alike)
# served 8-18% more CreateRuns and AddEvents than 4 ms at concurrency 32, the same at 128.
GROUP_WINDOW_S = (0.0005, 0.002)

T = TypeVar("T")
# One transaction's work: synchronous code over a Connection (see the module docstring).
Work = Callable[[Connection], T]
RunChange = Callable[[Run, datetime], Transition]
# Called after each commit that appended events: the run, its new events, and the same
# events at their topic cursors (empty when the run has no topic).
EventsCommitted = Callable[[Run, Sequence[Event], Sequence[TopicEvent]], None]

# The current attempt's columns, prefixed so they do not clash with the run's.
_ATTEMPT_COLUMNS = [c.label(f"a_{c.name}") for c in attempts.c]
_RUN_WITH_ATTEMPT = sa.select(runs, *_ATTEMPT_COLUMNS).join(
    attempts,
    sa.and_(attempts.c.run_id == runs.c.id, attempts.c.attempt == runs.c.current_attempt),
)


# Statements built once: a statement made per call (`.where(col == value)`, `.values(dict)`)
# pays for coercing every value and computing its cache key on each call.
_LOAD_RUN = _RUN_WITH_ATTEMPT.where(runs.c.id == sa.bindparam("b_run_id"))
_LOCK_RUN = sa.select(runs.c.id).where(runs.c.id == sa.bindparam("b_run_id")).with_for_update()
_UPDATE_RUN = runs.update().where(runs.c.id == sa.bindparam("b_run_id"))
_UPDATE_ATTEMPT = attempts.update().where(
    attempts.c.run_id == sa.bindparam("b_run_id"), attempts.c.attempt == sa.bindparam("b_attempt")
)
_INSERT_RUN = runs.insert()
_INSERT_ATTEMPT = attempts.insert()
_INSERT_EVENTS = events.insert()
_INSERT_TOPIC_EVENTS = topic_events.insert()
_BUMP_TOPIC = (
    topics.update()
    .where(topics.c.name == sa.bindparam("b_topic"))
    .values(last_cursor=topics.c.last_cursor + sa.bindparam("b_n"))
    .returning(topics.c.last_cursor)
)
_ENSURE_TOPIC_SQLITE = (
    sqlite_insert(topics)
    .values(name=sa.bindparam("b_topic"), last_cursor=0)
    .on_conflict_do_nothing(index_elements=["name"])
)
_ENSURE_TOPIC_PG = (
    pg_insert(topics)
    .values(name=sa.bindparam("b_topic"), last_cursor=0)
    .on_conflict_do_nothing(index_elements=["name"])
)
_RUN_EXISTS = sa.select(runs.c.id).where(runs.c.id == sa.bindparam("b_run_id"))
_ATTEMPT_EVENTS = (
    sa.select(events)
    .where(events.c.run_id == sa.bindparam("b_run_id"), events.c.attempt == sa.bindparam("b_at"))
    .order_by(events.c.seq)
)
_FIND_REQUEST = sa.select(runs.c.id, runs.c.request_hash).where(
    runs.c.request_id == sa.bindparam("b_request_id")
)
_CURSOR_AT = sa.select(runs.c.created_at).where(runs.c.id == sa.bindparam("b_run_id"))
_ATTEMPTS_OF = (
    sa.select(attempts)
    .where(attempts.c.run_id == sa.bindparam("b_run_id"))
    .order_by(attempts.c.attempt)
)


# An attempt row's identity: never rewritten.
_ATTEMPT_KEYS = ("run_id", "attempt", "id")


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The columns whose values differ: an UPDATE that names a column rewrites every index on
    it even when the value is the same (a PROGRESS event would rewrite the state indexes)."""
    return {k: v for k, v in after.items() if before.get(k) != v}


class _PartlyWritten(Exception):
    """A write of a batch without savepoints failed after changing rows."""


def _each_write(
    batch: Sequence[Queued[Any]], savepoints: bool, conn: Connection
) -> list[tuple[Exception | None, Any]]:
    """The writes of `batch` in turn, each write's error kept as its outcome (see
    RunStore._write_batch)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    out: list[tuple[Exception | None, Any]] = []
    for q in batch:
        if savepoints:
            run_sql(raw, "SAVEPOINT w")
        changes = raw.total_changes
        try:
            value = q.work(conn)
        except Exception as err:
            if not raw.in_transaction:
                # SQLite rolled the whole transaction back (a full disk, an I/O error): the
                # writes after this one must not run outside it. The batch fails as one.
                raise
            if savepoints:
                run_sql(raw, "ROLLBACK TO w")
                run_sql(raw, "RELEASE w")
            elif raw.total_changes != changes:
                raise _PartlyWritten from err
            out.append((err, None))
        else:
            if savepoints:
                run_sql(raw, "RELEASE w")
            out.append((None, value))
    return out


class _LockedByOther(Exception):
    """SQLite's write lock is held by another process: wait for it off the loop."""


def _split(m: Mapping[Any, Any]) -> Run:
    attempt_row = {c.name: m[f"a_{c.name}"] for c in attempts.c}
    return rows.run_from_rows(m, attempt_row)


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A ListRuns request, validated; times in microseconds since the epoch."""

    limit: int = 10
    starting_after: str = ""
    ending_before: str = ""
    state: RunState | None = None
    op_definition: str = ""
    image: str = ""
    topic: str = ""
    created_gte: int | None = None
    created_lte: int | None = None
    created_gt: int | None = None
    created_lt: int | None = None
    with_events: bool = False


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[Run]
    has_more: bool
    # run id -> the current attempt's events, when asked for.
    events: dict[str, list[Event]]


class RunStore:
    def __init__(
        self,
        engines: Engines,
        *,
        clock: Clock = utc_now,
        on_events: EventsCommitted | None = None,
        on_created: Callable[[Run], None] | None = None,
        wakeup_origin: str | None = None,
        group_window_s: tuple[float, float] = GROUP_WINDOW_S,
    ) -> None:
        self._engines = engines
        self._clock = clock
        self._on_events = on_events
        self._on_created = on_created
        # SQLite has one writer at a time: queue writers here rather than in busy waits.
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if engines.is_sqlite else contextlib.nullcontext()
        )
        # PostgreSQL with replicas: each write transaction NOTIFYs what it touched, tagged
        # with this origin (see store/wakeups.py). None: no notifications (SQLite).
        self._origin = None if engines.is_sqlite else wakeup_origin
        # Keyed by the transaction's (synchronous) Connection.
        self._wakeups: dict[Connection, Wakeups] = {}
        # SQLite file: the runs GetRun last read (store/run_cache.py), the runs the current write
        # batch touched, and whether a batch runs on a thread (the cache is then bypassed).
        self._cache = RunCache() if engines.inline is not None else None
        self._touched: set[str] = set()
        # The runs as the current batch's writes left them: the cache's, once it commits.
        self._batch_runs: dict[str, Run] = {}
        self._writing_elsewhere = False
        self._group = (
            GroupCommit(
                self._commit_batch,
                self._write_lock,
                quiet_s=group_window_s[0],
                max_wait_s=group_window_s[1],
            )
            if engines.inline_write is not None and isinstance(self._write_lock, asyncio.Lock)
            else None
        )

    @property
    def caches_runs(self) -> bool:
        """Whether get_run returns the very same Run object while a run is unchanged (a
        SQLite file: the run cache); a changed run is always a new object."""
        return self._cache is not None

    # -- running a transaction -------------------------------------------------------------

    async def _run_read(self, work: Work[T]) -> T:
        """`work` in a read: on SQLite without BEGIN (nothing can come between its
        statements: they run one after another without the loop turning)."""
        with database_errors():
            if self._engines.inline is not None:
                return work(self._engines.held(write=False))
            return await greenlet_spawn(self._read_in_greenlet, work)

    def _read_in_greenlet(self, work: Work[T]) -> T:
        with self._engines.read.sync_engine.begin() as conn:
            return work(conn)

    async def _run_write(self, work: Work[T]) -> T:
        """`work` in one write transaction, committed before this returns. On a SQLite file it
        joins a group commit (store/group_commit.py)."""
        with database_errors():
            if self._group is not None:
                return await self._group.submit(work)
            async with self._write_lock:
                return await greenlet_spawn(self._write_in, self._engines.write.sync_engine, work)

    async def _commit_batch(self, batch: Sequence[Queued[Any]]) -> None:
        """One group commit's batch in one transaction; answers each queued future."""
        live = [q for q in batch if not q.future.done()]  # a caller that gave up is not written
        if not live:
            return
        committed = False
        try:
            committed = await self._commit_live(live)
        finally:
            # After the COMMIT (or the rollback), before any caller hears of it.
            written, self._batch_runs = self._batch_runs, {}
            if self._cache is not None:
                self._cache.forget(self._touched)
                if committed:
                    for run in written.values():
                        self._cache.put(run)
            self._touched.clear()

    async def _commit_live(self, live: Sequence[Queued[Any]]) -> bool:
        """Whether the batch committed (each write's own error aside)."""
        try:
            try:
                outcomes = self._write_batch(live, False)
            except _LockedByOther:
                # Only another process holds it (ours queue on _write_lock): wait on a
                # thread with a busy timeout, the loop serving everything else meanwhile.
                self._writing_elsewhere = True
                try:
                    outcomes = await asyncio.to_thread(self._write_batch, live, True)
                finally:
                    self._writing_elsewhere = False
        except Exception as err:  # BEGIN or COMMIT failed: none of the batch was written
            for q in live:
                if not q.future.done():
                    q.future.set_exception(err)
            return False
        for q, (error, value) in zip(live, outcomes, strict=True):
            if q.future.done():
                continue
            if error is not None:
                q.future.set_exception(error)
            else:
                q.future.set_result(value)
        return True

    def _write_batch(
        self, batch: Sequence[Queued[Any]], wait_for_lock: bool
    ) -> list[tuple[Exception | None, Any]]:
        """Each write of `batch` in one transaction: (error, result) for each. One write alone
        needs nothing more: its error rolls the whole back. Several first go without
        savepoints (two statements fewer each): a write that fails before changing a row
        (a domain error, a refused INSERT) leaves nothing to undo. Only when one fails after
        changing rows is the transaction rolled back and the batch run again, each write in
        its own savepoint."""
        if len(batch) == 1:
            return [(None, self._write_inline(batch[0].work, wait_for_lock))]
        try:
            return self._write_inline(partial(_each_write, batch, False), wait_for_lock)
        except _PartlyWritten:
            self._batch_runs.clear()  # what the rolled-back pass made of its runs
            return self._write_inline(partial(_each_write, batch, True), wait_for_lock)

    def _data_version(self) -> int:
        """SQLite's count of commits by other connections, seen from the write connection."""
        raw = self._engines.held(write=True).connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        return int(run_sql(raw, "PRAGMA data_version").fetchone()[0])

    def _check_cache(self, cache: RunCache) -> None:
        """Drop the cache if another connection has committed since it was last checked:
        asked of SQLite only when the WAL-index header has changed (store/wal_header.py)."""
        header = self._engines.wal_header()
        if header is None:
            cache.check(self._data_version())
            return
        now = header.read()
        if now != header.seen:
            cache.check(self._data_version())
            header.seen = now  # read before the pragma: a commit in between changes it

    def _write_inline(self, work: Work[T], wait_for_lock: bool) -> T:
        """`work` in a transaction on the held SQLite write connection, begun and committed on
        the driver itself (SQLAlchemy's begin and commit cost more than the statements)."""
        conn = self._engines.held(write=True)
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        waiting: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if wait_for_lock:
            waiting = waiting_for_lock(raw)
        with waiting:
            try:
                run_sql(raw, "BEGIN IMMEDIATE")
            except OperationalError as err:
                if not wait_for_lock and is_busy(err):
                    raise _LockedByOther from err
                raise
        try:
            if self._cache is not None:  # holding the write lock: no commit can come between
                self._cache.check(self._data_version())
            result = work(conn)
            run_sql(raw, "COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.rollback()
            raise
        finally:
            if conn.in_transaction():  # a statement that went through SQLAlchemy began one
                conn.rollback()
        return result

    def _write_in(self, engine: Engine, work: Work[T]) -> T:
        """`work` in a transaction of SQLAlchemy's (PostgreSQL, or a SQLite database that is
        not a file); a busy SQLite is waited for by the async engine's own connection."""
        with engine.connect() as conn:
            tx = conn.begin()  # BEGIN IMMEDIATE on SQLite
            with tx:
                if self._origin is None:
                    return work(conn)
                touched = self._wakeups[conn] = Wakeups()
                try:
                    result = work(conn)
                    if touched:  # delivered by PostgreSQL only if the COMMIT that follows is
                        payload = touched.encode(self._origin)
                        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))
                    return result
                finally:
                    del self._wakeups[conn]

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        # On a SQLite file, what it changes reaches the run cache through PRAGMA data_version
        # (the async engine's connection is not the held one); one that changes nothing, like
        # most eviction sweeps, leaves the cache be.
        with database_errors():
            async with self._write_lock, self._engines.write.begin() as conn:
                if self._origin is None:
                    yield conn
                    return
                key = conn.sync_connection
                assert key is not None
                touched = self._wakeups[key] = Wakeups()
                try:
                    yield conn
                    if touched:  # delivered by PostgreSQL only if the COMMIT that follows is
                        payload = touched.encode(self._origin)
                        await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))
                finally:
                    del self._wakeups[key]

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        with database_errors():
            async with self._engines.read.begin() as conn:
                yield conn

    def wakeups(self, conn: AsyncConnection | Connection) -> Wakeups:
        """What the write transaction on `conn` touched, for the other replicas (a throwaway
        collector when notifications are off)."""
        key = conn.sync_connection if isinstance(conn, AsyncConnection) else conn
        found = self._wakeups.get(key) if key is not None else None
        return found if found is not None else Wakeups()

    def _notify(
        self, run: Run, new_events: Sequence[Event], published: Sequence[TopicEvent]
    ) -> None:
        if new_events and self._on_events is not None:
            self._on_events(run, new_events, published)

    # -- for sibling stores (workers, definitions) that change runs in their own transactions

    def clock(self) -> datetime:
        return self._clock()

    def write_transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite, behind the writer lock)."""
        return self._write()

    def read_transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._read()

    async def load_run(self, conn: AsyncConnection, run_id: str) -> Run:
        """The run with its current attempt, its row locked until the transaction ends."""
        return await conn.run_sync(self._load_run, run_id, True)

    async def write_transition(
        self, conn: AsyncConnection, before: Run, t: Transition
    ) -> list[TopicEvent]:
        return await conn.run_sync(self._write_transition, before, t)

    def notify(self, t: Transition, published: Sequence[TopicEvent]) -> None:
        """Tell listeners about a committed transition (call after commit only)."""
        self._notify(t.run, t.events, published)

    # -- queries ---------------------------------------------------------------------------

    def _current_run(self, conn: Connection, run_id: str) -> Run:
        """The run as this write transaction sees it, locked: on a SQLite file, from what the
        batch's earlier writes made of it, else from the cache (checked at BEGIN), else read."""
        if self._cache is not None:
            run = self._batch_runs.get(run_id) or self._cache.get(run_id)
            if run is not None:
                return run
        return self._load_run(conn, run_id, True)

    def _load_run(self, conn: Connection, run_id: str, lock: bool) -> Run:
        # On PostgreSQL, lock the run row alone, then read it with its attempt in a new
        # statement (a new READ COMMITTED snapshot). A FOR UPDATE join that waited for a
        # concurrent writer re-checks the run row but keeps the old snapshot's attempt row: the
        # join then drops the run when current_attempt moved on (a false NOT_FOUND), or returns
        # a stale attempt whose write-back loses the other writer's outputs.
        if (
            lock
            and not self._engines.is_sqlite
            and conn.execute(_LOCK_RUN, {"b_run_id": run_id}).first() is None
        ):
            raise run_not_found(run_id)
        found = mappings(conn, _LOAD_RUN, {"b_run_id": run_id})
        if not found:
            raise run_not_found(run_id)
        return _split(found[0])

    @staticmethod
    def _attempt_events(conn: Connection, run: Run) -> list[Event]:
        found = mappings(conn, _ATTEMPT_EVENTS, {"b_run_id": run.id, "b_at": run.current_attempt})
        return [rows.event_from_row(r) for r in found]

    # -- writes ----------------------------------------------------------------------------

    async def create_run(self, run: Run, request_hash: str | None = None) -> tuple[Run, bool]:
        """Insert `run` and its first attempt; with a request_id, a repeat of the same
        request returns the stored run (created=False) and a different one ALREADY_EXISTS."""

        def work(conn: Connection) -> Run | None:
            if run.request_id:
                existing = self._find_request(conn, run, request_hash)
                if existing is not None:
                    return existing
            if run.event_delivery.topic:
                self._ensure_topic(conn, run.event_delivery.topic)
            execute(conn, _INSERT_RUN, rows.run_values(run, request_hash))
            execute(conn, _INSERT_ATTEMPT, rows.attempt_values(run.attempt))
            self._batch_runs[run.id] = run
            self.wakeups(conn).claimable = True
            return None

        for _ in range(3):
            try:
                existing = await self._run_write(work)
            except IntegrityError:
                # A concurrent create with the same request_id won the race: look again.
                if not run.request_id:
                    raise
                continue
            if existing is not None:
                return existing, False
            if self._on_created is not None:
                self._on_created(run)
            return run, True
        raise AlreadyExists(f"request_id '{run.request_id}' is being used concurrently")

    def _find_request(self, conn: Connection, run: Run, request_hash: str | None) -> Run | None:
        found = mappings(conn, _FIND_REQUEST, {"b_request_id": run.request_id})
        if not found:
            return None
        run_id = found[0]["id"]
        if found[0]["request_hash"] != request_hash:
            raise AlreadyExists(
                f"request_id '{run.request_id}' was already used by run '{run_id}' "
                "with a different request body",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": run.request_id, "run_id": run_id},
            )
        return self._load_run(conn, run_id, False)

    async def change_run(self, run_id: str, change: RunChange) -> Transition:
        """Lock the run, apply a domain change to it, write the result: one transaction."""

        def work(conn: Connection) -> tuple[Transition, list[TopicEvent]]:
            self._touched.add(run_id)
            before = self._current_run(conn, run_id)
            transition = change(before, self._clock())
            published = self._write_transition(conn, before, transition)
            self._batch_runs[run_id] = transition.run
            return transition, published

        transition, published = await self._run_write(work)
        self._notify(transition.run, transition.events, published)
        return transition

    def _ensure_topic(self, conn: Connection, topic: str) -> None:
        stmt = _ENSURE_TOPIC_SQLITE if self._engines.is_sqlite else _ENSURE_TOPIC_PG
        execute(conn, stmt, {"b_topic": topic})

    def _publish_to_topic(
        self, conn: Connection, run: Run, new_events: Sequence[Event]
    ) -> list[TopicEvent]:
        """Give the events their topic cursors: an atomic increment of the topic row, which
        holds its lock until commit, so cursors commit in the order they are handed out."""
        topic = run.event_delivery.topic
        n = len(new_events)
        last = mappings(conn, _BUMP_TOPIC, {"b_topic": topic, "b_n": n})[0]["last_cursor"]
        first = last - n + 1
        published = [
            TopicEvent(topic, first + i, e, run.event_delivery.attributes)
            for i, e in enumerate(new_events)
        ]
        execute_many(
            conn,
            _INSERT_TOPIC_EVENTS,
            [
                {"topic": topic, "cursor": p.cursor, "run_id": run.id, "seq": p.event.seq}
                for p in published
            ],
        )
        return published

    def _write_transition(self, conn: Connection, before: Run, t: Transition) -> list[TopicEvent]:
        after = t.run
        if after != before:
            changes = _changed(rows.run_changes(before), rows.run_changes(after))
            if changes:
                execute(conn, _UPDATE_RUN, {"b_run_id": after.id, **changes})
        if t.closed_attempt is not None:
            self._update_attempt(conn, t.closed_attempt, before.attempt)
            execute(conn, _INSERT_ATTEMPT, rows.attempt_values(after.attempt))
        elif after.attempt != before.attempt:
            self._update_attempt(conn, after.attempt, before.attempt)
        if not t.events:
            return []
        execute_many(conn, _INSERT_EVENTS, [rows.event_values(e) for e in t.events])
        self.wakeups(conn).add_events(after, t.events)
        if after.event_delivery.topic:
            return self._publish_to_topic(conn, after, t.events)
        return []

    @staticmethod
    def _update_attempt(conn: Connection, attempt: Attempt, was: Attempt) -> None:
        values = rows.attempt_values(attempt)
        if was.number == attempt.number:
            values = _changed(rows.attempt_values(was), values)
        for key in _ATTEMPT_KEYS:
            values.pop(key, None)
        if values:
            execute(
                conn,
                _UPDATE_ATTEMPT,
                {"b_run_id": attempt.run_id, "b_attempt": attempt.number, **values},
            )

    # -- reads -----------------------------------------------------------------------------

    async def get_run(self, run_id: str, *, with_events: bool = False) -> tuple[Run, list[Event]]:
        cache = self._cache
        if cache is not None and not with_events and not self._writing_elsewhere:
            with database_errors():
                self._check_cache(cache)
                run = cache.get(run_id)
                if run is None:
                    run = self._load_run(self._engines.held(write=False), run_id, False)
                    cache.put(run)
            return run, []

        def work(conn: Connection) -> tuple[Run, list[Event]]:
            run = self._load_run(conn, run_id, False)
            return run, self._attempt_events(conn, run) if with_events else []

        return await self._run_read(work)

    async def list_runs(self, q: RunQuery) -> RunPage:
        """Keyset paging, newest first: (created_at, id) descending, no OFFSET, no COUNT."""
        conditions: list[sa.ColumnElement[bool]] = []
        if q.state is not None:
            conditions.append(runs.c.state == q.state.value)
        if q.op_definition:
            conditions.append(runs.c.op_definition == q.op_definition)
        if q.image:
            conditions.append(runs.c.image == q.image)
        if q.topic:
            conditions.append(runs.c.topic == q.topic)
        if q.created_gte is not None:
            conditions.append(runs.c.created_at >= q.created_gte)
        if q.created_lte is not None:
            conditions.append(runs.c.created_at <= q.created_lte)
        if q.created_gt is not None:
            conditions.append(runs.c.created_at > q.created_gt)
        if q.created_lt is not None:
            conditions.append(runs.c.created_at < q.created_lt)
        backward = bool(q.ending_before)
        order = (
            (runs.c.created_at.asc(), runs.c.id.asc())
            if backward
            else (runs.c.created_at.desc(), runs.c.id.desc())
        )

        def work(conn: Connection) -> RunPage:
            cursor_id = q.ending_before or q.starting_after
            if cursor_id:
                field = "ending_before" if backward else "starting_after"
                found = conn.execute(_CURSOR_AT, {"b_run_id": cursor_id}).first()
                if found is None:
                    raise InvalidArgument.field(field, f"unknown cursor: run '{cursor_id}'")
                at = found.created_at
                # The range seek (created_at <=/>= at) uses the index; the OR only sorts out ties.
                if backward:
                    conditions.append(runs.c.created_at >= at)
                    conditions.append(sa.or_(runs.c.created_at > at, runs.c.id > cursor_id))
                else:
                    conditions.append(runs.c.created_at <= at)
                    conditions.append(sa.or_(runs.c.created_at < at, runs.c.id < cursor_id))
            stmt = _RUN_WITH_ATTEMPT.where(*conditions).order_by(*order).limit(q.limit + 1)
            found_rows = conn.execute(stmt).all()
            has_more = len(found_rows) > q.limit
            page = [_split(r._mapping) for r in found_rows[: q.limit]]
            if backward:
                page.reverse()
            page_events: dict[str, list[Event]] = {}
            if q.with_events and page:
                page_events = self._events_of_current_attempts(conn, page)
            return RunPage(runs=page, has_more=has_more, events=page_events)

        return await self._run_read(work)

    @staticmethod
    def _events_of_current_attempts(conn: Connection, page: list[Run]) -> dict[str, list[Event]]:
        current = {r.id: r.current_attempt for r in page}
        stmt = (
            sa.select(events)
            .where(events.c.run_id.in_(list(current)))
            .order_by(events.c.run_id, events.c.seq)
        )
        out: dict[str, list[Event]] = {r.id: [] for r in page}
        for r in conn.execute(stmt):
            if r.attempt == current[r.run_id]:
                out[r.run_id].append(rows.event_from_row(r._mapping))
        return out

    async def list_events(
        self, run_id: str, *, after: int | None, attempt: int, limit: int
    ) -> tuple[list[Event], bool]:
        """Events in seq order with seq > after (all when None); has_more past `limit`."""
        stmt = sa.select(events).where(events.c.run_id == run_id)
        if after is not None:
            stmt = stmt.where(events.c.seq > after)
        if attempt:
            stmt = stmt.where(events.c.attempt == attempt)
        stmt = stmt.order_by(events.c.seq).limit(limit + 1)

        def work(conn: Connection) -> tuple[list[Event], bool]:
            if conn.execute(_RUN_EXISTS, {"b_run_id": run_id}).first() is None:
                raise run_not_found(run_id)
            found = conn.execute(stmt).all()
            return [rows.event_from_row(r._mapping) for r in found[:limit]], len(found) > limit

        return await self._run_read(work)

    async def list_attempts(self, run_id: str) -> tuple[Run, list[Attempt]]:
        def work(conn: Connection) -> tuple[Run, list[Attempt]]:
            run = self._load_run(conn, run_id, False)
            found = conn.execute(_ATTEMPTS_OF, {"b_run_id": run_id})
            return run, [rows.attempt_from_row(r._mapping) for r in found]

        return await self._run_read(work)

    async def last_positions(
        self, run_ids: Sequence[str], topic_names: Sequence[str]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The last seq of each run and the last cursor of each topic that exists."""

        def work(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
            found_runs: dict[str, int] = {}
            found_topics: dict[str, int] = {}
            for i in range(0, len(run_ids), _POSITIONS_CHUNK):
                chunk = list(run_ids[i : i + _POSITIONS_CHUNK])
                stmt = sa.select(runs.c.id, runs.c.last_seq).where(runs.c.id.in_(chunk))
                found_runs.update((r.id, r.last_seq) for r in conn.execute(stmt))
            for i in range(0, len(topic_names), _POSITIONS_CHUNK):
                chunk = list(topic_names[i : i + _POSITIONS_CHUNK])
                stmt = sa.select(topics.c.name, topics.c.last_cursor).where(
                    topics.c.name.in_(chunk)
                )
                found_topics.update((r.name, r.last_cursor) for r in conn.execute(stmt))
            return found_runs, found_topics

        return await self._run_read(work)

    async def list_topic_events(
        self, topic: str, *, after: int, limit: int
    ) -> tuple[list[TopicEvent], bool]:
        """A topic's events in cursor order with cursor > after; has_more past `limit`."""
        stmt = (
            sa.select(topic_events.c.cursor, events, runs.c.topic_attributes)
            .select_from(topic_events)
            .join(
                events,
                sa.and_(
                    events.c.run_id == topic_events.c.run_id, events.c.seq == topic_events.c.seq
                ),
            )
            .join(runs, runs.c.id == topic_events.c.run_id)
            .where(topic_events.c.topic == topic, topic_events.c.cursor > after)
            .order_by(topic_events.c.cursor)
            .limit(limit + 1)
        )

        def work(conn: Connection) -> tuple[list[TopicEvent], bool]:
            found = conn.execute(stmt).all()
            out = [
                TopicEvent(
                    topic,
                    r.cursor,
                    rows.event_from_row(r._mapping),
                    rows.loads(r.topic_attributes),
                )
                for r in found[:limit]
            ]
            return out, len(found) > limit

        return await self._run_read(work)
