"""An event loop on a private thread, for blocking code to run coroutines on.

The blocking `Client` runs every call of its `AsyncClient` here, so there is one
implementation of each call. A call that is interrupted in the calling thread (Ctrl-C raises
KeyboardInterrupt there) cancels its coroutine on the loop, and an abandoned iteration closes
its async generator there (cancelling its stream).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an asyncio loop until `stop()`."""

    def __init__(self, name: str = "gyoza-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._stopped = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            try:
                # What other threads still wait for ends (cancelled) rather than hanging.
                left = asyncio.all_tasks(self._loop)
                for task in left:
                    task.cancel()
                self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (its exception is raised here).
        Whatever interrupts the wait (KeyboardInterrupt) cancels the coroutine."""
        handle = _Handle()
        try:  # a KeyboardInterrupt can strike anywhere, even while the call is scheduled
            with self._lock:
                if self._stopped:
                    coro.close()
                    raise RuntimeError("the client is closed")
                future = asyncio.run_coroutine_threadsafe(handle.run(coro), self._loop)
            return future.result()
        except BaseException:
            with self._lock:
                if not self._stopped:
                    self._loop.call_soon_threadsafe(handle.cancel)
            raise

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """The items of an async iterator, each fetched on the loop. Leaving the loop early
        (break, an exception, garbage collection) closes the iterator on the loop."""
        # Whether the iterator waits at a `yield` (or has not started), where closing it is
        # safe. After a failed or interrupted step it is not: an exception ended it, or the
        # cancellation is ending it on the loop.
        suspended = True
        try:
            while True:
                suspended = False
                batch = self.call(_next(items))
                suspended = True
                if not batch:
                    return
                yield batch[0]
        finally:
            aclose = getattr(items, "aclose", None)
            if suspended and aclose is not None and not self._stopped:
                self.call(aclose())

    def stop(self) -> None:
        """Stop the loop and wait for its thread (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class _Handle:
    """One call's task, known on the loop as soon as it starts, so that the calling thread
    can cancel it even if it was interrupted before it got hold of the future."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.cancelled:
            coro.close()
            raise asyncio.CancelledError
        self.task = asyncio.current_task()
        return await coro

    def cancel(self) -> None:
        """On the loop: cancel the call, whether it has started or not."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()


async def _next(items: AsyncIterator[T]) -> list[T]:
    """[the next item], or [] at the end: StopAsyncIteration does not cross a future."""
    try:
        return [await items.__anext__()]
    except StopAsyncIteration:
        return []
