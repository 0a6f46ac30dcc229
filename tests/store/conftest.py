"""A RunStore over a fresh SQLite file (g.db in the test's tmp_path), migrated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gyoza_grpc.server.store.engine import Engines, make_engines, open_transactions
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.store.schema import migrate
from gyoza_grpc.server.store.sqlite_transactions import SQLiteTransactions


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[Engines]:
    made = make_engines(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    await migrate(made)
    try:
        yield made
    finally:
        await made.dispose()


@pytest.fixture
async def transactions(engines: Engines) -> AsyncIterator[SQLiteTransactions]:
    made = open_transactions(engines)
    assert isinstance(made, SQLiteTransactions)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def store(transactions: SQLiteTransactions) -> RunStore:
    return RunStore(transactions)
