"""A raw grpc.aio channel whose every call carries an API key, for tests that call the
server's stubs directly (the server's auth, TLS).

The client (`gyoza_grpc.client`) puts the key in each call's metadata instead; these tests
are about the server, so they use the generated stubs on a plain channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc


def _with_key(details: Any, key: str) -> Any:
    pairs = [(k, v) for k, v in (details.metadata or ()) if k != "x-api-key"]
    pairs.append(("x-api-key", key))
    return details._replace(metadata=grpc.aio.Metadata(*pairs))


# grpc.aio files each interceptor under the first kind it is an instance of, so each kind
# needs its own class. gyoza's RPCs are unary-unary and unary-stream.
class _UnaryUnaryKey(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._key), request)


class _UnaryStreamKey(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._key), request)


def open_channel(
    target: str,
    *,
    api_key: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` (TLS with `credentials`) that sends `api_key`."""
    interceptors = [_UnaryUnaryKey(api_key), _UnaryStreamKey(api_key)] if api_key else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
