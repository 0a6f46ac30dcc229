"""What this worker holds, counted by the worker itself.

The server hands a worker only runs that fit its free capacity, counted from the runs it
holds in the database. The worker keeps its own count as well, from the same constraints
and with the same arithmetic (`gyoza_grpc.domain.placement`), so that it never runs more
than it declared even when the two views differ for a moment: a run the server no longer
counts (cancelled, reassigned) may still be winding down here. A run is started only once it
fits what the runs already started leave free; until then it waits (its slot is taken).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gyoza_grpc.domain.model import Constraints
from gyoza_grpc.domain.placement import Capacity, Held, free_capacity

Key = tuple[str, int]  # (run_id, attempt)


class DoesNotFit(ValueError):
    """A run needs more than this worker declared: it can never run here."""


def fits(need: Constraints, gpu_id: int | None, free: Capacity) -> bool:
    """Whether a run needing `need`, on GPU `gpu_id` (as the server chose), fits `free`."""
    if (need.cpu or 0) > free.cpu or (need.ram_mb or 0) > free.ram_mb:
        return False
    if not need.vram_mb:
        return True
    gpu = None if gpu_id is None else free.gpu(gpu_id)
    return gpu is not None and gpu.vram_mb >= need.vram_mb


class LocalCapacity:
    """The worker's declared resources and the runs it has started on them."""

    def __init__(self, declared: Capacity) -> None:
        self.declared = declared
        self._held: dict[Key, Held] = {}
        self._waiting = 0
        self._released = asyncio.Event()

    @property
    def free(self) -> Capacity:
        return free_capacity(self.declared, self._held.values())

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def waiting(self) -> int:
        """Runs claimed but not started because they do not fit yet."""
        return self._waiting

    def could_ever_fit(self, need: Constraints, gpu_id: int | None) -> bool:
        return fits(need, gpu_id, self.declared)

    def has_room(self) -> bool:
        """Worth asking for more work: nothing is waiting to fit, and a worker that declared
        CPUs still has one free (a run asking for no CPU waits for the next free one)."""
        if self._waiting:
            return False
        return self.declared.cpu <= 0 or self.free.cpu > 0

    def try_hold(self, key: Key, need: Constraints, gpu_id: int | None) -> bool:
        if key in self._held:
            raise ValueError(f"run {key[0]} attempt {key[1]} is already held")
        if not fits(need, gpu_id, self.free):
            return False
        self._held[key] = Held(need, gpu_id if need.vram_mb else None)
        return True

    def release(self, key: Key) -> None:
        if self._held.pop(key, None) is not None:
            self._released.set()
            self._released = asyncio.Event()

    @asynccontextmanager
    async def hold(self, key: Key, need: Constraints, gpu_id: int | None) -> AsyncIterator[None]:
        """Hold `need` for the block, waiting until it fits (DoesNotFit if it never can)."""
        if not self.could_ever_fit(need, gpu_id):
            raise DoesNotFit(
                f"the run needs {_describe(need, gpu_id)}, more than this worker declared"
            )
        self._waiting += 1
        try:
            while not self.try_hold(key, need, gpu_id):
                await self._released.wait()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self.release(key)


def _describe(need: Constraints, gpu_id: int | None) -> str:
    parts = [f"cpu {need.cpu or 0}", f"ram_mb {need.ram_mb or 0}"]
    if need.vram_mb:
        parts.append(f"vram_mb {need.vram_mb} on GPU {gpu_id}")
    return ", ".join(parts)
