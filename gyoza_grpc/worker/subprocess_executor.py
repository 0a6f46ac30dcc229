"""A handler that runs each attempt through a command: a real worker without containers.

- The run's inputs go to the command's stdin as one JSON object; stdin is then closed.
- Its stdout must be one JSON object: the run's outputs (empty stdout means `{}`).
- A stderr line `progress: N` (N from 0 to 100) reports PROGRESS; a line `info: TEXT` records an
  INFO event, at most `info_per_s` a second on average (bursts of `info_burst`; the lines over
  that are counted and the count recorded once at the end). Every other stderr line only goes
  to the worker's log (DEBUG) and to the tail kept for a failure.
- Exit code 0 completes the run; any other exit fails it with the code and the tail of stderr.
- The command runs without a shell (`shlex.split`), unless `shell=True` (`/bin/sh -c`), in a
  session of its own, with the worker's environment plus GYOZA_RUN_ID, GYOZA_ATTEMPT,
  GYOZA_WORKER_ID and, when the run was given a GPU, GYOZA_GPU_ID. When the attempt is
  cancelled (a stop order, shutdown) its whole process group gets SIGTERM, then SIGKILL after
  `kill_grace_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from gyoza_grpc.worker.context import RunContext

log = logging.getLogger("gyoza_grpc.worker.command")

_PROGRESS = re.compile(r"^\s*progress:\s*(-?\d+(?:\.\d+)?)\s*%?\s*$", re.IGNORECASE)
_INFO = re.compile(r"^\s*info:\s?(.*)$", re.IGNORECASE | re.DOTALL)
TAIL_LINES = 20
TAIL_CHARS = 2000
MAX_LINE = 64 * 1024


class CommandFailed(Exception):
    """The command exited non-zero, or its stdout was not a JSON object."""


def parse_progress(line: str) -> int | None:
    """The percentage of a `progress: N` line (0-100, a fraction truncated), else None."""
    match = _PROGRESS.match(line)
    if match is None:
        return None
    value = float(match[1])
    return int(value) if 0 <= value <= 100 else None


def parse_info(line: str) -> str | None:
    match = _INFO.match(line)
    return None if match is None else match[1].rstrip()


def parse_outputs(stdout: bytes) -> dict[str, Any]:
    """The command's stdout as the run's outputs: a JSON object (empty means `{}`)."""
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise CommandFailed(
            f"stdout is not JSON ({err.msg} at line {err.lineno} column {err.colno}): "
            f"{_shorten(text)}"
        ) from None
    if not isinstance(doc, dict):
        raise CommandFailed(f"stdout is JSON but not an object: {_shorten(text)}")
    return doc


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class TokenBucket:
    """`rate_per_s` on average, bursts of `burst`."""

    def __init__(self, rate_per_s: float, burst: int, now: float | None = None) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class StderrReader:
    """Turns the command's stderr lines into notes and keeps their tail."""

    def __init__(self, ctx: RunContext, *, info_per_s: float, info_burst: int) -> None:
        self.ctx = ctx
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.bucket = TokenBucket(info_per_s, info_burst)
        self.dropped_info = 0

    def line(self, raw: str) -> None:
        line = raw.rstrip("\r\n")
        progress = parse_progress(line)
        if progress is not None:
            self.ctx.progress(progress)
            return
        info = parse_info(line)
        if info is not None:
            if self.bucket.take():
                self.ctx.info(info)
            else:
                self.dropped_info += 1
            return
        self.tail.append(line)
        log.debug("run %s: %s", self.ctx.run_id, line)

    def finish(self) -> None:
        if self.dropped_info:
            self.ctx.info(f"{self.dropped_info} info line(s) dropped (over the rate limit)")

    def tail_text(self) -> str:
        text = "\n".join(self.tail).strip()
        return text[-TAIL_CHARS:]


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
        try:
            _, stdout, _ = await asyncio.gather(
                self._feed(proc, inputs), self._read_all(proc), self._read_stderr(proc, stderr)
            )
            code = await proc.wait()
        except BaseException:
            # Shielded: a second cancellation must not leave the process running.
            await asyncio.shield(self._kill(proc))
            raise
        stderr.finish()
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = stderr.tail_text()
            raise CommandFailed(f"command {how}" + (f": {tail}" if tail else ""))
        return parse_outputs(stdout)

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

    async def _read_all(self, proc: asyncio.subprocess.Process) -> bytes:
        assert proc.stdout is not None
        return await proc.stdout.read()

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
