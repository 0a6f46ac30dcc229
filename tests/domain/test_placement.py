"""Pure, table-driven tests of the fit/placement logic (no I/O, no grpc, no database).

A worker's free capacity is its declared resources minus what its runs hold; a run fits when
its cpu and ram_mb fit the free totals and its vram_mb fits on ONE GPU (best fit: the GPU with
the least free VRAM that fits, ties by gpu_id); a run pinned to a gpu_id lands only there.
"""

from __future__ import annotations

import pytest

from gyoza_grpc.domain.model import Constraints
from gyoza_grpc.domain.placement import (
    Capacity,
    Gpu,
    Held,
    Placement,
    free_capacity,
    needs_gpu,
    place,
    take,
)

NO_GPU = Placement(gpu_id=None)


def gpus(**vram: int) -> tuple[Gpu, ...]:
    """gpus(g0=16000, g1=8000) -> (Gpu(0, 16000), Gpu(1, 8000))."""
    return tuple(Gpu(int(name.removeprefix("g")), mb) for name, mb in vram.items())


def cap(cpu: int = 8, ram_mb: int = 16000, **vram: int) -> Capacity:
    return Capacity(cpu=cpu, ram_mb=ram_mb, gpus=gpus(**vram))


def need(
    cpu: int | None = None,
    ram_mb: int | None = None,
    vram_mb: int | None = None,
    gpu_id: int | None = None,
) -> Constraints:
    return Constraints(cpu=cpu, ram_mb=ram_mb, vram_mb=vram_mb, gpu_id=gpu_id)


def on(gpu_id: int | None) -> Placement:
    return Placement(gpu_id=gpu_id)


# -- free capacity after held runs -------------------------------------------------------------

DECLARED = cap(8, 16000, g0=16000, g1=8000)

FREE_CASES: list[tuple[str, list[Held], Capacity]] = [
    ("nothing held", [], DECLARED),
    ("a run without constraints holds nothing", [Held(need())], DECLARED),
    (
        "cpu and ram",
        [Held(need(cpu=2, ram_mb=1000))],
        cap(6, 15000, g0=16000, g1=8000),
    ),
    (
        "vram on the GPU it was given",
        [Held(need(vram_mb=6000), gpu_id=1)],
        cap(8, 16000, g0=16000, g1=2000),
    ),
    (
        "pinned without vram holds no vram",
        [Held(need(cpu=1, gpu_id=0), gpu_id=0)],
        cap(7, 16000, g0=16000, g1=8000),
    ),
    (
        "several runs add up, GPU by GPU",
        [
            Held(need(cpu=1, ram_mb=500, vram_mb=4000), gpu_id=0),
            Held(need(cpu=2, ram_mb=1500, vram_mb=5000), gpu_id=0),
            Held(need(cpu=3, vram_mb=8000), gpu_id=1),
        ],
        cap(2, 14000, g0=7000, g1=0),
    ),
    (
        "a GPU the worker no longer declares is ignored",
        [Held(need(cpu=1, vram_mb=1000), gpu_id=7)],
        cap(7, 16000, g0=16000, g1=8000),
    ),
    (
        "more held than declared (the worker re-declared less) goes negative",
        [Held(need(cpu=10, ram_mb=20000, vram_mb=9000), gpu_id=1)],
        cap(-2, -4000, g0=16000, g1=-1000),
    ),
]


@pytest.mark.parametrize(
    ("held", "expected"), [(h, e) for _, h, e in FREE_CASES], ids=[c[0] for c in FREE_CASES]
)
def test_free_capacity(held: list[Held], expected: Capacity) -> None:
    assert free_capacity(DECLARED, held) == expected
    assert free_capacity(DECLARED, iter(held)) == expected  # any iterable, consumed once


def test_free_capacity_keeps_the_gpu_order() -> None:
    declared = cap(g3=100, g1=200, g2=300)
    free = free_capacity(declared, [Held(need(vram_mb=50), gpu_id=1)])
    assert [g.gpu_id for g in free.gpus] == [3, 1, 2]
    assert free.gpu(1) == Gpu(1, 150)
    assert free.gpu(9) is None


# -- place: where a run fits -------------------------------------------------------------------

