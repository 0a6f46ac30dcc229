"""The blocking client's event loop thread: results and errors cross over, an interrupted wait
cancels its coroutine, an abandoned iteration closes its generator, a stop never strands a
waiting thread."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from gyoza_grpc.client.portal import LoopThread


@pytest.fixture
def portal() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    try:
        yield loop_thread
    finally:
        loop_thread.stop()


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


async def _fail() -> None:
    raise ValueError("from the loop")


def test_results_and_errors_cross_over(portal: LoopThread) -> None:
    assert portal.call(_answer()) == 42
    with pytest.raises(ValueError, match="from the loop"):
        portal.call(_fail())


def test_an_abandoned_iteration_closes_its_generator_on_the_loop(portal: LoopThread) -> None:
    closed = threading.Event()

    async def numbers() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    got = []
    for n in portal.iterate(numbers()):
        got.append(n)
        if n == 2:
            break
    assert got == [0, 1, 2] and closed.is_set()
    assert list(portal.iterate(_three())) == [0, 1, 2]


async def _three() -> AsyncIterator[int]:
    for n in range(3):
        yield n


def test_ctrl_c_while_waiting_cancels_the_coroutine(portal: LoopThread) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def ctrl_c() -> None:  # a real SIGINT to the main thread, which waits on a lock
        if started.wait(30):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    timer = threading.Thread(target=ctrl_c)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        portal.call(forever())
    timer.join()
    assert cancelled.wait(30)


def test_a_stop_ends_what_other_threads_wait_for(portal: LoopThread) -> None:
    started = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    def waiter() -> None:
        try:
            portal.call(forever())
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert started.wait(30)
    portal.stop()
    thread.join(30)
    assert not thread.is_alive() and outcome  # cancelled, not stranded
    with pytest.raises(RuntimeError, match="closed"):
        portal.call(_answer())
