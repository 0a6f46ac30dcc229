"""The consistency check the fuzz and crash tests rely on finds what it is meant to find."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests.conftest import launch
from tests.consistency import database_problems


async def _two_runs(url: str) -> list[str]:
    gs = await launch(url)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            runs = runs_pb2_grpc.RunServiceStub(ch)
            ids = []
            for _ in range(2):
                run = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="i"))).run
                for type_ in (runs_pb2.EVENT_TYPE_STARTED, runs_pb2.EVENT_TYPE_COMPLETED):
                    await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=type_))
                ids.append(run.id)
            return ids
    finally:
        await gs.stop(0)


async def test_a_sound_database_has_no_problems_and_each_breakage_is_found(
    sqlite_url: str, tmp_path: Path
) -> None:
    first, second = await _two_runs(sqlite_url)
    assert await database_problems(sqlite_url) == []
    db = sqlite3.connect(tmp_path / "gyoza.db")
    with db:
        db.execute("DELETE FROM events WHERE run_id = ? AND seq = 0", (first,))
        db.execute(
            "INSERT INTO events (run_id, seq, attempt, type, time, state, msg, payload) "
            "VALUES (?, 2, 1, 'INFO', 0, 'COMPLETED', '', '{}')",
            (second,),
        )
        db.execute("UPDATE runs SET last_seq = 2 WHERE id = ?", (second,))
    db.close()
    problems = await database_problems(sqlite_url)
    assert any(f"run {first}: seqs" in p for p in problems), problems
    assert any(f"run {second}: event 2 (INFO, attempt 1) after terminal" in p for p in problems)
