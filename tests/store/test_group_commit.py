"""Group commit on SQLite: writes that arrive together share one transaction, and each keeps
its own outcome (store/group_commit.py, store/sqlite_transactions.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gyoza_grpc.domain import state_machine
from gyoza_grpc.domain.errors import FailedPrecondition, NotFound
from gyoza_grpc.domain.model import EventType, RunSpec
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.server.store import rows
from gyoza_grpc.server.store.engine import Engines, open_transactions
from gyoza_grpc.server.store.group_commit import GroupCommit, Queued
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.store.sqlite_direct import execute
from gyoza_grpc.server.store.sqlite_transactions import SQLiteTransactions
from gyoza_grpc.server.store.tables import attempts, runs
from gyoza_grpc.server.store.transactions import Tx

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RunSpec(image="op:1", inputs={"n": 1})


def _group(store: RunStore) -> GroupCommit:
    transactions = store.transactions
    assert isinstance(transactions, SQLiteTransactions), "a SQLite file store commits in groups"
    return transactions.group


def _insert(run_id: str, *, then_fail: bool = False) -> Any:
    """A raw write: a run row and its attempt; with then_fail, it raises after writing."""
    run = new_run(SPEC, NOW, run_id)

    def work(tx: Tx) -> str:
        execute(tx.conn, runs.insert(), rows.run_values(run))
        execute(tx.conn, attempts.insert(), rows.attempt_values(run.attempt))
        if then_fail:
            raise ValueError(f"{run_id} failed after writing")
        return run_id

    return work


def _ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT id FROM runs")}


async def test_writes_queued_together_commit_as_one_batch(store: RunStore) -> None:
    group = _group(store)
    before = group.batches
    made = await asyncio.gather(*(store.create_run(new_run(SPEC, NOW)) for _ in range(10)))
    assert group.batches == before + 1
    assert all(created for _run, created in made)
    assert len({run.id for run, _ in made}) == 10


async def test_a_failing_write_is_rolled_back_alone(store: RunStore, tmp_path: Path) -> None:
    group = _group(store)
    before = group.batches
    results = await asyncio.gather(
        store.transactions.write(_insert("a")),
        store.transactions.write(_insert("b", then_fail=True)),
        store.transactions.write(_insert("c")),
        return_exceptions=True,
    )
    assert group.batches == before + 1
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], ValueError)
    # b's rows were written, then rolled back to its savepoint: no half-written run.
    assert _ids(tmp_path / "g.db") == {"a", "c"}
    with sqlite3.connect(tmp_path / "g.db") as db:
        assert db.execute("SELECT count(*) FROM attempts WHERE run_id='b'").fetchone() == (0,)


async def test_domain_errors_reach_their_own_callers(store: RunStore) -> None:
    """One batch: each write sees the ones before it (PROGRESS after COMPLETED is refused)."""
    run, _ = await store.create_run(new_run(SPEC, NOW))

    def event(kind: EventType, **fields: Any) -> Any:
        given = state_machine.EventInput(type=kind, **fields)
        return lambda r, now: state_machine.append_event(r, given, now)

    group = _group(store)
    before = group.batches
    results = await asyncio.gather(
        store.change_run("missing", event(EventType.PROGRESS, progress=1)),
        store.change_run(run.id, event(EventType.STARTED)),
        store.change_run(run.id, event(EventType.COMPLETED)),
        store.change_run(run.id, event(EventType.PROGRESS, progress=7)),
        return_exceptions=True,
    )
    assert group.batches == before + 1
    assert isinstance(results[0], NotFound)
    assert [e.type for e in results[1].events] == [EventType.STARTED]  # type: ignore[union-attr]
    assert [e.type for e in results[2].events] == [EventType.COMPLETED]  # type: ignore[union-attr]
    assert isinstance(results[3], FailedPrecondition)
    stored, events = await store.get_run(run.id, with_events=True)
    assert stored.state.value == "COMPLETED"
    assert [e.type for e in events][-1] is EventType.COMPLETED


async def test_events_of_one_run_keep_their_order(store: RunStore) -> None:
    run, _ = await store.create_run(new_run(SPEC, NOW))
    started = state_machine.EventInput(type=EventType.STARTED)
    await store.change_run(run.id, lambda r, now: state_machine.append_event(r, started, now))

    def progress(n: int) -> Any:
        event = state_machine.EventInput(type=EventType.PROGRESS, progress=n, msg=str(n))
        return lambda r, now: state_machine.append_event(r, event, now)

    done = await asyncio.gather(*(store.change_run(run.id, progress(n)) for n in range(20)))
    seqs = [t.events[0].seq for t in done]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
    _, events = await store.get_run(run.id, with_events=True)
    assert [e.msg for e in events if e.type is EventType.PROGRESS] == [str(n) for n in range(20)]


async def test_a_caller_that_gave_up_before_its_batch_is_not_written(
    store: RunStore, tmp_path: Path
) -> None:
    kept = asyncio.ensure_future(store.transactions.write(_insert("kept")))
    dropped = asyncio.ensure_future(store.transactions.write(_insert("dropped")))
    await asyncio.sleep(0)  # both queued, the batch not yet run
    dropped.cancel()
    assert await kept == "kept"
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert _ids(tmp_path / "g.db") == {"kept"}


async def test_a_batch_waits_for_another_process_holding_the_lock(
    store: RunStore, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        writes = asyncio.gather(*(store.transactions.write(_insert(f"r{n}")) for n in range(3)))
        await asyncio.sleep(0.2)
        assert not writes.done()
        # The loop keeps serving reads meanwhile.
        assert _ids(tmp_path / "g.db") == set()
        other.execute("COMMIT")
        assert sorted(await asyncio.wait_for(writes, 10)) == ["r0", "r1", "r2"]
    finally:
        other.close()
    assert _ids(tmp_path / "g.db") == {"r0", "r1", "r2"}


async def test_a_lone_writer_does_not_wait_for_the_window() -> None:
    """Sequential writes arriving close together: a window that catches nothing makes the
    next batches go at once (1, 2, 4... of them), so few of the writes wait."""
    waits: list[int] = []

    async def commit(batch: Sequence[Queued[Any]]) -> None:
        for q in batch:
            q.future.set_result(None)

    group = GroupCommit(commit, asyncio.Lock(), quiet_s=0.02, max_wait_s=0.02)
    loop = asyncio.get_running_loop()
    original = loop.call_at

    def spy(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        waits.append(1)
        return original(when, *args, **kwargs)

    loop.call_at = spy  # type: ignore[method-assign]
    try:
        for _ in range(200):
            await group.submit(lambda tx: None)
    finally:
        loop.call_at = original  # type: ignore[method-assign]
    assert group.writes == 200 and group.batches == 200
    assert len(waits) <= 10


async def test_max_batch_splits_a_long_queue() -> None:
    sizes: list[int] = []

    async def commit(batch: Sequence[Queued[Any]]) -> None:
        sizes.append(len(batch))
        for q in batch:
            q.future.set_result(len(sizes))

    group = GroupCommit(commit, asyncio.Lock(), max_batch=64)
    await asyncio.gather(*(group.submit(lambda tx: None) for _ in range(100)))
    assert sizes == [64, 36]


async def test_a_write_failing_before_it_changes_rows_costs_no_second_pass(
    store: RunStore, transactions: SQLiteTransactions, tmp_path: Path
) -> None:
    await store.create_run(new_run(SPEC, NOW, "dup"))
    before = transactions.begun
    results = await asyncio.gather(
        store.transactions.write(_insert("a")),
        store.transactions.write(_insert("dup")),  # its first INSERT is refused: nothing to undo
        store.transactions.write(_insert("c")),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "c"
    assert "UNIQUE" in str(results[1])
    assert transactions.begun == before + 1
    assert _ids(tmp_path / "g.db") == {"dup", "a", "c"}


async def test_a_write_failing_half_way_sends_the_batch_again_with_savepoints(
    store: RunStore, transactions: SQLiteTransactions, engines: Engines, tmp_path: Path
) -> None:
    """The first pass is rolled back whole, and what it made of its runs is forgotten: the
    cache then holds what the second pass committed."""
    run, _ = await store.create_run(new_run(SPEC, NOW))
    started = state_machine.EventInput(type=EventType.STARTED)
    before = transactions.begun
    results = await asyncio.gather(
        store.change_run(run.id, lambda r, now: state_machine.append_event(r, started, now)),
        store.transactions.write(_insert("b", then_fail=True)),
        store.transactions.write(_insert("c")),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError) and results[2] == "c"
    assert transactions.begun == before + 2
    assert _ids(tmp_path / "g.db") == {run.id, "c"}
    cached, _ = await store.get_run(run.id)
    other = open_transactions(engines)  # a cache of its own: a fresh read
    try:
        fresh, _ = await RunStore(other).get_run(run.id)
    finally:
        await other.close()
    assert cached == fresh and fresh.state.value == "RUNNING" and fresh.last_seq == 0


async def test_a_write_after_which_sqlite_rolled_back_fails_the_whole_batch(
    store: RunStore, tmp_path: Path
) -> None:
    """A full disk or an I/O error makes SQLite roll the transaction back by itself: the
    writes after it must not go on outside any transaction, half the batch committed."""

    def rolled_back(tx: Tx) -> str:
        raw = tx.conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL or SQLITE_IOERR
        raise sqlite3.OperationalError("database or disk is full")

    results = await asyncio.gather(
        store.transactions.write(_insert("a")),
        store.transactions.write(rolled_back),
        store.transactions.write(_insert("c")),
        return_exceptions=True,
    )
    assert all(isinstance(r, Exception) for r in results), results
    assert _ids(tmp_path / "g.db") == set()
    assert await store.transactions.write(_insert("d")) == "d"  # the store goes on
    assert _ids(tmp_path / "g.db") == {"d"}