PLACE_CASES: list[tuple[str, Constraints, Capacity, Placement | None]] = [
    # cpu / ram boundaries
    ("cpu equal to free fits", need(cpu=4), cap(4, 1000), NO_GPU),
    ("cpu one over free does not", need(cpu=5), cap(4, 1000), None),
    ("ram equal to free fits", need(ram_mb=1000), cap(4, 1000), NO_GPU),
    ("ram one over free does not", need(ram_mb=1001), cap(4, 1000), None),
    ("cpu fits but ram does not", need(cpu=1, ram_mb=2000), cap(4, 1000), None),
    ("ram fits but cpu does not", need(cpu=8, ram_mb=10), cap(4, 1000), None),
    ("both exactly at the limit", need(cpu=4, ram_mb=1000), cap(4, 1000), NO_GPU),
    ("cpu 0 is no requirement", need(cpu=0, ram_mb=0), cap(0, 0), NO_GPU),
    ("cpu on a worker declaring none", need(cpu=1), cap(0, 0), None),
    # no constraints: always fits, and gets no GPU
    ("no constraints, no resources", need(), Capacity(), NO_GPU),
    ("no constraints, GPUs free", need(), cap(g0=16000), NO_GPU),
    ("no constraints, everything taken", need(), cap(0, 0, g0=0), NO_GPU),
    ("no constraints, overcommitted worker", need(), cap(-2, -100, g0=-5), NO_GPU),
    ("ram only, cpu overcommitted", need(ram_mb=10), cap(-2, 100), NO_GPU),
    ("cpu only, ram overcommitted", need(cpu=1), cap(2, -100), NO_GPU),
    ("cpu needed, cpu overcommitted", need(cpu=1), cap(-2, 100), None),
    ("vram 0 and no pin is no GPU requirement", need(vram_mb=0), Capacity(), NO_GPU),
    # vram must fit on ONE GPU
    ("vram equal to a GPU's free fits", need(vram_mb=8000), cap(g0=8000), on(0)),
    ("vram one over a GPU's free does not", need(vram_mb=8001), cap(g0=8000), None),
    ("two half-free GPUs do not add up", need(vram_mb=8000), cap(g0=5000, g1=5000), None),
    ("vram on a worker without GPUs", need(vram_mb=1), cap(), None),
    ("vram fits but cpu does not", need(cpu=9, vram_mb=10), cap(8, g0=100), None),
    ("cpu, ram and vram all fit", need(cpu=8, ram_mb=16000, vram_mb=100), cap(g0=100), on(0)),
    # best fit: the least free VRAM that fits, ties by gpu_id
    ("best fit: smallest that fits", need(vram_mb=4000), cap(g0=16000, g1=8000, g2=4000), on(2)),
    ("best fit: skips one too small", need(vram_mb=4001), cap(g0=16000, g1=8000, g2=4000), on(1)),
    ("best fit: only the largest", need(vram_mb=9000), cap(g0=16000, g1=8000, g2=4000), on(0)),
    ("best fit ignores declaration order", need(vram_mb=100), cap(g5=900, g2=300, g9=600), on(2)),
    ("tie broken by lowest gpu_id", need(vram_mb=100), cap(g3=8000, g1=8000, g2=9000), on(1)),
    ("tie of two exact fits", need(vram_mb=5000), cap(g1=5000, g0=5000), on(0)),
    # pinned runs land only on their GPU
    (
        "pinned lands on its GPU, not the best fit",
        need(vram_mb=4000, gpu_id=0),
        cap(g0=16000, g1=8000),
        on(0),
    ),
    (
        "pinned GPU too small: no other GPU",
        need(vram_mb=9000, gpu_id=1),
        cap(g0=16000, g1=8000),
        None,
    ),
    ("pinned to a GPU the worker lacks", need(vram_mb=10, gpu_id=2), cap(g0=16000, g1=8000), None),
    ("pinned without vram lands on that GPU", need(gpu_id=1), cap(g0=16000, g1=8000), on(1)),
    ("pinned without vram, GPU fully used", need(gpu_id=1), cap(g0=16000, g1=0), on(1)),
    ("pinned without vram, GPU overcommitted", need(gpu_id=1), cap(g0=16000, g1=-500), on(1)),
    ("pinned without vram, GPU missing", need(gpu_id=2), cap(g0=16000, g1=8000), None),
    ("pinned without vram, no GPUs at all", need(gpu_id=0), cap(), None),
    ("pinned with vram 0, GPU exists", need(vram_mb=0, gpu_id=0), cap(g0=0), on(0)),
    ("pinned still needs cpu", need(cpu=9, gpu_id=0), cap(8, g0=100), None),
]


