"""API-key authentication and role checks, as a grpc.aio server interceptor.

A call presents its key as metadata `x-api-key: KEY` or `authorization: Bearer KEY`. No key,
or a key that is not configured, is UNAUTHENTICATED; a role that may not call the method is
PERMISSION_DENIED naming the method (see `roles.py`). Each refusal carries a google.rpc.ErrorInfo
(reason API_KEY_MISSING, API_KEY_INVALID or ROLE_FORBIDDEN). The health check and reflection
need no key. Keys are compared in constant time (`ApiKeys.role_of`) and never logged.

This interceptor must come first in the server's list: it decides before any other interceptor
or handler sees the call, so an undecodable request without a key is UNAUTHENTICATED too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from gyoza_grpc.domain.access import ApiKeys, KeyEntry, parse_keys_file, parse_keys_list
from gyoza_grpc.domain.errors import GyozaError, PermissionDenied, Unauthenticated
from gyoza_grpc.server.api import roles
from gyoza_grpc.server.api.errors import to_status

log = logging.getLogger("gyoza_grpc.auth")

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
_HOW = f"send metadata '{API_KEY_HEADER}: KEY' or '{AUTHORIZATION_HEADER}: Bearer KEY'"


def load_api_keys(path: str, env_value: str) -> ApiKeys:
    """The keys of the file at `path` (when given) and of GYOZA_API_KEYS (when set).
    Raises KeysError (a malformed entry) or OSError (an unreadable file)."""
    entries: list[KeyEntry] = []
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise OSError(f"cannot read the API keys file {path}: {reason}") from None
        entries += parse_keys_file(text, path)
    if env_value:
        entries += parse_keys_list(env_value, "GYOZA_API_KEYS")
    return ApiKeys.of(entries)


def log_access(keys: ApiKeys) -> None:
    """The start-up line saying who may call: the counts by role, or a warning when open."""
    if keys:
        log.info("auth: %s; calls without a valid key are refused", keys.summary())
    else:
        log.warning("no API keys configured: the server is open to anyone who can reach it")


def presented_key(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The key a call presents: `x-api-key` first, else `authorization: Bearer KEY`.
    "" for an authorization header of another scheme; None when there is neither."""
    bearer: str | None = None
    for name, value in metadata or ():
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if name == API_KEY_HEADER:
            return text.strip() or None
        if name == AUTHORIZATION_HEADER and bearer is None:
            scheme, _, credential = text.strip().partition(" ")
            bearer = credential.strip() if scheme.lower() == "bearer" else ""
    return bearer


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, keys: ApiKeys) -> None:
        if not keys:
            raise ValueError("AuthInterceptor needs at least one key (no keys: leave it out)")
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        method: str = handler_call_details.method
        if roles.is_open(method):
            return await continuation(handler_call_details)
        refusal = self._check(method, handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if refusal is None:
            return handler
        return _refusing(handler, refusal)

    def _check(self, method: str, metadata: Any) -> GyozaError | None:
        key = presented_key(metadata)
        if not key:
            log.debug("refused %s: no API key", method)
            problem = (
                "no API key"
                if key is None
                else f"the {AUTHORIZATION_HEADER} header is not 'Bearer KEY'"
            )
            return Unauthenticated(
                f"{problem}: {_HOW}", reason="API_KEY_MISSING", metadata={"method": method}
            )
        role = self._keys.role_of(key)
        if role is None:
            log.warning("refused %s: unknown API key", method)
            return Unauthenticated(
                "the API key is not valid", reason="API_KEY_INVALID", metadata={"method": method}
            )
        if not roles.allows(role, method):
            log.info("refused %s: role %s may not call it", method, role)
            return PermissionDenied(
                f"role '{role}' may not call {method}",
                reason="ROLE_FORBIDDEN",
                metadata={"role": str(role), "method": method},
            )
        return None


def _refusing(handler: Any, refusal: GyozaError) -> Any:
    """A handler of the same kind as `handler` that answers `refusal` without running it."""
    status = to_status(refusal)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort_with_status(status)

    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await context.abort_with_status(status)
        yield  # pragma: no cover - abort raises

    if handler is None:  # an unknown method: refuse it like any other, before UNIMPLEMENTED
        return grpc.unary_unary_rpc_method_handler(unary)
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(
        stream if handler.response_streaming else unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
