"""The SQLite engines: durability setting, reads and writes straight on the loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from gyoza_grpc.store.engine import make_engines


@pytest.mark.parametrize(("setting", "pragma"), [("normal", 1), ("full", 2)])
async def test_sqlite_synchronous_setting_reaches_every_connection(
    tmp_path: Path, setting: str, pragma: int
) -> None:
    engines = make_engines(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", sqlite_synchronous=setting)
    try:
        assert engines.inline is not None
        with engines.inline.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == pragma
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        async with engines.read.connect() as aconn:
            assert (await aconn.execute(text("PRAGMA synchronous"))).scalar_one() == pragma
    finally:
        await engines.dispose()


def test_an_unknown_sqlite_synchronous_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        make_engines(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", sqlite_synchronous="off")
