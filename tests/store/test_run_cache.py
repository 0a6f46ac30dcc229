"""The GetRun cache of a SQLite file store (store/run_cache.py): never staler than the
database, whoever wrote to it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from gyoza_grpc.domain import state_machine
from gyoza_grpc.domain.model import EventType, RunSpec
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.store.run_store import RunStore
from gyoza_grpc.store.tables import runs

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RunSpec(image="op:1", inputs={"n": 1})


async def test_get_run_sees_every_committed_change(store: RunStore) -> None:
    run, _ = await store.create_run(new_run(SPEC, NOW))
    first, _ = await store.get_run(run.id)
    assert store._cache is not None and store._cache.get(run.id) == first
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


async def test_get_run_sees_a_sibling_store_write(store: RunStore) -> None:
    run, _ = await store.create_run(new_run(SPEC, NOW))
    assert (await store.get_run(run.id))[0].priority == 5
    async with store.write_transaction() as conn:
        await conn.execute(runs.update().where(runs.c.id == run.id).values(priority=2))
    assert (await store.get_run(run.id))[0].priority == 2


async def test_the_runs_writes_leave_in_the_cache_are_the_stored_ones(store: RunStore) -> None:
    """The cache takes the runs a write batch made (no read back): each must equal what a
    fresh read of the database gives, through every kind of transition."""
    assert store._cache is not None

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
    for step in steps:
        await store.change_run(run.id, step)  # type: ignore[arg-type]
        cached = store._cache.get(run.id)
        fresh = store._load_run(store._engines.held(write=False), run.id, False)
        assert cached == fresh


async def test_a_write_transaction_that_changes_nothing_keeps_the_cache(store: RunStore) -> None:
    """The eviction sweep opens one every few seconds and seldom changes anything."""
    run, _ = await store.create_run(new_run(SPEC, NOW))
    await store.get_run(run.id)
    async with store.write_transaction() as conn:
        await conn.execute(runs.select().where(runs.c.id == "nothing"))
    assert (await store.get_run(run.id))[0].priority == 5
    assert store._cache is not None and store._cache.get(run.id) is not None


def test_the_cache_keeps_to_its_count_and_bytes_and_skips_big_runs() -> None:
    from gyoza_grpc.store.run_cache import ENTRY_OVERHEAD, MAX_ENTRY_BYTES, RunCache

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
