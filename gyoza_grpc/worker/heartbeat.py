"""The heartbeat task: registers the worker, renews its lease, and passes on stop orders.

The first heartbeat registers the worker (or re-registers it after an eviction). Each one
reports the attempts the worker is executing and gets back the ones it must abandon
(cancelled, superseded by a newer attempt, reassigned), which go to `stop` (the worker also
long-polls for them, `stop_orders.py`, so that they arrive at once), and says why the worker
claims nothing when it cannot (`not_ready`: its container engine is unreachable). The interval is
`interval_s` when given, else a third of the lease the server answers with, so that two
heartbeats can be lost before the lease runs out. The client tries a heartbeat again within
its deadline (it is safe to repeat); while the server stays unreachable the worker keeps
trying every `retry_s`; an error that trying again cannot fix (INVALID_ARGUMENT: bad
resources or worker id) ends the task with that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gyoza.v1 import workers_pb2
from gyoza_grpc.client import AsyncClient, GyozaError
from gyoza_grpc.domain.placement import Capacity
from gyoza_grpc.domain.workers import MAX_NOT_READY_REASON_LEN
from gyoza_grpc.worker.capacity import Key
from gyoza_grpc.worker.failures import describe, is_transient

log = logging.getLogger("gyoza_grpc.worker")

MIN_INTERVAL_S = 0.05
DEFAULT_RETRY_S = 1.0


def resources_pb(capacity: Capacity) -> workers_pb2.Resources:
    return workers_pb2.Resources(
        cpu=capacity.cpu,
        ram_mb=capacity.ram_mb,
        gpus=[workers_pb2.Gpu(gpu_id=g.gpu_id, vram_mb=g.vram_mb) for g in capacity.gpus],
    )


class Heartbeat:
    def __init__(
        self,
        client: AsyncClient,
        worker_id: str,
        resources: Capacity,
        tags: Sequence[str],
        *,
        running: Callable[[], list[Key]],
        stop: Callable[[str, int, str], bool],
        not_ready: Callable[[], str] = lambda: "",
        interval_s: float | None = None,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.resources = resources
        self._resources_pb = resources_pb(resources)
        self.tags = list(tags)
        self.running = running
        self.stop = stop
        self.not_ready = not_ready
        self.fixed_interval_s = interval_s
        self.retry_s = retry_s
        self.lease_s: int | None = None
        self.registered = asyncio.Event()
        self.last_ok = 0.0  # time.monotonic() of the last heartbeat answered
        self._poke = asyncio.Event()
        self._failing = False

    @property
    def interval_s(self) -> float:
        if self.fixed_interval_s is not None:
            return max(MIN_INTERVAL_S, self.fixed_interval_s)
        if self.lease_s is None:
            return self.retry_s
        return max(MIN_INTERVAL_S, self.lease_s / 3)

    def poke(self) -> None:
        """Heartbeat now (e.g. a claim said the worker is not registered)."""
        self._poke.set()

    async def beat(self) -> workers_pb2.HeartbeatResponse:
        """One heartbeat; its stop orders are carried out before it returns."""
        reply = await self.client.heartbeat(
            self.worker_id,
            resources=self._resources_pb,
            tags=self.tags,
            running=self.running(),
            not_ready_reason=self.not_ready()[:MAX_NOT_READY_REASON_LEN],
        )
        self.last_ok = time.monotonic()
        if self.lease_s != reply.lease_seconds:
            self.lease_s = reply.lease_seconds
        if not self.registered.is_set():
            log.info(
                "worker %s registered (lease %ss, heartbeat every %.1fs)",
                self.worker_id,
                reply.lease_seconds,
                self.interval_s,
                extra={"action": "register_worker", "worker_id": self.worker_id},
            )
            self.registered.set()
        for order in reply.stop:
            self.stop(order.run_id, order.attempt, order.reason)
        return reply

    async def run(self) -> None:
        while True:
            self._poke.clear()
            try:
                await self.beat()
                if self._failing:
                    log.info("heartbeats reach the server again")
                    self._failing = False
                delay = self.interval_s
            except GyozaError as err:
                if not is_transient(err):
                    raise
                if not self._failing:
                    log.warning(
                        "heartbeat failed (%s); retrying every %.1fs", describe(err), self.retry_s
                    )
                    self._failing = True
                delay = min(self.retry_s, self.interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), delay)
