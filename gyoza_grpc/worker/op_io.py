"""The op contract, the same for every executor (a local command, a container image), so an op
moves from one to the other unchanged:

- the run's inputs arrive on stdin as one JSON object, then stdin is closed;
- its outputs are one JSON object on stdout (empty stdout means `{}`), at most
  `max_output_bytes` bytes (the server's own cap on outputs is 1 MiB by default);
- a stderr line `progress: N` (N from 0 to 100) reports PROGRESS; a line `info: TEXT` records an
  INFO event, at most `info_per_s` a second on average (bursts of `info_burst`; the lines over
  that are counted and the count recorded once at the end); every other stderr line only goes to
  the worker's log (DEBUG) and to the tail kept for a failure;
- exit code 0 completes the run; any other fails it with the code and the tail of stderr.

This module holds the parsing, the caps and the failure messages; the executors move bytes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from typing import Any

from gyoza_grpc.worker.context import RunContext

log = logging.getLogger("gyoza_grpc.worker.op")

_PROGRESS = re.compile(r"^\s*progress:\s*(-?\d+(?:\.\d+)?)\s*%?\s*$", re.IGNORECASE)
_INFO = re.compile(r"^\s*info:\s?(.*)$", re.IGNORECASE | re.DOTALL)
TAIL_LINES = 20
TAIL_CHARS = 2000
MAX_LINE = 64 * 1024
# The server's default cap on a run's outputs (`serve --max-json-bytes`).
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024


class OpFailed(Exception):
    """The op broke the contract or failed: the message is the run's error_message."""


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


def parse_outputs(stdout: bytes, error: type[OpFailed] = OpFailed) -> dict[str, Any]:
    """The op's stdout as the run's outputs: a JSON object (empty means `{}`)."""
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(
            f"stdout is not JSON ({err.msg} at line {err.lineno} column {err.colno}): "
            f"{_shorten(text)}"
        ) from None
    except RecursionError:
        raise error(f"stdout is JSON nested too deeply: {_shorten(text)}") from None
    if not isinstance(doc, dict):
        raise error(f"stdout is JSON but not an object: {_shorten(text)}")
    return doc


def over_cap_message(max_output_bytes: int) -> str:
    return (
        f"stdout passed the outputs cap of {max_output_bytes} bytes: an op's outputs are one "
        f"JSON object of at most {max_output_bytes} bytes (worker --max-output-bytes)"
    )


def exit_message(what: str, code: int, tail: str) -> str:
    """`what` exited non-zero (or, for a negative code, was killed by a signal)."""
    how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"{what} {how}" + (f": {tail}" if tail else "")


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class OutputBuffer:
    """Stdout as it arrives, up to a cap: `add` turns False once the op wrote more."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self.size = 0
        self.over = False

    def add(self, data: bytes) -> bool:
        if self.over:
            return False
        self.size += len(data)
        if self.size > self.max_bytes:
            self.over = True
            self._chunks.clear()
            return False
        self._chunks.append(data)
        return True

    def value(self) -> bytes:
        return b"".join(self._chunks)


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
    """Turns the op's stderr lines into notes and keeps their tail. Takes whole lines
    (`line`) or chunks as they arrive (`feed`, split at newlines; `finish` flushes the rest)."""

    def __init__(self, ctx: RunContext, *, info_per_s: float, info_burst: int) -> None:
        self.ctx = ctx
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.bucket = TokenBucket(info_per_s, info_burst)
        self.dropped_info = 0
        self._partial = b""

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self.line(raw.decode("utf-8", errors="replace"))
        if len(self._partial) > MAX_LINE:  # a line too long: take what there is
            self.line(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""

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
        if self._partial:
            self.line(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""
        if self.dropped_info:
            self.ctx.info(f"{self.dropped_info} info line(s) dropped (over the rate limit)")
            self.dropped_info = 0

    def tail_text(self) -> str:
        text = "\n".join(self.tail).strip()
        return text[-TAIL_CHARS:]
