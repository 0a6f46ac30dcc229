"""Requests protobuf cannot decode get INVALID_ARGUMENT, not grpc's UNKNOWN.

grpc.aio answers UNKNOWN when a request deserializer raises (truncated bytes, invalid UTF-8
in a string field, Structs nested past the decoder's limit). This interceptor wraps each unary
handler's deserializer so a decode error becomes a marker value, and the handler answers the
marker with INVALID_ARGUMENT. Wrapped handlers are built once per method and cached.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gyoza_grpc.domain.errors import InvalidArgument
from gyoza_grpc.server.api.errors import to_status


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as err:  # protobuf's DecodeError, UnicodeDecodeError, RecursionError
            return _Undecodable(str(err) or type(err).__name__)

    return decode


def _error(request: _Undecodable) -> grpc.Status:
    return to_status(
        InvalidArgument(
            f"request could not be decoded as protobuf: {request.reason}",
            reason="UNDECODABLE_REQUEST",
        )
    )


class DecodeErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        return self.wrap(handler_call_details.method, await continuation(handler_call_details))

    def wrap(self, method: str, handler: Any) -> Any:
        """`handler` answering an undecodable request with INVALID_ARGUMENT: made once per
        method and kept (also used at registration, by api/registration.py)."""
        if handler is None or handler.request_streaming:
            return handler
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler)
        self._cache[method] = (handler, wrapped)
        return wrapped


def _wrap(handler: Any) -> Any:
    deserializer = _safe(handler.request_deserializer)
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Undecodable):
                await context.abort_with_status(_error(request))
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    inner_stream = handler.unary_stream
    if inspect.iscoroutinefunction(inner_stream):
        # A handler that sends with context.write (grpc_health's Watch): not an iterator.
        async def writes(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if isinstance(request, _Undecodable):
                await context.abort_with_status(_error(request))
            await inner_stream(request, context)

        return grpc.unary_stream_rpc_method_handler(
            writes,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )

    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await context.abort_with_status(_error(request))
        async for item in inner_stream(request, context):
            yield item

    return grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )
