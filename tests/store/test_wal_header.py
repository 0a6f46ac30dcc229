"""The WAL-index header (store/wal_header.py): it changes with every commit of any connection
or process, not with reads or checkpoints, and GetRun asks SQLite only when it has changed."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gyoza_grpc.domain.model import RunSpec
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.store.run_store import RunStore
from gyoza_grpc.store.wal_header import WalHeader

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = RunSpec(image="op:1", inputs={"n": 1})


def _wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (v INTEGER)")
    return conn


def test_the_header_changes_with_commits_only(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    conn = _wal_db(db)
    header = WalHeader.open(str(db))
    assert header is not None
    try:
        before = header.read()
        conn.execute("SELECT count(*) FROM t").fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")  # a transaction that wrote nothing
        assert header.read() == before
        for n in range(3):
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            after = header.read()
            assert after != before
            before = after
        with sqlite3.connect(db) as other:  # a passive checkpoint copies, commits nothing
            assert other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        assert header.read() == before
        conn.execute("INSERT INTO t VALUES (9)")  # the first commit after the log restarts
        assert header.read() != before
    finally:
        header.close()
        conn.close()


def test_no_header_without_a_wal_index(tmp_path: Path) -> None:
    assert WalHeader.open(str(tmp_path / "missing.db")) is None
    db = tmp_path / "rollback.db"
    with sqlite3.connect(db) as conn:  # journal_mode=DELETE: no -shm file
        conn.execute("CREATE TABLE t (v)")
    assert WalHeader.open(str(db)) is None


@pytest.fixture
def pragmas(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each PRAGMA data_version GetRun asks, with its answer."""
    asked: list[int] = []
    real = store._data_version

    def counted() -> int:
        asked.append(real())
        return asked[-1]

    monkeypatch.setattr(store, "_data_version", counted)
    return asked


async def test_get_run_asks_sqlite_only_after_a_commit(
    store: RunStore, pragmas: list[int], tmp_path: Path
) -> None:
    assert store._engines.wal_header() is not None
    run, _ = await store.create_run(new_run(SPEC, NOW))
    pragmas.clear()
    for _ in range(5):
        assert (await store.get_run(run.id))[0].priority == 5
    assert len(pragmas) == 1  # the create's own commit changed the header once
    # Another process commits: the header tells, the pragma confirms, the cache is dropped.
    script = (
        "import sqlite3, sys\n"
        "with sqlite3.connect(sys.argv[1]) as c:\n"
        "    c.execute('UPDATE runs SET priority = 8 WHERE id = ?', (sys.argv[2],))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(tmp_path / "g.db"), run.id
    )
    assert await proc.wait() == 0
    assert (await store.get_run(run.id))[0].priority == 8
    assert len(pragmas) == 2 and pragmas[1] != pragmas[0]
    assert (await store.get_run(run.id))[0].priority == 8
    assert len(pragmas) == 2


async def test_dispose_unmaps_the_header(store: RunStore) -> None:
    header = store._engines.wal_header()
    assert header is not None
    await store._engines.dispose()
    with pytest.raises(ValueError):
        header.read()  # closed: unmapped before the connections went
