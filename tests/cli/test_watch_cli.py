"""`gyoza-grpc runs watch`: events printed as they commit, the exit code from the end state."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from gyoza.v1 import runs_pb2
from tests.cli.conftest import CLI_TIMEOUT_S, CliServer, finish, start_cli
from tests.service.helpers import add, create

S = runs_pb2


async def next_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), CLI_TIMEOUT_S)
    assert line, "the watch ended early"
    return line.decode()


async def test_watch_json_follows_an_automatic_retry_and_exits_0_on_completed(
    srv: CliServer,
) -> None:
    run = await create(srv.runs, retry_policy=S.RetryPolicy(max_attempts=2))
    await add(srv.runs, run.id, S.EVENT_TYPE_STARTED, payload={"worker_id": "w"})
    proc = await start_cli(srv.target, "runs", "watch", run.id, "--json")
    first = json.loads(await next_line(proc))  # the replay: the stream is open
    assert (first["seq"], first["type"]) == ("0", "EVENT_TYPE_STARTED")

    # A FAILED with an attempt left is retried automatically: the watch goes on.
    await add(srv.runs, run.id, S.EVENT_TYPE_FAILED, msg="boom")
    await add(srv.runs, run.id, S.EVENT_TYPE_STARTED, payload={"worker_id": "w"})
    await add(srv.runs, run.id, S.EVENT_TYPE_PROGRESS, progress=50)
    await add(srv.runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"ok": True})
    result = await finish(proc)
    assert result.code == 0, result.err
    rest = [json.loads(line) for line in result.out.splitlines()]
    assert [(e["seq"], e["type"], e["state"]) for e in rest] == [
        ("1", "EVENT_TYPE_FAILED", "RUN_STATE_FAILED"),
        ("2", "EVENT_TYPE_RETRIED", "RUN_STATE_PENDING"),
        ("3", "EVENT_TYPE_STARTED", "RUN_STATE_RUNNING"),
        ("4", "EVENT_TYPE_PROGRESS", "RUN_STATE_RUNNING"),
        ("5", "EVENT_TYPE_COMPLETED", "RUN_STATE_COMPLETED"),
    ]
    assert rest[3]["progress"] == 50


@pytest.mark.parametrize(("end", "code"), [(S.EVENT_TYPE_FAILED, 1), (S.EVENT_TYPE_CANCELLED, 2)])
async def test_watch_exits_1_on_failed_and_2_on_cancelled(
    srv: CliServer, end: int, code: int
) -> None:
    run = await create(srv.runs)  # one attempt: FAILED is final
    await add(srv.runs, run.id, S.EVENT_TYPE_STARTED, payload={"worker_id": "w"})
    proc = await start_cli(srv.target, "runs", "watch", run.id)
    assert "STARTED" in await next_line(proc)
    if end == S.EVENT_TYPE_CANCELLED:
        await srv.runs.CancelRun(S.CancelRunRequest(id=run.id, reason="stop it"))
    else:
        await add(srv.runs, run.id, S.EVENT_TYPE_PROGRESS, progress=20)
        await add(srv.runs, run.id, end, msg="out of memory")
    result = await finish(proc)
    assert result.code == code, result.err
    lines = result.out.splitlines()  # after the STARTED line (seq 0) read above
    assert "\x1b" not in result.out  # a pipe: no progress bar, no colour
    last = lines[-1].split()
    assert last[0] == str(len(lines)) and last[4:6] == [S.EventType.Name(end)[11:]] * 2
    assert " ".join(last[6:]) in ("out of memory", "stop it")


async def test_watch_after_the_end_and_ctrl_c(srv: CliServer) -> None:
    done = await create(srv.runs)
    await srv.runs.CancelRun(S.CancelRunRequest(id=done.id))
    # Nothing after --after: the exit code still says how the run ended.
    proc = await start_cli(srv.target, "runs", "watch", done.id, "--after", "0")
    result = await finish(proc)
    assert (result.code, result.out) == (2, ""), result.err

    pending = await create(srv.runs)
    await add(srv.runs, pending.id, S.EVENT_TYPE_INFO, msg="queued")
    proc = await start_cli(srv.target, "runs", "watch", pending.id)
    assert "queued" in await next_line(proc)
    proc.send_signal(signal.SIGINT)
    result = await finish(proc)
    assert result.code == 130
    assert "Traceback" not in result.err
