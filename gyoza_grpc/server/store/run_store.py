"""RunStore: the operations the services need on runs, each one unit of work.

A state change loads the run as its transaction sees it (locked: SELECT ... FOR UPDATE on
PostgreSQL; SQLite's write transactions hold the file's lock), hands it to a pure domain
function, writes what comes back (the run, its attempts, its events with seqs taken from the
run row), and the fan-out hears of it once the transaction has committed. The store never
decides a transition itself.

Each operation is a synchronous function of a `Tx`, run by the transaction layer
(store/transactions.py): the same code on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import AlreadyExists, InvalidArgument, run_not_found
from gyoza_grpc.domain.model import Attempt, Event, Run, RunState, TopicEvent
from gyoza_grpc.domain.state_machine import Transition
from gyoza_grpc.server.store import pg_writes, rows
from gyoza_grpc.server.store.sqlite_direct import execute, execute_many, mappings
from gyoza_grpc.server.store.tables import attempts, events, runs, topic_events, topics
from gyoza_grpc.server.store.transactions import Transactions, Tx

# Keys per IN (...) list when looking up the positions of many runs or topics.
_POSITIONS_CHUNK = 500

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
_LOCK_AND_LOAD_RUN = _LOAD_RUN.with_for_update()
# PostgreSQL: several runs by id, one constant statement (`= ANY($1)`).
_LOAD_RUNS_PG = _RUN_WITH_ATTEMPT.where(
    runs.c.id == sa.any_(sa.bindparam("b_run_ids", type_=postgresql.ARRAY(sa.String)))
)
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


def _split(m: Mapping[Any, Any]) -> Run:
    attempt_row = {c.name: m[f"a_{c.name}"] for c in attempts.c}
    return rows.run_from_rows(m, attempt_row)


@dataclass(frozen=True, slots=True)
class RunFilters:
    """The filters ListRuns and CountRuns share, validated; times in microseconds since the
    epoch. Each filter has an index that starts with its column (tables.py)."""

    state: RunState | None = None
    op_definition: str = ""
    image: str = ""
    topic: str = ""
    created_gte: int | None = None
    created_lte: int | None = None
    created_gt: int | None = None
    created_lt: int | None = None

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses of the filters that are set."""
        out: list[sa.ColumnElement[bool]] = []
        if self.state is not None:
            out.append(runs.c.state == self.state.value)
        for name in ("op_definition", "image", "topic"):
            if value := getattr(self, name):
                out.append(runs.c[name] == value)
        if self.created_gte is not None:
            out.append(runs.c.created_at >= self.created_gte)
        if self.created_lte is not None:
            out.append(runs.c.created_at <= self.created_lte)
        if self.created_gt is not None:
            out.append(runs.c.created_at > self.created_gt)
        if self.created_lt is not None:
            out.append(runs.c.created_at < self.created_lt)
        return out


@dataclass(frozen=True, slots=True)
class RunQuery(RunFilters):
    """A ListRuns request, validated: the filters and a page."""

    limit: int = 10
    starting_after: str = ""
    ending_before: str = ""
    with_events: bool = False


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[Run]
    has_more: bool
    # run id -> the current attempt's events, when asked for.
    events: dict[str, list[Event]]


