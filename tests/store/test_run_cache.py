"""The GetRun cache of a SQLite file store (store/run_cache.py): never staler than the
database, whoever wrote to it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gyoza_grpc.domain import state_machine
from gyoza_grpc.domain.model import EventType, RunSpec
from gyoza_grpc.domain.placement import Capacity
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.server.store.engine import Engines, open_transactions
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.store.worker_store import WorkerStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RunSpec(image="op:1", inputs={"n": 1})


async def test_get_run_sees_every_committed_change(store: RunStore) -> None:
    run, _ = await store.create_run(new_run(SPEC, NOW))
    first, _ = await store.get_run(run.id)
    assert (await store.get_run(run.id))[0] is first  # answered from the cache
    started = state_machine.EventInput(type=EventType.STARTED)
    await store.change_run(run.id, lambda r, now: state_machine.append_event(r, started, now))
    after, _ = await store.get_run(run.id)
    assert after.state.value == "RUNNING"


async def test_get_run_sees_a_write_by_another_process(store: RunStore, tmp_path: Path) -> None:
    run, _ = await store.create_run(new_run(SPEC, NOW))
    assert (await store.get_run(run.id))[0].priority == 5
    with sqlite3.connect(tmp_path / "g.db") as other:
        other.execute("UPDATE runs SET priority = 9 WHERE id = ?", (run.id,))
    assert (await store.get_run(run.id))[0].priority == 9


async def test_get_run_sees_a_claim_by_the_worker_store(store: RunStore) -> None:
    run, _ = await store.create_run(new_run(SPEC, NOW))
    assert (await store.get_run(run.id))[0].state.value == "PENDING"
    workers = WorkerStore(store)
    await workers.heartbeat("w1", Capacity(cpu=4, ram_mb=4096), (), (), timedelta(seconds=30))
    claimed, _ = await workers.claim("w1", 1)
    assert [c.run.id for c in claimed] == [run.id]
    assert (await store.get_run(run.id))[0].state.value == "ASSIGNED"


async def test_the_runs_writes_leave_in_the_cache_are_the_stored_ones(
    store: RunStore, engines: Engines
) -> None:
    """The cache takes the runs a write batch made (no read back): each must equal what a
    fresh read of the database gives, through every kind of transition."""

    def event(kind: EventType, **fields: object) -> object:
        given = state_machine.EventInput(type=kind, **fields)  # type: ignore[arg-type]
        return lambda r, now: state_machine.append_event(r, given, now)

    spec = RunSpec(image="op:1", inputs={"n": 1.5, "s": "x", "l": [1, None, {"k": True}]})
    run, _ = await store.create_run(new_run(spec, NOW))
    steps = [
        event(EventType.STARTED),
        event(EventType.PROGRESS, progress=40, msg="half", payload={"a": 1}),
        event(EventType.FAILED, msg="boom", payload={"error": "x"}),
    ]
    other = open_transactions(engines)  # a cache of its own: fresh reads
    try:
        for step in steps:
            written = (await store.change_run(run.id, step)).run  # type: ignore[arg-type]
            cached, _ = await store.get_run(run.id)
            assert cached is written  # the cache holds what the write made
            other_store = RunStore(other)
            fresh, _ = await other_store.get_run(run.id)
            assert cached == fresh
    finally:
        await other.close()


async def test_heartbeats_and_other_runs_writes_keep_the_cache(store: RunStore) -> None:
    """Only the runs a write touched are forgotten: workers heartbeating beside a poller
    must not empty the cache."""
    made = [(await store.create_run(new_run(SPEC, NOW)))[0] for _ in range(100)]
    kept = {r.id: (await store.get_run(r.id))[0] for r in made}
    workers = WorkerStore(store)
    await workers.heartbeat("w1", Capacity(cpu=1, ram_mb=1), (), (), timedelta(seconds=30))
    started = state_machine.EventInput(type=EventType.STARTED)
    await store.change_run(made[0].id, lambda r, now: state_machine.append_event(r, started, now))
    still = [r.id for r in made[1:] if (await store.get_run(r.id))[0] is kept[r.id]]
    assert len(still) == 99
    assert (await store.get_run(made[0].id))[0].state.value == "RUNNING"


def test_the_cache_keeps_to_its_count_and_bytes_and_skips_big_runs() -> None:
    from gyoza_grpc.server.store.run_cache import ENTRY_OVERHEAD, MAX_ENTRY_BYTES, RunCache

    cache = RunCache(limit=3, budget_bytes=10 * ENTRY_OVERHEAD)
    made = [new_run(SPEC, NOW) for _ in range(5)]
    for run in made:
        cache.put(run)
    assert [cache.get(r.id) for r in made] == [None, None, *made[2:]]  # the oldest went
    big = new_run(RunSpec(image="op:1", inputs={"blob": "x" * MAX_ENTRY_BYTES}), NOW)
    cache.put(big)
    assert cache.get(big.id) is None  # a 64 KiB document is read back, not kept
    by_bytes = RunCache(limit=100, budget_bytes=3 * ENTRY_OVERHEAD + 100)
    for run in made:
        by_bytes.put(run)
    assert sum(by_bytes.get(r.id) is not None for r in made) == 3
    by_bytes.forget({made[-1].id})
    assert by_bytes.get(made[-1].id) is None
