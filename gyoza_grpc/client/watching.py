"""A watch stream that outlives its connections: resumed from the last item delivered.

WatchEvents and WatchTopic replay what comes after a position (a run's `seq`, a topic's
`cursor`) and then stream live. So a stream that breaks (UNAVAILABLE: a dropped connection,
a server shutting down or restarting) is opened again with `after` = the position of the last
item this iterator yielded, after a backoff: nothing is skipped, and an item at or before that
position (which a correct server never sends again) is dropped, so nothing is repeated.
Heartbeats never reach the caller; any message, a heartbeat included, proves the stream alive
and resets the failure count, and a stream silent for longer than the idle timeout is taken
as lost. A stream the server ends (a run's, after its final event) ends the iterator.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import grpc

from gyoza_grpc.client.errors import from_rpc_error
from gyoza_grpc.client.retry import RetryConfig
from gyoza_grpc.domain.errors import GyozaError, Unavailable

log = logging.getLogger("gyoza_grpc.client")

T = TypeVar("T")


class Resumable(Generic[T]):
    """How to follow one kind of stream: open it after a position, and read its messages."""

    def __init__(
        self,
        what: str,
        open_after: Callable[[int | None], Any],
        unpack: Callable[[Any], tuple[T | None, int]],
    ) -> None:
        """`open_after(position)` starts a call (a grpc.aio UnaryStreamCall) replaying after
        `position` (everything when None); `unpack(message)` is (item, its position), or
        (None, position) for a heartbeat."""
        self.what = what
        self.open_after = open_after
        self.unpack = unpack


async def follow(
    stream: Resumable[T],
    *,
    after: int | None,
    retry: RetryConfig,
    idle_timeout_s: float | None,
) -> AsyncIterator[T]:
    """Every item after `after`, across broken streams, until the server ends the stream.

    Raises the GyozaError of a failure that is not UNAVAILABLE (NOT_FOUND, PERMISSION_DENIED,
    ...), or of the last UNAVAILABLE once `retry.max_attempts` streams in a row failed
    without a message.
    """
    position = after
    failures = 0
    while True:
        call = stream.open_after(position)
        try:
            while True:
                async with asyncio.timeout(idle_timeout_s):
                    message = await call.read()
                if message is grpc.aio.EOF:
                    return  # the server ended the stream: the run has ended
                if failures:
                    log.info(
                        "%s: resumed after %s",
                        stream.what,
                        position,
                        extra={"action": "watch_resumed", "watch": stream.what, "after": position},
                    )
                failures = 0
                item, pos = stream.unpack(message)
                if item is None or (position is not None and pos <= position):
                    continue  # a heartbeat, or already delivered
                position = pos
                yield item
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise from_rpc_error(err) from err
            error: GyozaError = from_rpc_error(err)
            cause: BaseException = err
        except TimeoutError as err:
            error = Unavailable(f"{stream.what}: no message for {idle_timeout_s}s")
            cause = err
        finally:
            call.cancel()
        failures += 1
        wait = retry.backoff_s(failures, random.random())
        if wait is None:
            raise error from cause
        # The first failure of an outage is news; the attempts that follow are detail.
        log.log(
            logging.INFO if failures == 1 else logging.DEBUG,
            "%s: %s; resuming after %s in %.2fs",
            stream.what,
            error.message,
            position,
            wait,
            extra={"action": "resume_watch", "watch": stream.what, "after": position},
        )
        await asyncio.sleep(wait)
