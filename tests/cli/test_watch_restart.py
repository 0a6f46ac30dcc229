"""`gyoza-grpc runs watch` follows a run across a restart of the server (through the Python
client, which resumes the stream where it broke)."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from gyoza_grpc.client import AsyncClient, EventType
from tests.cli.conftest import finish, start_cli
from tests.cli.test_watch_cli import next_line
from tests.client.conftest import free_port
from tests.e2e.process import serve

pytestmark = pytest.mark.e2e


async def test_runs_watch_lives_through_a_server_restart(tmp_path: Path) -> None:
    port = free_port()
    args = (
        "--port",
        str(port),
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'gyoza.db'}",
        "--shutdown-grace",
        "1",
    )
    with serve(tmp_path, *args, log_name="first.log") as first:
        target = await asyncio.to_thread(first.wait_serving)
        async with AsyncClient(target, wait_for_ready=True, timeout=timedelta(seconds=60)) as w:
            run = await w.create_run("img")
            await w.add_event(run.id, EventType.INFO, msg="before the restart")
            proc = await start_cli(target, "runs", "watch", run.id, "--json")
            assert json.loads(await next_line(proc))["msg"] == "before the restart"
            assert await asyncio.to_thread(first.stop, signal.SIGTERM) == 0, first.log
            with serve(tmp_path, *args, log_name="second.log") as second:
                await asyncio.to_thread(second.wait_serving)
                await w.add_event(run.id, EventType.STARTED, payload={"worker_id": "w"})
                await w.add_event(run.id, EventType.COMPLETED, payload={"outputs": {"ok": 1}})
                result = await finish(proc)
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    assert [(e["seq"], e["type"]) for e in events] == [
        ("1", "EVENT_TYPE_STARTED"),
        ("2", "EVENT_TYPE_COMPLETED"),
    ]
    # On stderr: one line as the stream broke, one as it came back (the attempts between
    # are DEBUG).
    assert "server is shutting down; resume with after=0" in result.err
    assert "resumed after 0" in result.err
    assert len(result.err.splitlines()) == 2, result.err
