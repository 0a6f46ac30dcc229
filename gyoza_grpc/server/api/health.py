"""grpc.health.v1 Health whose Watch streams end when the server shuts down.

grpc_health's aio HealthServicer keeps a Watch open until the client leaves, and grpc.aio does
not end server streams early: one open Watch held `server.stop(grace)` for the whole grace
period. This servicer answers Check and Watch the same way, but `enter_graceful_shutdown()`
sends NOT_SERVING to every watcher and then ends each Watch with UNAVAILABLE (the client
retries elsewhere), so the stop waits only for unary calls.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Status: TypeAlias = int  # a health_pb2.HealthCheckResponse.ServingStatus value

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SHUTTING_DOWN = "server shutting down"


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Statuses by service name ("" is the whole server); watchers wait on one condition."""

    def __init__(self) -> None:
        self._statuses: dict[str, Status] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Context) -> None:
        sent: Status | None = None
        while True:
            async with self._changed:
                # Wait for a change of this service's status, or for the shutdown.
                while (
                    status := self._statuses.get(request.service, SERVICE_UNKNOWN)
                ) == sent and not self._shutting_down:
                    await self._changed.wait()
                ending = self._shutting_down
            # Written outside the lock: a slow reader never holds up `set` or other watchers.
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if ending:
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    async def set(self, service: str, status: Status) -> None:
        """Set one service's status; ignored once the server is shutting down."""
        async with self._changed:
            if self._shutting_down:
                return
            self._statuses[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; each Watch sends that, then ends (UNAVAILABLE)."""
        async with self._changed:
            self._shutting_down = True
            for service in self._statuses:
                self._statuses[service] = NOT_SERVING
            self._changed.notify_all()
