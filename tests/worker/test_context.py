"""RunContext: notes from the loop and from threads, in order, folded; cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gyoza_grpc.worker.context import MAX_INFO_LEN, Note, RunContext, fold
from tests.worker.helpers import make_claim


def test_fold_keeps_only_the_last_of_consecutive_progress_notes() -> None:
    p = [Note(progress=n) for n in range(4)]
    i = [Note(msg=m) for m in "ab"]
    assert fold([p[0], p[1], i[0], p[2], p[3], i[1]]) == [p[1], i[0], p[3], i[1]]
    assert fold([]) == []


async def test_notes_from_a_thread_arrive_in_order_and_close_ends_them() -> None:
    ctx = RunContext(make_claim("r", 2, inputs={"n": 3.0}, gpu_id=1, vram_mb=10), "w")
    assert (ctx.run_id, ctx.attempt, ctx.gpu_id, ctx.inputs) == ("r", 2, 1, {"n": 3})

    def work() -> None:
        ctx.info("first")
        for n in (10, 20, 30):
            ctx.progress(n)
        ctx.info("x" * (MAX_INFO_LEN + 10))

    await asyncio.to_thread(work)
    ctx.close()
    ctx.info("after close: dropped")
    batch = await ctx.next_notes()
    assert batch == [Note(msg="first"), Note(progress=30), Note(msg="x" * MAX_INFO_LEN)]
    assert await ctx.next_notes() is None


async def test_progress_is_checked() -> None:
    ctx = RunContext(make_claim(), "w")
    with pytest.raises(ValueError, match="between 0 and 100"):
        ctx.progress(101)
    with pytest.raises(TypeError):
        ctx.progress("50")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ctx.progress(True)
    ctx.progress(42.9)
    ctx.close()
    assert await ctx.next_notes() == [Note(progress=42)]


async def test_cancel_wakes_a_waiting_thread_and_keeps_the_first_reason() -> None:
    ctx = RunContext(make_claim(), "w")
    woke = threading.Event()

    def wait() -> None:
        if ctx.wait_cancelled(5):
            woke.set()

    thread = asyncio.create_task(asyncio.to_thread(wait))
    await asyncio.sleep(0.02)
    assert not ctx.cancelled
    ctx.cancel("cancelled")
    ctx.cancel("shutdown")
    await asyncio.wait_for(thread, 2)
    assert woke.is_set() and ctx.cancelled and ctx.stop_reason == "cancelled"
