"""Health follows the database: NOT_SERVING while it cannot be reached, SERVING when it is back.

A task pings the database every `interval_s` with a `timeout_s` bound. The first failure flips
the overall health ("") and every service to NOT_SERVING and logs one warning; the first
success after that flips them back and logs once. Load balancers and Kubernetes probes then
route around a replica that lost its database, while RPCs it still gets answer UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health_pb2

from gyoza_grpc.server.api.health import HealthServicer

log = logging.getLogger("gyoza_grpc.db_health")

DEFAULT_INTERVAL_S = 3.0


class DatabaseHealth:
    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        servicer: HealthServicer,
        services: Sequence[str],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._ping = ping
        self._servicer = servicer
        self._services = tuple(services)
        self._interval_s = interval_s
        # A ping slower than the interval is as good as a failed one.
        self._timeout_s = timeout_s if timeout_s is not None else max(interval_s, 1.0)
        self._on_change = on_change
        self.up = True

    async def check(self) -> bool:
        """One ping; updates health when the outcome changed. Returns whether it succeeded."""
        try:
            await asyncio.wait_for(self._ping(), self._timeout_s)
            ok = True
        except Exception as err:
            ok = False
            if self.up:
                # The error's class and text name the cause; URLs with passwords are not in it.
                log.warning(
                    "database unreachable (%s: %s); health NOT_SERVING until it answers",
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
        if ok != self.up:
            self.up = ok
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in self._services:
                await self._servicer.set(name, status)
            if ok:
                log.warning("database reachable again; health SERVING")
            if self._on_change is not None:
                self._on_change(ok)
        return ok

    async def run(self) -> None:
        """Check every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()
