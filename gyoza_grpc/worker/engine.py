"""What a handler runs on, when the worker must reach it to run anything (a container engine),
and the task that watches it.

A worker whose engine does not answer claims nothing: claimed runs would only be handed back
(or worse, failed) one after another. It says why in its log, once per change, and in every
heartbeat (`Worker.not_ready_reason`). The handler marks the engine unreachable itself the
moment a call fails to connect, so the claim loop stops at once; the watch checks it every
`retry_s` until it answers again, then every `check_s`. Each time the engine (again) answers,
and before the first claim, what earlier attempts of this worker left behind there (containers
of a process that was killed) is removed (`sweep`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gyoza_grpc.worker.capacity import Key

log = logging.getLogger("gyoza_grpc.worker")

DEFAULT_CHECK_S = 5.0
DEFAULT_RETRY_S = 2.0


@runtime_checkable
class Engine(Protocol):
    @property
    def not_ready_reason(self) -> str:
        """Why nothing can run now, as last seen ("" when the engine answered)."""
        ...

    async def check(self) -> str:
        """Ask the engine now; returns (and remembers) `not_ready_reason`."""
        ...

    async def sweep(self, worker_id: str, keep: set[Key]) -> int:
        """Remove what this worker's attempts left on the engine, except those in `keep`
        (attempts it still runs); returns how many things were removed."""
        ...

    async def close(self) -> None: ...


class EngineWatch:
    """Keeps `ready` set while the engine answers (see the module notes)."""

    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        *,
        keep: Callable[[], set[Key]],
        on_change: Callable[[], None] = lambda: None,
        check_s: float = DEFAULT_CHECK_S,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.keep = keep
        self.on_change = on_change
        self.check_s = check_s
        self.retry_s = retry_s
        self.ready = asyncio.Event()
        self._reported = ""
        self._swept = False

    @property
    def not_ready_reason(self) -> str:
        """What the worker tells the server: the engine's trouble, or "" when it can claim."""
        reason = self.engine.not_ready_reason
        if reason:
            return reason
        return "" if self.ready.is_set() else "starting: the container engine is not checked yet"

    async def wait_ready(self) -> None:
        """Until the engine answers (returns at once while it does)."""
        while self.engine.not_ready_reason or not self.ready.is_set():
            if reason := self.engine.not_ready_reason:  # a call just failed to connect
                self._not_ready(reason)
            await self.ready.wait()

    def _not_ready(self, reason: str) -> None:
        self.ready.clear()
        self._swept = False
        if reason != self._reported:
            log.warning(
                "not claiming: %s; checking again every %gs",
                reason,
                self.retry_s,
                extra={"action": "engine_unreachable", "worker_id": self.worker_id},
            )
            self._reported = reason
            self.on_change()

    async def check_once(self) -> str:
        reason = await self.engine.check()
        if reason:
            self._not_ready(reason)
        else:
            if not self._swept:
                removed = await self.engine.sweep(self.worker_id, self.keep())
                self._swept = True
                if removed:
                    log.warning(
                        "removed %d container(s) left by earlier attempts of worker %s",
                        removed,
                        self.worker_id,
                        extra={"action": "remove_orphans", "worker_id": self.worker_id},
                    )
            if self._reported:
                log.info("the container engine answers again: claiming")
                self._reported = ""
                self.on_change()
            self.ready.set()
        return reason

    async def run(self) -> None:
        while True:
            try:
                reason = await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # e.g. the sweep failed halfway: try again soon
                log.warning("container engine check failed: %s", err)
                reason = str(err) or type(err).__name__
            await asyncio.sleep(self.retry_s if reason or not self.ready.is_set() else self.check_s)
