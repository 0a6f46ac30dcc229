"""WrappingServer (api/registration.py): every handler added through it, by generated code's
registered and generic paths alike, reaches a real grpc.aio server wrapped, once per method."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gyoza_grpc.server.api import reflection
from gyoza_grpc.server.api.health import HealthServicer
from gyoza_grpc.server.api.registration import WrappingServer


class Tagging:
    """A wrap that makes each unary handler's reply say it passed through, and counts."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.calls: list[str] = []

    def __call__(self, method: str, handler: Any) -> Any:
        self.made.append(method)
        if handler.unary_unary is None:
            inner_stream = handler.unary_stream or handler.stream_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                self.calls.append(method)
                async for item in inner_stream(request, context):
                    yield item

            kind = "unary_stream" if handler.unary_stream else "stream_stream"
            return handler._replace(**{kind: stream})
        inner = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            self.calls.append(method)
            return await inner(request, context)

        return handler._replace(unary_unary=unary)


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Tagging]]:
    tagging = Tagging()
    server = grpc.aio.server()
    services = WrappingServer(server, tagging)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, services)  # registered + generic
    reflection.enable_server_reflection(("grpc.health.v1.Health",), services)  # ours: v1 too

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    services.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "t.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, tagging
    finally:
        await server.stop(None)


async def test_registered_and_generic_handlers_are_wrapped_once_per_method(
    served: tuple[grpc.aio.Channel, Tagging],
) -> None:
    channel, tagging = served
    check = health_pb2_grpc.HealthStub(channel).Check
    for _ in range(3):
        reply = await check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    echo = channel.unary_unary("/t.Echo/Echo")
    assert await echo(b"hi") == b"hi"
    assert await echo(b"again") == b"again"
    assert tagging.calls == ["/grpc.health.v1.Health/Check"] * 3 + ["/t.Echo/Echo"] * 2
    assert tagging.made.count("/grpc.health.v1.Health/Check") == 1  # at registration
    assert tagging.made.count("/t.Echo/Echo") == 1  # at its first call, then kept


async def test_reflection_added_through_it_is_the_aio_servicer_and_wrapped(
    served: tuple[grpc.aio.Channel, Tagging],
) -> None:
    channel, tagging = served
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    replies = [r async for r in call]
    names = {s.name for s in replies[0].list_services_response.service}
    assert "grpc.health.v1.Health" in names
    assert tagging.calls == ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]


async def test_an_unknown_method_is_still_unimplemented(
    served: tuple[grpc.aio.Channel, Tagging],
) -> None:
    channel, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/t.Echo/Nope")(b"")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
