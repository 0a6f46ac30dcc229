"""The stop-order long-poll: a stop order (a cancel, a superseded or reassigned attempt) reaches
the worker as soon as the server commits it, not at the next heartbeat.

While the worker runs attempts, one WaitForStopOrders call is open, naming the attempts a stop
could still stop; when an attempt starts or ends the call is replaced by one naming the new set.
Each order goes to `stop` as a heartbeat's would (the heartbeat still carries them: a server
without this RPC, or a poll that failed, only makes stops slower). The client tries a poll
again within its deadline; a poll that failed all the same is asked again after `retry_s`; a
server that does not know the RPC (UNIMPLEMENTED) ends the task, logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from gyoza_grpc.client import AsyncClient, GyozaError, Unimplemented
from gyoza_grpc.worker.capacity import Key
from gyoza_grpc.worker.failures import describe

log = logging.getLogger("gyoza_grpc.worker")

DEFAULT_WAIT_S = 30.0
DEFAULT_RETRY_S = 1.0


class StopOrderPoll:
    def __init__(
        self,
        client: AsyncClient,
        worker_id: str,
        *,
        stoppable: Callable[[], list[Key]],
        version: Callable[[], int],
        wait_change: Callable[[int], Awaitable[None]],
        stop: Callable[[str, int, str], bool],
        wait_s: float = DEFAULT_WAIT_S,
        retry_s: float = DEFAULT_RETRY_S,
        timeout: timedelta | None = None,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.stoppable = stoppable
        self.version = version
        self.wait_change = wait_change
        self.stop = stop
        self.wait_s = wait_s
        self.retry_s = retry_s
        self.timeout = timeout  # beyond the wait; None: the client's
        self._failing = False

    async def run(self) -> None:
        while True:
            version = self.version()
            running = self.stoppable()
            if not running:
                await self.wait_change(version)
                continue
            poll = asyncio.ensure_future(
                self.client.wait_for_stop_orders(
                    self.worker_id,
                    running=running,
                    wait=timedelta(seconds=self.wait_s),
                    timeout=self.timeout,
                )
            )
            change = asyncio.ensure_future(self.wait_change(version))
            try:
                await asyncio.wait({poll, change}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                change.cancel()
                if not poll.done():
                    poll.cancel()  # the attempts changed: ask again about the new set
                    with contextlib.suppress(asyncio.CancelledError, GyozaError):
                        await poll
            if poll.cancelled():
                continue
            err = poll.exception()
            if err is None:
                if self._failing:
                    log.info("stop-order polls reach the server again")
                    self._failing = False
                for order in poll.result():
                    self.stop(order.run_id, order.attempt, order.reason)
                continue
            if not isinstance(err, GyozaError):
                raise err
            if isinstance(err, Unimplemented):
                log.warning(
                    "the server has no WaitForStopOrders (%s): stop orders come with "
                    "heartbeats only",
                    describe(err),
                )
                return
            if not self._failing:
                log.warning(
                    "stop-order poll failed (%s); retrying every %.1fs", describe(err), self.retry_s
                )
                self._failing = True
            await asyncio.sleep(self.retry_s)
