"""The health service: Check and Watch per service, and what shutdown does to them."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gyoza_grpc.server import SERVICE_NAMES, GyozaServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """The database plays no part here: the conftest server runs on SQLite only."""
    return sqlite_url


async def test_check_answers_each_service_and_not_found_for_others(
    channel: grpc.aio.Channel,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICE_NAMES):
        assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no.such.Service" in (err.value.details() or "")


async def test_watch_follows_changes_and_shutdown_is_final(
    server: GyozaServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    name = SERVICE_NAMES[0]
    watch = health.Watch(health_pb2.HealthCheckRequest(service=name))
    assert (await watch.read()).status == SERVING
    await server.health.set(name, NOT_SERVING)
    assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
    await server.health.set(name, SERVING)
    assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
    watch.cancel()

    await server.health.enter_graceful_shutdown()
    await server.health.set(name, SERVING)  # ignored from now on
    check = await health.Check(health_pb2.HealthCheckRequest(service=name))
    assert check.status == NOT_SERVING
    # A Watch opened during the shutdown gets the status once, then ends.
    late = health.Watch(health_pb2.HealthCheckRequest(service=name))
    assert (await asyncio.wait_for(late.read(), 10)).status == NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(late.read(), 10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
