"""The worker's own count of what it holds: fit on the server's chosen GPU, waiting, room."""

from __future__ import annotations

import asyncio

import pytest

from gyoza_grpc.domain.model import Constraints
from gyoza_grpc.domain.placement import Capacity, Gpu
from gyoza_grpc.worker.capacity import DoesNotFit, LocalCapacity, fits

DECLARED = Capacity(cpu=4, ram_mb=1000, gpus=(Gpu(0, 8000), Gpu(1, 4000)))


@pytest.mark.parametrize(
    ("need", "gpu_id", "expected"),
    [
        (Constraints(), None, True),
        (Constraints(cpu=4, ram_mb=1000), None, True),
        (Constraints(cpu=5), None, False),
        (Constraints(ram_mb=1001), None, False),
        (Constraints(vram_mb=8000), 0, True),
        (Constraints(vram_mb=8000), 1, False),  # fits the worker, not the GPU it was given
        (Constraints(vram_mb=100), None, False),  # VRAM but no GPU chosen
        (Constraints(vram_mb=100), 7, False),  # a GPU this worker does not have
        (Constraints(gpu_id=1), 1, True),  # pinned without VRAM holds nothing
    ],
)
def test_fits(need: Constraints, gpu_id: int | None, expected: bool) -> None:
    assert fits(need, gpu_id, DECLARED) is expected


async def test_hold_waits_until_the_run_fits_and_releases_on_exit() -> None:
    cap = LocalCapacity(DECLARED)
    async with cap.hold(("a", 1), Constraints(cpu=3, vram_mb=6000), 0):
        assert cap.free == Capacity(cpu=1, ram_mb=1000, gpus=(Gpu(0, 2000), Gpu(1, 4000)))
        second = asyncio.create_task(_hold_briefly(cap, ("b", 1), Constraints(cpu=2), None))
        await asyncio.sleep(0.05)
        assert not second.done() and cap.waiting == 1
        assert not cap.has_room()  # something waits to fit: claim nothing more
        third = asyncio.create_task(_hold_briefly(cap, ("c", 1), Constraints(vram_mb=4000), 1))
        await asyncio.wait_for(third, 1)  # fits beside the first: does not wait behind b
    await asyncio.wait_for(second, 1)
    assert cap.held == 0 and cap.free == DECLARED and cap.waiting == 0


async def _hold_briefly(
    cap: LocalCapacity, key: tuple[str, int], need: Constraints, gpu_id: int | None
) -> None:
    async with cap.hold(key, need, gpu_id):
        await asyncio.sleep(0.01)


async def test_a_cancelled_wait_and_a_cancelled_holder_leak_nothing() -> None:
    cap = LocalCapacity(Capacity(cpu=1))
    entered = asyncio.Event()

    async def holder() -> None:
        async with cap.hold(("a", 1), Constraints(cpu=1), None):
            entered.set()
            await asyncio.sleep(60)

    first = asyncio.create_task(holder())
    await entered.wait()
    waiting = asyncio.create_task(_hold_briefly(cap, ("b", 1), Constraints(cpu=1), None))
    await asyncio.sleep(0.02)
    waiting.cancel()
    first.cancel()
    await asyncio.gather(first, waiting, return_exceptions=True)
    assert cap.held == 0 and cap.waiting == 0 and cap.free == Capacity(cpu=1)


async def test_a_run_that_can_never_fit_is_refused_at_once() -> None:
    cap = LocalCapacity(DECLARED)
    with pytest.raises(DoesNotFit, match="more than this worker declared"):
        async with cap.hold(("a", 1), Constraints(cpu=8), None):
            pass


def test_room_needs_a_free_cpu_when_cpus_are_declared() -> None:
    cap = LocalCapacity(Capacity(cpu=2))
    assert cap.has_room()
    assert cap.try_hold(("a", 1), Constraints(cpu=2), None)
    assert not cap.has_room()
    cap.release(("a", 1))
    assert cap.has_room()
    no_cpus = LocalCapacity(Capacity())
    assert no_cpus.try_hold(("a", 1), Constraints(), None)
    assert no_cpus.has_room()  # declared none: only max_concurrency bounds it
    with pytest.raises(ValueError, match="already held"):
        no_cpus.try_hold(("a", 1), Constraints(), None)
