"""Aggregate reads: a ping, the gauges' snapshot (runs by state, the queue, workers), and
CountRuns' counts.

Each is one transaction over indexed columns (runs by state uses ix_runs_state_created, the
queue ix_runs_claim, workers ix_workers_state_lease; a CountRuns filter the index its
ListRuns filter uses). A count still reads every index entry it counts, so these run off the
event loop (Engines.run_sync: a thread on SQLite, a greenlet on PostgreSQL): a million runs
must not stall the loop, which on SQLite runs every other read itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from gyoza_grpc.domain.clock import to_us
from gyoza_grpc.domain.model import RunState
from gyoza_grpc.domain.workers import WorkerState
from gyoza_grpc.server.store.engine import Engines
from gyoza_grpc.server.store.run_store import RunFilters
from gyoza_grpc.server.store.tables import runs, workers


@dataclass(frozen=True, slots=True)
class QueueStats:
    """PENDING runs of one priority: how many, and when the oldest was created (us)."""

    depth: int
    oldest_created_us: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    runs_by_state: dict[str, int] = field(default_factory=dict)
    queue: dict[int, QueueStats] = field(default_factory=dict)
    workers_alive: int = 0


class StatsStore:
    def __init__(self, engines: Engines) -> None:
        self._engines = engines

    async def ping(self) -> None:
        """Raises when the database cannot answer a trivial query."""
        await self._engines.run_sync(_ping)

    async def snapshot(self, now: datetime) -> StoreStats:
        return await self._engines.run_sync(lambda conn: _snapshot(conn, now))

    async def count_runs(self, filters: RunFilters) -> dict[RunState, int]:
        """How many runs match `filters`, per state (states with none left out): one
        `SELECT state, count(*) ... GROUP BY state`."""
        stmt = _runs_by_state(filters)

        def work(conn: Connection) -> dict[RunState, int]:
            return {RunState(state): int(n) for state, n in conn.execute(stmt)}

        return await self._engines.run_sync(work)


def _runs_by_state(filters: RunFilters) -> sa.Select[Any]:
    """`SELECT state, count(*) ... GROUP BY state` over the runs `filters` match."""
    return (
        sa.select(runs.c.state, sa.func.count()).where(*filters.conditions()).group_by(runs.c.state)
    )


def _ping(conn: Connection) -> None:
    conn.execute(sa.text("SELECT 1"))


def _snapshot(conn: Connection, now: datetime) -> StoreStats:
    """The three aggregates, in one transaction."""
    by_state = _runs_by_state(RunFilters())
    queue = (
        sa.select(runs.c.priority, sa.func.count(), sa.func.min(runs.c.created_at))
        .where(runs.c.state == RunState.PENDING.value)
        .group_by(runs.c.priority)
    )
    alive = (
        sa.select(sa.func.count())
        .select_from(workers)
        .where(
            workers.c.state == WorkerState.ALIVE.value,
            workers.c.lease_expires_at > to_us(now),
        )
    )
    states = {state: int(n) for state, n in conn.execute(by_state)}
    pending = {
        int(priority): QueueStats(int(n), int(oldest))
        for priority, n, oldest in conn.execute(queue)
    }
    alive_count = int(conn.execute(alive).scalar_one())
    return StoreStats(runs_by_state=states, queue=pending, workers_alive=alive_count)
