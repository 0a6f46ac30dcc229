"""The SQLite engine: its durability setting, and no database that lives in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from gyoza_grpc.server.store.engine import make_engines


@pytest.mark.parametrize(("setting", "pragma"), [("normal", 1), ("full", 2)])
async def test_sqlite_synchronous_setting_reaches_every_connection(
    tmp_path: Path, setting: str, pragma: int
) -> None:
    engines = make_engines(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", sqlite_synchronous=setting)
    try:
        assert engines.sqlite is not None
        with engines.sqlite.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == pragma
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        found = await engines.run_sync(lambda c: c.execute(text("PRAGMA synchronous")).scalar())
        assert found == pragma
    finally:
        await engines.dispose()


def test_an_unknown_sqlite_synchronous_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        make_engines(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", sqlite_synchronous="off")


def test_an_in_memory_sqlite_database_is_refused() -> None:
    with pytest.raises(ValueError, match="file"):
        make_engines("sqlite+aiosqlite:///:memory:")
