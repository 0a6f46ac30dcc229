"""The command handler: stdin/stdout JSON, stderr progress and info lines, failures with the
tail of stderr, the run's environment, and killing the process when the run is stopped."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import pytest

from gyoza_grpc.worker.context import Note, RunContext
from gyoza_grpc.worker.subprocess_executor import (
    CommandFailed,
    CommandHandler,
    TokenBucket,
    parse_info,
    parse_outputs,
    parse_progress,
)
from tests.worker.helpers import make_claim, wait_for


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("progress: 50", 50),
        ("PROGRESS:7", 7),
        ("  progress: 12.9 % ", 12),
        ("progress: 0", 0),
        ("progress: 100", 100),
        ("progress: 101", None),
        ("progress: -1", None),
        ("progress: half", None),
        ("progress: 50 done", None),
        ("my progress: 50", None),
    ],
)
def test_parse_progress(line: str, expected: int | None) -> None:
    assert parse_progress(line) == expected


def test_parse_info() -> None:
    assert parse_info("info: loaded 3 files ") == "loaded 3 files"
    assert parse_info("INFO:x") == "x"
    assert parse_info("information") is None


def test_parse_outputs() -> None:
    assert parse_outputs(b'  {"y": [1, 2]}\n') == {"y": [1, 2]}
    assert parse_outputs(b"\n") == {}
    with pytest.raises(CommandFailed, match="not JSON"):
        parse_outputs(b"y=1")
    with pytest.raises(CommandFailed, match="not an object"):
        parse_outputs(b"[1]")


def test_token_bucket() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3, now=0)
    assert [bucket.take(now=0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=0.5) and not bucket.take(now=0.5)


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "op.py"
    path.write_text(textwrap.dedent(body))
    return f"{sys.executable} {path}"


async def drain(ctx: RunContext) -> list[Note]:
    ctx.close()
    notes: list[Note] = []
    while (batch := await ctx.next_notes()) is not None:
        notes.extend(batch)
    return notes


async def test_inputs_in_outputs_out_with_progress_info_and_environment(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        """
        import json, os, sys
        inputs = json.load(sys.stdin)
        print("progress: 50", file=sys.stderr, flush=True)
        print("info: halfway", file=sys.stderr, flush=True)
        print("some chatter", file=sys.stderr, flush=True)
        names = ("GYOZA_RUN_ID", "GYOZA_ATTEMPT", "GYOZA_WORKER_ID", "GYOZA_GPU_ID")
        env = {k: os.environ[k] for k in names if k in os.environ}
        json.dump({"doubled": inputs["x"] * 2, "env": env}, sys.stdout)
        """,
    )
    ctx = RunContext(make_claim("run-7", 3, inputs={"x": 21}, gpu_id=0, vram_mb=1), "w9")
    env = {**os.environ, "GYOZA_GPU_ID": "stale", "KEEP": "1"}
    outputs = await CommandHandler(command, env=env)({"x": 21}, ctx)
    assert outputs == {
        "doubled": 42,
        "env": {
            "GYOZA_RUN_ID": "run-7",
            "GYOZA_ATTEMPT": "3",
            "GYOZA_WORKER_ID": "w9",
            "GYOZA_GPU_ID": "0",
        },
    }
    assert await drain(ctx) == [Note(progress=50), Note(msg="halfway")]


async def test_no_gpu_means_no_gpu_variable(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        """
        import json, os, sys
        json.dump({"gpu": os.environ.get("GYOZA_GPU_ID")}, sys.stdout)
        """,
    )
    ctx = RunContext(make_claim(), "w")
    assert await CommandHandler(command)({}, ctx) == {"gpu": None}


async def test_non_zero_exit_fails_with_the_tail_of_stderr(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        """
        import sys
        for i in range(50):
            print(f"line {i}", file=sys.stderr)
        print("progress: 10", file=sys.stderr)
        sys.exit(3)
        """,
    )
    ctx = RunContext(make_claim(), "w")
    with pytest.raises(CommandFailed) as err:
        await CommandHandler(command)({}, ctx)
    message = str(err.value)
    assert message.startswith("command exited with code 3: line 30\n")
    assert message.endswith("line 49") and "line 29" not in message


async def test_bad_stdout_and_missing_program_fail(tmp_path: Path) -> None:
    ctx = RunContext(make_claim(), "w")
    with pytest.raises(CommandFailed, match="stdout is not JSON"):
        await CommandHandler(script(tmp_path, "print('hello')"))({}, ctx)
    with pytest.raises(CommandFailed, match="cannot start"):
        await CommandHandler("/nonexistent/op --flag")({}, ctx)
    with pytest.raises(ValueError, match="empty"):
        CommandHandler("  ")


async def test_shell_and_a_command_that_ignores_stdin(tmp_path: Path) -> None:
    ctx = RunContext(make_claim("r-sh"), "w")
    handler = CommandHandler('echo "{\\"id\\": \\"$GYOZA_RUN_ID\\"}" | cat', shell=True)
    assert await handler({"big": "x" * 1_000_000}, ctx) == {"id": "r-sh"}


async def test_info_lines_are_rate_limited(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        """
        import sys
        for i in range(30):
            print(f"info: {i}", file=sys.stderr)
        """,
    )
    ctx = RunContext(make_claim(), "w")
    await CommandHandler(command, info_per_s=0.001, info_burst=5)({}, ctx)
    notes = await drain(ctx)
    assert [n.msg for n in notes] == [*"01234", "25 info line(s) dropped (over the rate limit)"]


async def test_cancelling_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = script(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        print("progress: 1", file=sys.stderr, flush=True)
        time.sleep(60)
        """,
    )
    ctx = RunContext(make_claim(), "w")
    task = asyncio.create_task(CommandHandler(command, kill_grace_s=1)({}, ctx))
    notes = await ctx.next_notes()  # the command is up
    assert notes == [Note(progress=1)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The command itself has been waited for; its child gets the same signal and dies too.
    for pid in map(int, pids.read_text().split()):
        await wait_for(lambda pid=pid: not _alive(pid), timeout_s=3)


async def test_a_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("progress: 1", file=sys.stderr, flush=True)
        time.sleep(60)
        """,
    )
    ctx = RunContext(make_claim(), "w")
    task = asyncio.create_task(CommandHandler(command, kill_grace_s=0.3)({}, ctx))
    await ctx.next_notes()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0.25 < loop.time() - t0 < 5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def test_stdout_over_the_outputs_cap_fails_saying_so(tmp_path: Path) -> None:
    ctx = RunContext(make_claim(), "w")
    # Just over the default cap (the server's 1 MiB): refused here, naming the cap.
    big = script(tmp_path, "import json, sys; json.dump({'x': 'a' * 1048576}, sys.stdout)")
    with pytest.raises(CommandFailed) as err:
        await CommandHandler(big)({}, ctx)
    assert str(err.value) == (
        "stdout passed the outputs cap of 1048576 bytes: an op's outputs are one JSON object "
        "of at most 1048576 bytes (worker --max-output-bytes)"
    )
    # A command that never stops writing is stopped at the cap, not read to the end.
    endless = CommandHandler("yes", max_output_bytes=10_000, kill_grace_s=1)
    with pytest.raises(CommandFailed, match="outputs cap of 10000 bytes"):
        await asyncio.wait_for(endless({}, ctx), 10)
    # At the cap exactly it is fine.
    exact = script(tmp_path, "import sys; sys.stdout.write('{\"x\": \"' + 'a' * 92 + '\"}')")
    assert await CommandHandler(exact, max_output_bytes=101)({}, ctx) == {"x": "a" * 92}
