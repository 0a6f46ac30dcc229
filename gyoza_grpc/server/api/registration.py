"""Handlers wrapped once, when a service is added, instead of by interceptors on every call.

A grpc.aio server interceptor runs on every call: grpc builds a chain of coroutines through
each interceptor's intercept_service, which looks up the wrapped handler it made before. With
no API keys the wrapping depends on the method alone (the access log, the answer to an
undecodable request), so it can be done once: `WrappingServer` stands in for the server while
the services are added (the generated add_*_to_server functions, health, reflection) and
passes each handler through `wrap(method, handler)` on its way in. The calls then reach
grpc's own method lookup directly (GetRun at concurrency 32: see docs/benchmarks.md).

With API keys, the interceptors stay (api/auth.py): a refusal depends on each call's
metadata, and the access log must see it, and the calls to methods the server does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

Wrap = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose answers are wrapped (each method's once)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._made: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        made = self._made.get(method)
        if made is None or made[0] is not handler:
            made = self._made[method] = (handler, self._wrap(method, handler))
        return made[1]


class WrappingServer:
    """Pass it to the generated `add_*Servicer_to_server` functions (and to health's and our
    reflection's) in place of the server: it registers their services, handlers wrapped, on
    `server`. Those functions call only the two methods below, so this is no grpc.aio.Server
    subclass: nothing of grpc's own server class is skipped or reached into."""

    def __init__(self, server: grpc.aio.Server, wrap: Wrap) -> None:
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGeneric(h, self._wrap) for h in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: self._wrap(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )
