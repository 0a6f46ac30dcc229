"""WorkerStore: heartbeats, claims and evictions, each one unit of work.

Claims lock the worker row (so one worker's claims serialise and see its own holdings), then
take PENDING candidates with `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite has one writer), and
hand each that fits to the state machine as an ASSIGNED event: never one run to two workers.
Evictions lock the expired worker rows with SKIP LOCKED and re-check them, so sweeps on every
replica at once never retry a run twice. Each sweep ticks the lease clock first, crediting the
leases with time the database could record no heartbeat (`evict_expired`). A heartbeat hands
back the ASSIGNED attempts its worker no longer reports (`_unreported`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from gyoza_grpc.domain import state_machine
from gyoza_grpc.domain.clock import from_us, to_us
from gyoza_grpc.domain.errors import FailedPrecondition, NotFound
from gyoza_grpc.domain.model import Constraints, EventType, Run, RunState
from gyoza_grpc.domain.placement import Capacity, Gpu, Held, free_capacity, place, take
from gyoza_grpc.domain.state_machine import Transition
from gyoza_grpc.domain.workers import (
    HeldAttempt,
    RunView,
    StopOrder,
    Worker,
    WorkerState,
    outage_credit,
    stop_orders,
)
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.store.sqlite_direct import mappings
from gyoza_grpc.server.store.tables import attempts, lease_clock, runs, workers
from gyoza_grpc.server.store.transactions import Tx

_HOLDING = (RunState.ASSIGNED.value, RunState.RUNNING.value)
# Candidates read per round while looking for runs that fit.
_CANDIDATE_WINDOW = 64
_MAX_CANDIDATES = 1024


# Whether a claim's answer has room for one more run (as assigned, with its GPU).
Admit = Callable[[Run, int | None], bool]


def _admit_all(run: Run, gpu_id: int | None) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    run: Run
    gpu_id: int | None


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one eviction sweep did: the workers it evicted, each with the transitions of the
    runs it handed back, and the outage it credited to the leases (0: none)."""

    evicted: list[tuple[str, list[Transition]]]
    credited: timedelta


@dataclass(frozen=True, slots=True)
class WorkerDetail:
    worker: Worker
    free: Capacity
    held: list[HeldAttempt]


def _worker_from_row(row: Mapping[str, Any]) -> Worker:
    return Worker(
        worker_id=row["worker_id"],
        state=WorkerState(row["state"]),
        resources=Capacity(
            cpu=row["cpu"],
            ram_mb=row["ram_mb"],
            gpus=tuple(Gpu(g["gpu_id"], g["vram_mb"]) for g in json.loads(row["gpus"])),
        ),
        tags=tuple(json.loads(row["tags"])),
        registered_at=from_us(row["registered_at"]),
        last_heartbeat=from_us(row["last_heartbeat"]),
        lease_expires_at=from_us(row["lease_expires_at"]),
        not_ready_reason=row["not_ready_reason"],
    )


def _not_registered(worker_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"worker '{worker_id}' is not registered: send a Heartbeat first",
        reason="WORKER_NOT_REGISTERED",
        metadata={"worker_id": worker_id},
    )


def _evicted(worker_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"worker '{worker_id}' was evicted (its lease ran out): send a Heartbeat to "
        "re-register; its earlier attempts are fenced off",
        reason="WORKER_EVICTED",
        metadata={"worker_id": worker_id},
    )


class WorkerStore:
    def __init__(self, run_store: RunStore) -> None:
        self._runs = run_store
        self._tx = run_store.transactions

    @property
    def now(self) -> datetime:
        return self._runs.clock()

    # -- heartbeats ------------------------------------------------------------------------

    async def heartbeat(
        self,
        worker_id: str,
        resources: Capacity,
        tags: Sequence[str],
        running: Sequence[HeldAttempt],
        lease: timedelta,
        not_ready_reason: str = "",
    ) -> list[StopOrder]:
        """Register or renew a worker; an evicted one comes back as a new registration.
        An ASSIGNED attempt the worker does not report, and was handed before its previous
        heartbeat, goes back to PENDING (`_unreported`)."""

        def work(tx: Tx) -> dict[str, RunView]:
            conn = tx.conn
            found = conn.execute(_WORKER_STATE, {"b_worker_id": worker_id}).first()
            now = self.now  # under the row lock, like a claim's (see `_unreported`)
            values = {
                "state": WorkerState.ALIVE.value,
                "cpu": resources.cpu,
                "ram_mb": resources.ram_mb,
                "gpus": json.dumps(
                    [{"gpu_id": g.gpu_id, "vram_mb": g.vram_mb} for g in resources.gpus]
                ),
                "tags": json.dumps(list(tags)),
                "last_heartbeat": to_us(now),
                "lease_expires_at": to_us(now + lease),
                "not_ready_reason": not_ready_reason,
            }
            if found is None:
                conn.execute(
                    workers.insert().values(worker_id=worker_id, registered_at=to_us(now), **values)
                )
            else:
                if found.state == WorkerState.EVICTED.value:
                    values["registered_at"] = to_us(now)
                conn.execute(_UPDATE_WORKER, {"b_worker_id": worker_id, **values})
                if found.state == WorkerState.ALIVE.value:
                    reported = {(h.run_id, h.attempt) for h in running}
                    for held in _unreported(conn, worker_id, found.last_heartbeat):
                        if (held.run_id, held.attempt) in reported:
                            continue
                        run = self._runs.load_run(tx, held.run_id)
                        t = state_machine.forget_unreported(run, worker_id, now)
                        if t.events:
                            self._runs.write_transition(tx, run, t)
            # Its long-poll may wait on another replica: new capacity may fit a waiting run.
            tx.wakeups.workers.add(worker_id)
            return _run_views(conn, [h.run_id for h in running])

        views = await self._tx.write(work, key=worker_id)
        return stop_orders(worker_id, running, views)

    async def stop_orders(self, worker_id: str, running: Sequence[HeldAttempt]) -> list[StopOrder]:
        """The attempts in `running` that `worker_id` must abandon now (a read: WaitForStopOrders
        neither registers the worker nor renews its lease)."""
        if not running:
            return []
        views = await self.run_views([h.run_id for h in running])
        return stop_orders(worker_id, running, views)

    async def run_views(self, run_ids: Sequence[str]) -> dict[str, RunView]:
        """What decides, for each of these runs, whether its holder may keep executing it."""
        if not run_ids:
            return {}
        return await self._tx.read(lambda tx: _run_views(tx.conn, list(run_ids)))

    # -- claims ----------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, max_runs: int, admit: Admit = _admit_all
    ) -> tuple[list[ClaimedRun], datetime | None]:
        """Assign up to `max_runs` claimable runs that fit the worker. Each is first offered
        to `admit` (the run as assigned, its GPU): once it says no, the answer has no room for
        more, and the claim ends there without assigning that run. Also returns, when nothing
        was claimed, the earliest time a backed-off PENDING run becomes claimable."""
        claim = partial(self._claim, worker_id, max_runs, admit)
        if not self._tx.is_sqlite:
            # No read first: the write looks for candidates before it locks anything (see
            # `_claim`), so a claim with nothing to take costs one transaction either way.
            return await self._tx.write(claim, key=worker_id)

        # SQLite: a read first: with nothing claimable, no turn in the writer queue is spent
        # on this worker.
        def check(tx: Tx) -> datetime | None:
            now_us = to_us(self.now)
            _check_lease(_lock_worker(tx.conn, worker_id, lock=False), from_us(now_us))
            if mappings(tx.conn, _ANY_CLAIMABLE, {"b_now": now_us}):
                return None
            return _next_due(tx.conn, now_us)

        due = await self._tx.read(check)
        if due is not None:
            return [], due
        return await self._tx.write(claim, key=worker_id)

    def _claim(
        self, worker_id: str, max_runs: int, admit: Admit, tx: Tx
    ) -> tuple[list[ClaimedRun], datetime | None]:
        conn = tx.conn
        window = min(_CANDIDATE_WINDOW, max(8, 2 * max_runs))
        first: list[tuple[str, tuple[int, int, str], Constraints]] | None = None
        if not tx.is_sqlite:
            # The first candidates before the worker's row: a claim that finds none locks
            # nothing, so its transaction writes nothing (no WAL flush at its COMMIT).
            first = _candidates(conn, to_us(self.now), None, window)
            if not first:
                now = self.now
                _check_lease(_lock_worker(conn, worker_id, lock=False), now)
                return [], _next_due(conn, to_us(now))
        worker = _lock_worker(conn, worker_id, lock=True)
        # Read under the worker's row lock, as heartbeats do: a claim and a heartbeat of one
        # worker are stamped in the order they commit (see `_unreported`).
        now = self.now
        now_us = to_us(now)
        _check_lease(worker, now)
        free = free_capacity(worker.resources, (h for h, _ in _held(conn, worker_id)))
        claimed: list[ClaimedRun] = []
        seen = 0
        after: tuple[int, int, str] | None = None
        full = False
        while len(claimed) < max_runs and seen < _MAX_CANDIDATES and not full:
            found = first if first is not None else _candidates(conn, now_us, after, window)
            first = None
            if not found:
                break
            seen += len(found)
            after = found[-1][1]
            # On PostgreSQL those that fit what is free now (decided from the candidate rows)
            # are loaded in one statement; on SQLite one by one as they are reached (a SELECT
            # there is a call into the library, and the claim may stop before the last).
            loaded: dict[str, Run] = {}
            if not tx.is_sqlite:
                fitting = [r for r, _key, need in found if place(need, free) is not None]
                loaded = self._runs.load_locked_runs(tx, fitting) if fitting else {}
            for run_id, _key, need in found:
                if place(need, free) is None:
                    continue  # decided from the candidate row, without loading the run
                # Locked by _candidates (FOR UPDATE SKIP LOCKED) in this transaction.
                run = loaded.get(run_id) or self._runs.load_run(tx, run_id, locked=True)
                if run.state is not RunState.PENDING:
                    continue
                placement = place(run.constraints, free)
                if placement is None:
                    continue
                payload: dict[str, Any] = {"worker_id": worker_id}
                if placement.gpu_id is not None:
                    payload["gpu_id"] = placement.gpu_id
                t = state_machine.append_event(
                    run, state_machine.EventInput(EventType.ASSIGNED, payload=payload), now
                )
                if not admit(t.run, placement.gpu_id):
                    full = True  # never assigned: a run the answer could not carry
                    break
                self._runs.write_transition(tx, run, t)
                claimed.append(ClaimedRun(t.run, placement.gpu_id))
                free = take(free, run.constraints, placement.gpu_id)
                if len(claimed) >= max_runs:
                    break
        return claimed, (None if claimed else _next_due(conn, now_us))

    async def any_claimable(self) -> bool:
        """Whether some PENDING run is claimable now (whoever it fits)."""

        def work(tx: Tx) -> bool:
            now_us = to_us(self.now)
            return tx.conn.execute(_ANY_CLAIMABLE, {"b_now": now_us}).first() is not None

        return await self._tx.read(work)

    async def release(self, worker_id: str, run_id: str, attempt: int) -> Run:
        """ReleaseRun: the run's lock, the domain's rule (state_machine.release), one commit."""

        def change(run: Run, now: datetime) -> Transition:
            return state_machine.release(run, worker_id, attempt, now)

        return (await self._runs.change_run(run_id, change)).run

    # -- evictions -------------------------------------------------------------------------

    async def evict_expired(self, lease: timedelta) -> Sweep:
        """Evict every ALIVE worker whose lease ran out and hand its runs back. Safe to run
        on every replica at once: each expired worker row is taken by one sweep only.

        First the sweep ticks the lease clock. When no sweep has committed for longer than
        `outage_credit` allows, the database recorded no heartbeat either: that time is added
        to every ALIVE worker's lease (never past a full lease from now), so an outage does not
        evict the workers whose heartbeats it refused. The clock's row lock makes one sweep,
        on whichever replica comes first, credit a gap once."""
        return await self._tx.write(partial(self._evict, lease))

    def _evict(self, lease: timedelta, tx: Tx) -> Sweep:
        conn = tx.conn
        now = self.now
        credited = _tick(conn, now, lease)
        stmt = (
            sa.select(workers.c.worker_id)
            .where(
                workers.c.state == WorkerState.ALIVE.value,
                workers.c.lease_expires_at < to_us(now),
            )
            .order_by(workers.c.worker_id)
            .with_for_update(skip_locked=True)
        )
        done: list[tuple[str, list[Transition]]] = []
        for worker_id in [r.worker_id for r in conn.execute(stmt)]:
            conn.execute(
                workers.update()
                .where(workers.c.worker_id == worker_id)
                .values(state=WorkerState.EVICTED.value)
            )
            transitions = []
            for _, held in _held(conn, worker_id):
                run = self._runs.load_run(tx, held.run_id)
                t = state_machine.lose_worker(run, worker_id, now)
                if t.events:
                    self._runs.write_transition(tx, run, t)
                    transitions.append(t)
            done.append((worker_id, transitions))
        return Sweep(evicted=done, credited=credited)

    # -- reads -----------------------------------------------------------------------------

    async def get_worker(self, worker_id: str) -> WorkerDetail:
        def work(tx: Tx) -> WorkerDetail:
            row = tx.conn.execute(_WORKER, {"b_worker_id": worker_id}).first()
            if row is None:
                raise NotFound(
                    f"worker '{worker_id}' not found",
                    reason="WORKER_NOT_FOUND",
                    metadata={"worker_id": worker_id},
                )
            return _detail(tx.conn, row)

        return await self._tx.read(work)

    async def list_workers(self) -> list[WorkerDetail]:
        def work(tx: Tx) -> list[WorkerDetail]:
            found = tx.conn.execute(sa.select(workers).order_by(workers.c.worker_id)).all()
            return [_detail(tx.conn, row) for row in found]

        return await self._tx.read(work)


# -- queries ---------------------------------------------------------------------------------

_WORKER = sa.select(workers).where(workers.c.worker_id == sa.bindparam("b_worker_id"))
_LOCK_WORKER = _WORKER.with_for_update()
_WORKER_STATE = (
    sa.select(workers.c.state, workers.c.last_heartbeat)
    .where(workers.c.worker_id == sa.bindparam("b_worker_id"))
    .with_for_update()
)
_UPDATE_WORKER = workers.update().where(workers.c.worker_id == sa.bindparam("b_worker_id"))
_ANY_CLAIMABLE = (
    sa.select(runs.c.id)
    .where(runs.c.state == RunState.PENDING.value, runs.c.next_attempt_at <= sa.bindparam("b_now"))
    .limit(1)
)


def _run_views(conn: Connection, run_ids: list[str]) -> dict[str, RunView]:
    if not run_ids:
        return {}
    stmt = (
        sa.select(runs.c.id, runs.c.state, runs.c.current_attempt, attempts.c.worker_id)
        .join(
            attempts,
            sa.and_(attempts.c.run_id == runs.c.id, attempts.c.attempt == runs.c.current_attempt),
        )
        .where(runs.c.id.in_(run_ids))
    )
    return {
        r.id: RunView(r.id, RunState(r.state), r.current_attempt, r.worker_id)
        for r in conn.execute(stmt)
    }


def _lock_worker(conn: Connection, worker_id: str, *, lock: bool) -> Worker:
    """The registered worker (its row locked when asked)."""
    found = mappings(conn, _LOCK_WORKER if lock else _WORKER, {"b_worker_id": worker_id})
    if not found:
        raise _not_registered(worker_id)
    return _worker_from_row(found[0])


def _check_lease(worker: Worker, now: datetime) -> None:
    if worker.state is WorkerState.EVICTED or worker.lease_expires_at < now:
        raise _evicted(worker.worker_id)


def _unreported(conn: Connection, worker_id: str, previous_heartbeat_us: int) -> list[HeldAttempt]:
    """The attempts ASSIGNED to the worker before its previous heartbeat. A claim answer still
    on its way is not among them: the claim committed after that heartbeat (both lock the
    worker's row, and read the clock under it), so it counts only from the next one, a
    heartbeat interval after the worker had the previous answer. A run whose assignment is
    older and that the worker still does not report never reached it."""
    stmt = (
        sa.select(runs.c.id, attempts.c.attempt)
        .join(
            attempts,
            sa.and_(attempts.c.run_id == runs.c.id, attempts.c.attempt == runs.c.current_attempt),
        )
        .where(
            attempts.c.worker_id == worker_id,
            attempts.c.state == RunState.ASSIGNED.value,
            # updated_at: when it was assigned, or later (an edit): never too early.
            runs.c.updated_at < previous_heartbeat_us,
        )
        .order_by(runs.c.id)
    )
    return [HeldAttempt(r.id, r.attempt) for r in conn.execute(stmt)]


def _tick(conn: Connection, now: datetime, lease: timedelta) -> timedelta:
    """Record this sweep on the lease clock and credit the leases with an outage; returns the
    time credited. Without ALIVE workers nothing is written, and the next gap is credited only
    up to a full lease each."""
    clock = conn.execute(
        sa.select(lease_clock.c.ticked_at).where(lease_clock.c.id == 1).with_for_update()
    ).first()
    alive = sa.select(workers.c.worker_id).where(workers.c.state == WorkerState.ALIVE.value)
    if conn.execute(alive.limit(1)).first() is None:
        return timedelta(0)
    now_us = to_us(now)
    if clock is None:
        conn.execute(lease_clock.insert().values(id=1, ticked_at=now_us))
        return timedelta(0)
    credit = timedelta(0)
    if clock.ticked_at:
        credit = outage_credit(now - from_us(clock.ticked_at), lease)
    if credit:
        cap = to_us(now + lease)  # what a heartbeat now would give
        extended = workers.c.lease_expires_at + credit // timedelta(microseconds=1)
        conn.execute(
            workers.update()
            .where(workers.c.state == WorkerState.ALIVE.value, workers.c.lease_expires_at < cap)
            .values(lease_expires_at=sa.case((extended < cap, extended), else_=cap))
        )
    conn.execute(lease_clock.update().where(lease_clock.c.id == 1).values(ticked_at=now_us))
    return credit


_HELD = (
    sa.select(
        runs.c.id,
        runs.c.cpu,
        runs.c.ram_mb,
        runs.c.vram_mb,
        attempts.c.attempt,
        attempts.c.gpu_id,
    )
    .join(attempts, attempts.c.run_id == runs.c.id)
    .where(
        attempts.c.worker_id == sa.bindparam("b_worker_id"),
        # Not IN (...): an expanding parameter cannot be compiled once (sqlite_direct).
        sa.or_(*(attempts.c.state == state for state in _HOLDING)),
    )
    .order_by(runs.c.id)
)
_CANDIDATE_COLUMNS = sa.select(
    runs.c.id,
    runs.c.priority,
    runs.c.created_at,
    runs.c.cpu,
    runs.c.ram_mb,
    runs.c.vram_mb,
    runs.c.gpu_id,
).where(runs.c.state == RunState.PENDING.value, runs.c.next_attempt_at <= sa.bindparam("b_now"))


def _candidate_window(stmt: sa.Select[Any]) -> sa.Select[Any]:
    return (
        stmt.order_by(runs.c.priority.desc(), runs.c.created_at, runs.c.id)
        .limit(sa.bindparam("b_limit"))
        .with_for_update(skip_locked=True)
    )


# The first window, and the windows after a (priority, created_at, id) key.
_CANDIDATES = _candidate_window(_CANDIDATE_COLUMNS)
_CANDIDATES_AFTER = _candidate_window(
    _CANDIDATE_COLUMNS.where(
        sa.or_(
            runs.c.priority < sa.bindparam("b_prio"),
            sa.and_(
                runs.c.priority == sa.bindparam("b_prio"),
                runs.c.created_at > sa.bindparam("b_created"),
            ),
            sa.and_(
                runs.c.priority == sa.bindparam("b_prio"),
                runs.c.created_at == sa.bindparam("b_created"),
                runs.c.id > sa.bindparam("b_id"),
            ),
        )
    )
)
_NEXT_DUE = sa.select(sa.func.min(runs.c.next_attempt_at).label("due")).where(
    runs.c.state == RunState.PENDING.value, runs.c.next_attempt_at > sa.bindparam("b_now")
)


def _held(conn: Connection, worker_id: str) -> list[tuple[Held, HeldAttempt]]:
    return [
        (
            Held(Constraints(cpu=r["cpu"], ram_mb=r["ram_mb"], vram_mb=r["vram_mb"]), r["gpu_id"]),
            HeldAttempt(r["id"], r["attempt"]),
        )
        for r in mappings(conn, _HELD, {"b_worker_id": worker_id})
    ]


def _candidates(
    conn: Connection, now_us: int, after: tuple[int, int, str] | None, window: int
) -> list[tuple[str, tuple[int, int, str], Constraints]]:
    """Claimable PENDING runs, highest priority then oldest first, locked (skipping rows
    another claim holds), with the constraints that decide whether they fit."""
    if after is None:
        found = mappings(conn, _CANDIDATES, {"b_now": now_us, "b_limit": window})
    else:
        prio, created, rid = after
        params = {"b_now": now_us, "b_limit": window, "b_prio": prio, "b_created": created}
        found = mappings(conn, _CANDIDATES_AFTER, {**params, "b_id": rid})
    return [
        (
            r["id"],
            (r["priority"], r["created_at"], r["id"]),
            Constraints(cpu=r["cpu"], ram_mb=r["ram_mb"], vram_mb=r["vram_mb"], gpu_id=r["gpu_id"]),
        )
        for r in found
    ]


def _next_due(conn: Connection, now_us: int) -> datetime | None:
    due = mappings(conn, _NEXT_DUE, {"b_now": now_us})[0]["due"]
    return None if due is None else from_us(due)


def _detail(conn: Connection, row: Any) -> WorkerDetail:
    worker = _worker_from_row(row._mapping)
    held = _held(conn, worker.worker_id)
    return WorkerDetail(
        worker=worker,
        free=free_capacity(worker.resources, (h for h, _ in held)),
        held=[a for _, a in held],
    )
