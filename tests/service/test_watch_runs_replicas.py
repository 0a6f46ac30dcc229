"""WatchRuns across two replicas over one PostgreSQL database: a run created on B and its
changes reach a watcher on A (through the wake-ups alone, no catch-up), and a watcher whose
replica lost its listener for a while is told to resync."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from tests.conftest import eventually
from tests.service.helpers import S, add
from tests.service.test_replicas import (
    EVENT_BOUND_S,
    NO_CATCHUP,
    _close,
    _replica,
    create,
    pg_url,  # noqa: F401 - the fixture
)
from tests.service.watch_runs import RunsWatcher


async def test_runs_made_and_changed_on_b_reach_a_watcher_on_a(pg_url: str) -> None:  # noqa: F811
    a = await _replica(pg_url, **NO_CATCHUP)
    b = await _replica(pg_url, **NO_CATCHUP)
    try:
        async with RunsWatcher(a.runs) as w, RunsWatcher(a.runs, topic="t") as by_topic:
            run = await create(b, topic="t")
            other = await create(b)
            await w.until(run.id, S.RUN_STATE_PENDING, timeout_s=EVENT_BOUND_S)
            await w.until(other.id, S.RUN_STATE_PENDING, timeout_s=EVENT_BOUND_S)
            await add(b.runs, run.id, S.EVENT_TYPE_STARTED, payload={"worker_id": "w9"})
            got = await w.until(run.id, S.RUN_STATE_RUNNING, timeout_s=EVENT_BOUND_S)
            assert got.execution_summary.worker_id == "w9"
            await add(b.runs, run.id, S.EVENT_TYPE_COMPLETED)
            await by_topic.until(run.id, S.RUN_STATE_COMPLETED, timeout_s=EVENT_BOUND_S)
            assert {r.id for r in by_topic.runs()} == {run.id}
            # A run made on A is sent once, not again by A's reads of B's new runs.
            mine = await create(a)
            await w.until(mine.id, S.RUN_STATE_PENDING)
            await create(b)
            await eventually(lambda: _true(len({r.id for r in w.runs()}) == 4))
            assert len(w.runs(mine.id)) == 1
            assert w.resyncs() == []
    finally:
        await _close(a, b)


async def _true(value: bool) -> bool:
    return value


async def test_a_lost_listener_makes_the_watchers_resync(pg_url: str) -> None:  # noqa: F811
    a = await _replica(pg_url, **NO_CATCHUP)
    assert a.gs.wakeup is not None and a.gs.wakeup.connection is not None
    try:
        async with RunsWatcher(a.runs) as w:
            pid = a.gs.wakeup.connection.get_server_pid()
            connects = a.gs.wakeup.connects
            dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
            admin = await asyncpg.connect(dsn)
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()

            async def resynced() -> bool:
                return bool(w.resyncs())

            await eventually(resynced, timeout_s=10)
            assert a.gs.wakeup.connects > connects
            assert "not listening" in w.resyncs()[0].reason
            # The stream goes on.
            run = await create(a)
            await w.until(run.id, S.RUN_STATE_PENDING)
    finally:
        await _close(a)
