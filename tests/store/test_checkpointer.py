"""WAL checkpoints run on the checkpointer's thread, and stop with the engines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from gyoza_grpc.domain.model import RunSpec
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.server.store.checkpointer import SAFETY_NET_PAGES
from gyoza_grpc.server.store.engine import make_engines, open_transactions
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.store.schema import migrate

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_the_thread_checkpoints_what_the_writers_append(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engines = make_engines(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(engines)
        store = RunStore(open_transactions(engines))
        pages = await engines.run_sync(
            lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        )
        assert pages == SAFETY_NET_PAGES
        spec = RunSpec(image="op:1", inputs={"n": 1})
        await asyncio.gather(*(store.create_run(new_run(spec, NOW)) for _ in range(300)))
        checkpointer = engines.checkpointer
        assert checkpointer is not None and checkpointer.running
        for _ in range(100):  # the thread copies the frames back within a few of its rounds
            await asyncio.sleep(0.05)
            last = checkpointer.last
            if last is not None and last[1] > 0 and last[2] == last[1]:
                break
        else:
            raise AssertionError(f"no complete checkpoint by the thread: {checkpointer.last}")
    finally:
        await store.transactions.close()
        await engines.dispose()
    assert engines.checkpointer is not None
    assert not engines.checkpointer.running
