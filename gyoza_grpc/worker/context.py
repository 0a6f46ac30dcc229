"""RunContext: what a handler gets besides its inputs.

`progress()` and `info()` only queue a note and return at once, from the event loop or from the
handler's thread alike; the worker sends the notes as PROGRESS and INFO events, in order,
with consecutive progress notes folded into the latest one. `cancelled` turns true when the
worker must abandon the run (a stop order, the run's attempt was superseded, or shutdown):
a coroutine handler is also cancelled, a plain function should look at `cancelled` (or wait on
`wait_cancelled()`) and return early, since a thread cannot be interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from gyoza_grpc.worker.claims import ClaimedRun

MAX_INFO_LEN = 4096


@dataclass(frozen=True, slots=True)
class Note:
    """One PROGRESS (progress set) or INFO (msg set) report from a handler."""

    progress: int | None = None
    msg: str = ""


def fold(notes: list[Note]) -> list[Note]:
    """Consecutive progress notes become the last of them; info notes all stay, in order."""
    out: list[Note] = []
    for note in notes:
        if note.progress is not None and out and out[-1].progress is not None:
            out[-1] = note
        else:
            out.append(note)
    return out


class RunContext:
    """The run a handler works on, and its way to report progress and notice a stop."""

    def __init__(
        self,
        claim: ClaimedRun,
        worker_id: str,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.claim = claim
        self.worker_id = worker_id
        self._loop = loop or asyncio.get_running_loop()
        self._notes: asyncio.Queue[Note | None] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._closed = False
        self.stop_reason = ""

    @property
    def run_id(self) -> str:
        return self.claim.run_id

    @property
    def attempt(self) -> int:
        return self.claim.attempt

    @property
    def gpu_id(self) -> int | None:
        """The GPU the server chose for the run, when it asked for VRAM or a GPU."""
        return self.claim.gpu_id

    @property
    def inputs(self) -> dict[str, Any]:
        return self.claim.inputs

    # -- for handlers -----------------------------------------------------------------------

    def progress(self, percent: int) -> None:
        """Report progress, 0 to 100 (a float is truncated)."""
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise TypeError(f"progress must be a number, got {type(percent).__name__}")
        value = int(percent)
        if not 0 <= value <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {percent}")
        self._put(Note(progress=value))

    def info(self, msg: str) -> None:
        """Record a line on the run's timeline (an INFO event); long lines are cut."""
        self._put(Note(msg=str(msg)[:MAX_INFO_LEN]))

    @property
    def cancelled(self) -> bool:
        """True once the worker must abandon the run: return as soon as you can."""
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout_s: float | None = None) -> bool:
        """Block (a plain function's thread) until cancelled or `timeout_s`; True if cancelled."""
        return self._cancelled.wait(timeout_s)

    # -- for the worker ---------------------------------------------------------------------

    def cancel(self, reason: str) -> None:
        if not self._cancelled.is_set():
            self.stop_reason = reason
            self._cancelled.set()

    @property
    def closed(self) -> bool:
        """The handler has returned: the attempt is ending (its final report follows)."""
        return self._closed

    def close(self) -> None:
        """No more notes: the handler returned. Notes already queued are still sent."""
        if not self._closed:
            self._closed = True
            self._put(None, force=True)

    async def next_notes(self) -> list[Note] | None:
        """The notes queued so far (at least one, waiting for it), folded; None once closed
        and drained."""
        first = await self._notes.get()
        if first is None:
            return None
        batch = [first]
        while not self._notes.empty():
            note = self._notes.get_nowait()
            if note is None:
                self._notes.put_nowait(None)  # seen next time, after this batch
                break
            batch.append(note)
        return fold(batch)

    def _put(self, note: Note | None, *, force: bool = False) -> None:
        if self._closed and not force:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: the worker has stopped
            self._loop.call_soon_threadsafe(self._notes.put_nowait, note)