@pytest.mark.parametrize(
    ("run_needs", "free", "expected"),
    [c[1:] for c in PLACE_CASES],
    ids=[c[0] for c in PLACE_CASES],
)
def test_place(run_needs: Constraints, free: Capacity, expected: Placement | None) -> None:
    assert place(run_needs, free) == expected


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (need(), False),
        (need(cpu=4, ram_mb=100), False),
        (need(vram_mb=0), False),
        (need(vram_mb=1), True),
        (need(gpu_id=0), True),
        (need(vram_mb=0, gpu_id=3), True),
    ],
)
def test_needs_gpu(c: Constraints, expected: bool) -> None:
    assert needs_gpu(c) is expected


# -- take: the accounting after a claim --------------------------------------------------------

TAKE_CASES: list[tuple[str, Capacity, Constraints, int | None, Capacity]] = [
    ("nothing", cap(4, 100, g0=10), need(), None, cap(4, 100, g0=10)),
    ("cpu and ram", cap(4, 100, g0=10), need(cpu=3, ram_mb=40), None, cap(1, 60, g0=10)),
    ("vram from the chosen GPU only", cap(g0=10, g1=10), need(vram_mb=4), 1, cap(g0=10, g1=6)),
    ("pinned without vram", cap(g0=10), need(gpu_id=0), 0, cap(g0=10)),
    ("vram without a GPU charges no GPU", cap(g0=10), need(vram_mb=4), None, cap(g0=10)),
    ("down to exactly zero", cap(2, 50, g0=8), need(2, 50, 8), 0, cap(0, 0, g0=0)),
    ("an unknown GPU changes nothing", cap(g0=10), need(vram_mb=4), 5, cap(g0=10)),
]


@pytest.mark.parametrize(
    ("free", "run_needs", "gpu_id", "expected"),
    [c[1:] for c in TAKE_CASES],
    ids=[c[0] for c in TAKE_CASES],
)
def test_take(
    free: Capacity, run_needs: Constraints, gpu_id: int | None, expected: Capacity
) -> None:
    assert take(free, run_needs, gpu_id) == expected


def test_take_agrees_with_free_capacity() -> None:
    """Taking runs one by one after a claim is what free_capacity computes from holdings."""
    held = [
        Held(need(cpu=1, ram_mb=100, vram_mb=3000), 0),
        Held(need(cpu=2, vram_mb=1000), 1),
        Held(need(ram_mb=50, gpu_id=1), 1),
        Held(need()),
    ]
    free = DECLARED
    for h in held:
        free = take(free, h.constraints, h.gpu_id)
    assert free == free_capacity(DECLARED, held) == cap(5, 15850, g0=13000, g1=7000)


@pytest.mark.parametrize(
    ("start", "run_needs", "expected_gpus"),
    [
        # Best fit packs the smaller GPU first and keeps the large one free for long.
        (cap(g0=8000, g1=7000), need(vram_mb=3000), [1, 1, 0, 0]),
        # Pinned runs fill only their GPU.
        (cap(g0=8000, g1=7000), need(vram_mb=3000, gpu_id=0), [0, 0]),
        # cpu runs out before vram does.
        (cap(cpu=3, g0=100000), need(cpu=1, vram_mb=1), [0, 0, 0]),
        # No GPU needed: limited by cpu only.
        (cap(cpu=2, g0=0), need(cpu=1), [None, None]),
    ],
)
def test_place_then_take_until_full(
    start: Capacity, run_needs: Constraints, expected_gpus: list[int | None]
) -> None:
    """A claim loop: place, take, repeat; stops when nothing fits, never overcommitting."""
    free, got = start, []
    while (p := place(run_needs, free)) is not None:
        got.append(p.gpu_id)
        free = take(free, run_needs, p.gpu_id)
        assert free.cpu >= 0 and free.ram_mb >= 0
        assert all(g.vram_mb >= 0 for g in free.gpus)
        assert len(got) <= 100, "placement never ran out"
    assert got == expected_gpus
