"""A handler that runs each attempt through a command: a real worker without containers.

The command follows the op contract of `op_io` (inputs as JSON on stdin, outputs as a JSON
object on stdout, `progress:` and `info:` lines on stderr, exit 0 to complete), as a container
image does under the docker executor. It runs without a shell (`shlex.split`), unless
`shell=True` (`/bin/sh -c`), in a session of its own, with the worker's environment plus
GYOZA_RUN_ID, GYOZA_ATTEMPT, GYOZA_WORKER_ID and, when the run was given a GPU, GYOZA_GPU_ID.
When the attempt is cancelled (a stop order, shutdown), or its stdout passes the outputs cap,
its whole process group gets SIGTERM, then SIGKILL after `kill_grace_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from gyoza_grpc.worker.context import RunContext
from gyoza_grpc.worker.op_io import (
    DEFAULT_MAX_OUTPUT_BYTES,
    MAX_LINE,
    OpFailed,
    OutputBuffer,
    StderrReader,
    TokenBucket,
    exit_message,
    over_cap_message,
    parse_info,
    parse_progress,
)
from gyoza_grpc.worker.op_io import parse_outputs as _parse_outputs

__all__ = [
    "CommandFailed",
    "CommandHandler",
    "TokenBucket",
    "parse_info",
    "parse_outputs",
    "parse_progress",
]

_READ_CHUNK = 64 * 1024


class CommandFailed(OpFailed):
    """The command exited non-zero, or its stdout was not a JSON object within the cap."""


def parse_outputs(stdout: bytes) -> dict[str, Any]:
    """The command's stdout as the run's outputs (`op_io.parse_outputs`)."""
    return _parse_outputs(stdout, CommandFailed)


class CommandHandler:
    """Runs `command` for each attempt (see the module notes)."""

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        shell: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        kill_grace_s: float = 3.0,
        info_per_s: float = 2.0,
        info_burst: int = 20,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        if isinstance(command, str):
            self.argv = ["/bin/sh", "-c", command] if shell else shlex.split(command)
        else:
            if shell:
                raise ValueError("shell=True takes the command as one string")
            self.argv = list(command)
        if not self.argv:
            raise ValueError("the command is empty")
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.kill_grace_s = kill_grace_s
        self.info_per_s = info_per_s
        self.info_burst = info_burst
        self.max_output_bytes = max_output_bytes

    def environment(self, ctx: RunContext) -> dict[str, str]:
        env = dict(self.env)
        for name in ("GYOZA_RUN_ID", "GYOZA_ATTEMPT", "GYOZA_GPU_ID", "GYOZA_WORKER_ID"):
            env.pop(name, None)
        env["GYOZA_RUN_ID"] = ctx.run_id
        env["GYOZA_ATTEMPT"] = str(ctx.attempt)
        env["GYOZA_WORKER_ID"] = ctx.worker_id
        if ctx.gpu_id is not None:
            env["GYOZA_GPU_ID"] = str(ctx.gpu_id)
        return env

    async def __call__(self, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.environment(ctx),
                cwd=self.cwd,
                start_new_session=True,
                limit=MAX_LINE,
            )
        except OSError as err:
            raise CommandFailed(f"cannot start {self.argv[0]!r}: {err}") from err
        stderr = StderrReader(ctx, info_per_s=self.info_per_s, info_burst=self.info_burst)
        stdout = OutputBuffer(self.max_output_bytes)
        try:
            await asyncio.gather(
                self._feed(proc, inputs),
                self._read_stdout(proc, stdout),
                self._read_stderr(proc, stderr),
            )
            code = await proc.wait()
        except BaseException:
            # Shielded: a second cancellation must not leave the process running.
            await asyncio.shield(self._kill(proc))
            raise
        stderr.finish()
        if stdout.over:
            raise CommandFailed(over_cap_message(self.max_output_bytes))
        if code != 0:
            raise CommandFailed(exit_message("command", code, stderr.tail_text()))
        return parse_outputs(stdout.value())

    async def _feed(self, proc: asyncio.subprocess.Process, inputs: dict[str, Any]) -> None:
        assert proc.stdin is not None
        data = json.dumps(inputs).encode() + b"\n"
        # A command that does not read its stdin (or exits early) is not an error by itself.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()
            await proc.stdin.wait_closed()

    async def _read_stdout(self, proc: asyncio.subprocess.Process, out: OutputBuffer) -> None:
        """Stdout up to the cap; past it the command is stopped (its outputs are lost)."""
        assert proc.stdout is not None
        while data := await proc.stdout.read(_READ_CHUNK):
            if not out.add(data):
                await self._kill(proc)
                while await proc.stdout.read(_READ_CHUNK):  # to EOF, so the pipe closes
                    pass
                return

    async def _read_stderr(self, proc: asyncio.subprocess.Process, reader: StderrReader) -> None:
        assert proc.stderr is not None
        while True:
            try:
                raw = await proc.stderr.readline()
            except ValueError:  # a line over MAX_LINE: take what there is
                raw = await proc.stderr.read(MAX_LINE)
            if not raw:
                return
            reader.line(raw.decode("utf-8", errors="replace"))

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM to the command's process group, SIGKILL after the grace; waits for it."""
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