class RunStore:
    """The run operations the services need, each one unit of work (see the module docstring).

    `on_events(run, events, published)` is called once a transaction that appended events has
    committed; `on_created(run)` once a new run has.
    """

    def __init__(
        self,
        transactions: Transactions,
        *,
        clock: Clock = utc_now,
        on_events: EventsCommitted | None = None,
        on_created: Callable[[Run], None] | None = None,
    ) -> None:
        self._tx = transactions
        self._clock = clock
        self._on_events = on_events
        self._on_created = on_created

    @property
    def transactions(self) -> Transactions:
        return self._tx

    @property
    def caches_runs(self) -> bool:
        """Whether get_run returns the very same Run object while a run is unchanged (a
        SQLite file: the run cache); a changed run is always a new object."""
        return self._tx.caches_runs

    def clock(self) -> datetime:
        return self._clock()

    # -- for sibling stores (workers, claims) that change runs inside their own work -------

    def load_run(self, tx: Tx, run_id: str, *, locked: bool = False) -> Run:
        """The run with its current attempt, as `tx` sees it; its row locked on PostgreSQL
        until the transaction ends (SQLite's write transactions hold the file's lock).
        `locked`: this transaction holds the run row's lock already (a claim's candidate)."""
        run = tx.known_run(run_id)
        if run is not None:
            return run
        return _load_run(tx, run_id, lock=not locked)

    def load_locked_runs(self, tx: Tx, run_ids: Sequence[str]) -> dict[str, Run]:
        """PostgreSQL: runs whose rows this transaction has locked already (a claim's
        candidates), with their current attempts, in one statement (its new READ COMMITTED
        snapshot sees what their last writers committed). SQLite's claims load each run as
        they reach it (`load_run`)."""
        assert not tx.is_sqlite, "SQLite loads a claim's candidates one by one"
        out: dict[str, Run] = {}
        missing = []
        for run_id in run_ids:
            run = tx.known_run(run_id)
            if run is not None:
                out[run_id] = run
            else:
                missing.append(run_id)
        if not missing:
            return out
        for m in mappings(tx.conn, _LOAD_RUNS_PG, {"b_run_ids": missing}):
            run = _split(m)
            out[run.id] = run
        return out

    def write_transition(self, tx: Tx, before: Run, t: Transition) -> None:
        """Write what a domain transition made of `before`: the run, the attempt it closed or
        opened, its events (with their topic cursors); the fan-out hears of it once the
        transaction has committed."""
        conn = tx.conn
        after = t.run
        if not tx.is_sqlite and t.events:
            _write_transition_pg(conn, before, t)
        else:
            _write_transition(conn, before, t)
        tx.wrote(after)
        if not t.events:
            return
        tx.wakeups.add_events(after, t.events)
        published = _publish_to_topic(conn, after, t.events) if after.event_delivery.topic else []
        on_events = self._on_events
        if on_events is not None:
            tx.after_commit(partial(on_events, after, t.events, published))

    # -- writes ----------------------------------------------------------------------------

    async def create_run(self, run: Run, request_hash: str | None = None) -> tuple[Run, bool]:
        """Insert `run` and its first attempt; with a request_id, a repeat of the same
        request returns the stored run (created=False) and a different one ALREADY_EXISTS."""

        def work(tx: Tx) -> Run | None:
            conn = tx.conn
            if run.request_id:
                existing = _find_request(tx, run, request_hash)
                if existing is not None:
                    return existing
            if run.event_delivery.topic:
                stmt = _ENSURE_TOPIC_SQLITE if tx.is_sqlite else _ENSURE_TOPIC_PG
                execute(conn, stmt, {"b_topic": run.event_delivery.topic})
            if tx.is_sqlite:
                execute(conn, _INSERT_RUN, rows.run_values(run, request_hash))
                execute(conn, _INSERT_ATTEMPT, rows.attempt_values(run.attempt))
            else:
                pg_writes.insert_run(
                    conn, rows.run_values(run, request_hash), rows.attempt_values(run.attempt)
                )
            tx.wrote(run)
            tx.wakeups.claimable = True
            if self._on_created is not None:
                tx.after_commit(partial(self._on_created, run))
            return None

        for _ in range(3):
            try:
                existing = await self._tx.write(work, key=run.id)
            except IntegrityError:
                # A concurrent create with the same request_id won the race: look again.
                if not run.request_id:
                    raise
                continue
            if existing is not None:
                return existing, False
            return run, True
        raise AlreadyExists(f"request_id '{run.request_id}' is being used concurrently")

    async def change_run(self, run_id: str, change: RunChange) -> Transition:
        """Lock the run, apply a domain change to it, write the result: one transaction."""

        def work(tx: Tx) -> Transition:
            before = self.load_run(tx, run_id)
            transition = change(before, self._clock())
            self.write_transition(tx, before, transition)
            return transition

        return await self._tx.write(work, key=run_id)

    # -- reads -----------------------------------------------------------------------------

    async def get_run(self, run_id: str, *, with_events: bool = False) -> tuple[Run, list[Event]]:
        def work(tx: Tx) -> tuple[Run, list[Event]]:
            if with_events:
                run = _load_run(tx, run_id, lock=False)
                return run, _attempt_events(tx.conn, run)
            known = tx.known_run(run_id)
            if known is not None:
                return known, []
            run = _load_run(tx, run_id, lock=False)
            tx.keep(run)
            return run, []

        return await self._tx.read(work)

    async def list_runs(self, q: RunQuery) -> RunPage:
        """Keyset paging, newest first: (created_at, id) descending, no OFFSET, no COUNT."""
        return await self._tx.read(partial(_list_runs, q))

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

        def work(tx: Tx) -> tuple[list[Event], bool]:
            if tx.conn.execute(_RUN_EXISTS, {"b_run_id": run_id}).first() is None:
                raise run_not_found(run_id)
            found = tx.conn.execute(stmt).all()
            return [rows.event_from_row(r._mapping) for r in found[:limit]], len(found) > limit

        return await self._tx.read(work)

    async def list_attempts(self, run_id: str) -> tuple[Run, list[Attempt]]:
        def work(tx: Tx) -> tuple[Run, list[Attempt]]:
            run = _load_run(tx, run_id, lock=False)
            found = tx.conn.execute(_ATTEMPTS_OF, {"b_run_id": run_id})
            return run, [rows.attempt_from_row(r._mapping) for r in found]

        return await self._tx.read(work)

    async def last_positions(
        self, run_ids: Sequence[str], topic_names: Sequence[str]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The last seq of each run and the last cursor of each topic that exists."""

        def work(tx: Tx) -> tuple[dict[str, int], dict[str, int]]:
            found_runs: dict[str, int] = {}
            found_topics: dict[str, int] = {}
            for i in range(0, len(run_ids), _POSITIONS_CHUNK):
                chunk = list(run_ids[i : i + _POSITIONS_CHUNK])
                stmt = sa.select(runs.c.id, runs.c.last_seq).where(runs.c.id.in_(chunk))
                found_runs.update((r.id, r.last_seq) for r in tx.conn.execute(stmt))
            for i in range(0, len(topic_names), _POSITIONS_CHUNK):
                chunk = list(topic_names[i : i + _POSITIONS_CHUNK])
                stmt = sa.select(topics.c.name, topics.c.last_cursor).where(
                    topics.c.name.in_(chunk)
                )
                found_topics.update((r.name, r.last_cursor) for r in tx.conn.execute(stmt))
            return found_runs, found_topics

        return await self._tx.read(work)

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

        def work(tx: Tx) -> tuple[list[TopicEvent], bool]:
            found = tx.conn.execute(stmt).all()
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

        return await self._tx.read(work)


# -- queries ---------------------------------------------------------------------------------


def _load_run(tx: Tx, run_id: str, *, lock: bool) -> Run:
    # On PostgreSQL, one statement locks the run row and its current attempt's and reads both:
    # a lock that waited for a concurrent writer re-reads both rows as that writer left them
    # (locking the run alone would keep the statement's older attempt row: a stale attempt
    # whose write-back loses the other writer's outputs). The run is locked first (the tables'
    # order), as every writer of an attempt holds its run's lock first. When the writer moved
    # current_attempt on, the re-read rows no longer join and the statement returns nothing:
    # then the run row alone is locked, and read with its attempt in a new statement (a new
    # READ COMMITTED snapshot), which also tells a run that does not exist.
    conn = tx.conn
    if lock and not tx.is_sqlite:
        found = mappings(conn, _LOCK_AND_LOAD_RUN, {"b_run_id": run_id})
        if found:
            return _split(found[0])
        if conn.execute(_LOCK_RUN, {"b_run_id": run_id}).first() is None:
            raise run_not_found(run_id)
    found = mappings(conn, _LOAD_RUN, {"b_run_id": run_id})
    if not found:
        raise run_not_found(run_id)
    return _split(found[0])


def _attempt_events(conn: Connection, run: Run) -> list[Event]:
    found = mappings(conn, _ATTEMPT_EVENTS, {"b_run_id": run.id, "b_at": run.current_attempt})
    return [rows.event_from_row(r) for r in found]


def _find_request(tx: Tx, run: Run, request_hash: str | None) -> Run | None:
    found = mappings(tx.conn, _FIND_REQUEST, {"b_request_id": run.request_id})
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
    return _load_run(tx, run_id, lock=False)


def _publish_to_topic(conn: Connection, run: Run, new_events: Sequence[Event]) -> list[TopicEvent]:
    """Give the events their topic cursors: an atomic increment of the topic row, which holds
    its lock until commit, so cursors commit in the order they are handed out."""
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


def _write_transition(conn: Connection, before: Run, t: Transition) -> None:
    """A transition's rows, one statement each (SQLite, where a statement is a call into the
    library, or a transition without events)."""
    after = t.run
    if after != before:
        changes = _changed(rows.run_changes(before), rows.run_changes(after))
        if changes:
            execute(conn, _UPDATE_RUN, {"b_run_id": after.id, **changes})
    if t.closed_attempt is not None:
        _update_attempt(conn, t.closed_attempt, before.attempt)
        execute(conn, _INSERT_ATTEMPT, rows.attempt_values(after.attempt))
    elif after.attempt != before.attempt:
        _update_attempt(conn, after.attempt, before.attempt)
    if t.events:
        execute_many(conn, _INSERT_EVENTS, [rows.event_values(e) for e in t.events])


def _write_transition_pg(conn: Connection, before: Run, t: Transition) -> None:
    """A transition's rows in one statement (store/pg_writes.py)."""
    after = t.run
    run_changes: dict[str, Any] = {}
    if after != before:
        run_changes = _changed(rows.run_changes(before), rows.run_changes(after))
    changed = t.closed_attempt if t.closed_attempt is not None else after.attempt
    attempt = None
    if t.closed_attempt is not None or after.attempt != before.attempt:
        values = _attempt_changes(changed, before.attempt)
        if values:
            attempt = (changed.number, values)
    new_attempt = rows.attempt_values(after.attempt) if t.closed_attempt is not None else None
    pg_writes.write_transition(
        conn,
        after.id,
        run_changes,
        attempt,
        new_attempt,
        [rows.event_values(e) for e in t.events],
    )


def _attempt_changes(attempt: Attempt, was: Attempt) -> dict[str, Any]:
    """The columns of `attempt`'s row to write (all but its identity for another number)."""
    values = rows.attempt_values(attempt)
    if was.number == attempt.number:
        values = _changed(rows.attempt_values(was), values)
    for key in _ATTEMPT_KEYS:
        values.pop(key, None)
    return values


def _update_attempt(conn: Connection, attempt: Attempt, was: Attempt) -> None:
    values = _attempt_changes(attempt, was)
    if values:
        execute(
            conn,
            _UPDATE_ATTEMPT,
            {"b_run_id": attempt.run_id, "b_attempt": attempt.number, **values},
        )


def _list_runs(q: RunQuery, tx: Tx) -> RunPage:
    conditions = q.conditions()
    backward = bool(q.ending_before)
    order = (
        (runs.c.created_at.asc(), runs.c.id.asc())
        if backward
        else (runs.c.created_at.desc(), runs.c.id.desc())
    )
    conn = tx.conn
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
        page_events = _events_of_current_attempts(conn, page)
    return RunPage(runs=page, has_more=has_more, events=page_events)


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
