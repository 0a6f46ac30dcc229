"""Where a run fits: a worker's free capacity and the GPU a run lands on. Pure.

A worker declares CPU, RAM and GPUs (each with its VRAM). Each of its ASSIGNED and RUNNING
runs holds its declared constraints until it ends (VRAM on the GPU it was given). A run fits
when its cpu and ram_mb fit the free totals and its vram_mb fits on one GPU; a run pinned to a
gpu_id lands only on that GPU. Among the GPUs that fit, the one with the least free VRAM is
chosen (best fit), which keeps large GPUs free for large runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from gyoza_grpc.domain.model import Constraints


@dataclass(frozen=True, slots=True)
class Gpu:
    gpu_id: int
    vram_mb: int


@dataclass(frozen=True, slots=True)
class Capacity:
    """Declared resources of a worker, or what is left of them."""

    cpu: int = 0
    ram_mb: int = 0
    gpus: tuple[Gpu, ...] = ()

    def gpu(self, gpu_id: int) -> Gpu | None:
        return next((g for g in self.gpus if g.gpu_id == gpu_id), None)


@dataclass(frozen=True, slots=True)
class Held:
    """What one of a worker's runs holds."""

    constraints: Constraints
    gpu_id: int | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """A run fits; gpu_id is the GPU it gets (None when it needs no GPU)."""

    gpu_id: int | None


def needs_gpu(c: Constraints) -> bool:
    return bool(c.vram_mb) or c.gpu_id is not None


def take(free: Capacity, need: Constraints, gpu_id: int | None) -> Capacity:
    """`free` less what a run with constraints `need` on GPU `gpu_id` holds."""
    gpus = free.gpus
    if gpu_id is not None and need.vram_mb:
        gpus = tuple(
            replace(g, vram_mb=g.vram_mb - need.vram_mb) if g.gpu_id == gpu_id else g for g in gpus
        )
    return Capacity(
        cpu=free.cpu - (need.cpu or 0), ram_mb=free.ram_mb - (need.ram_mb or 0), gpus=gpus
    )


def free_capacity(declared: Capacity, held: Iterable[Held]) -> Capacity:
    free = declared
    for h in held:
        free = take(free, h.constraints, h.gpu_id)
    return free


def place(need: Constraints, free: Capacity) -> Placement | None:
    """Where a run with `need` fits in `free`, or None. A requirement of 0 (or none) needs
    nothing, so it fits even a worker that holds more than it declares (free below zero)."""
    cpu, ram = need.cpu or 0, need.ram_mb or 0
    if (cpu and cpu > free.cpu) or (ram and ram > free.ram_mb):
        return None
    if not needs_gpu(need):
        return Placement(gpu_id=None)
    vram = need.vram_mb or 0
    candidates = [
        g
        for g in free.gpus
        if (not vram or g.vram_mb >= vram) and (need.gpu_id is None or g.gpu_id == need.gpu_id)
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda g: (g.vram_mb, g.gpu_id))
    return Placement(gpu_id=best.gpu_id)
