"""A RunStore over a fresh SQLite file (g.db in the test's tmp_path), migrated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gyoza_grpc.store.engine import make_engines
from gyoza_grpc.store.run_store import RunStore
from gyoza_grpc.store.schema import migrate


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    engines = make_engines(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    await migrate(engines)
    try:
        yield RunStore(engines)
    finally:
        await engines.dispose()
