"""Domain errors -> gRPC statuses with rich details, in one place.

Every GyozaError becomes its own status code with a google.rpc.ErrorInfo (reason, metadata)
and, for field violations, a google.rpc.BadRequest. Anything else escaping a handler is a
server bug: it is logged and answered INTERNAL, never UNKNOWN; except a database out of reach
(store/db_errors.py), which is the server's passing trouble: UNAVAILABLE, so clients retry.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gyoza_grpc.domain.errors import GyozaError
from gyoza_grpc.server.store.db_errors import translate

log = logging.getLogger("gyoza_grpc.server.api")

DOMAIN = "gyoza.v1"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


# Errors travel in trailers, and a client refuses trailers past 8-16 KiB with a baffling
# RESOURCE_EXHAUSTED; whatever a request echoes back (a 20,000-character name in a NOT_FOUND)
# is clipped to these many UTF-8 bytes so the whole status stays well under that.
_MAX_MESSAGE_BYTES = 512
_MAX_VALUE_BYTES = 128
_MAX_DESCRIPTION_BYTES = 256
# The field violations listed, by their clipped size: every one in the usual case, the first
# ones that fit when a request breaks many rules with long names (base64 adds a third).
_MAX_VIOLATIONS_BYTES = 3000


def clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (plus a marker saying it was cut)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore") + "...(truncated)"


def to_status(err: GyozaError) -> grpc.Status:
    """The grpc.Status (code, message, google.rpc.Status details) for a domain error."""
    details: list[any_pb2.Any] = []
    metadata = {
        clip(k, _MAX_VALUE_BYTES): clip(v, _MAX_VALUE_BYTES) for k, v in err.metadata.items()
    }
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    shown: list[error_details_pb2.BadRequest.FieldViolation] = []
    budget = _MAX_VIOLATIONS_BYTES
    for v in err.violations:
        fv = error_details_pb2.BadRequest.FieldViolation(
            field=clip(v.field, _MAX_VALUE_BYTES),
            description=clip(v.description, _MAX_DESCRIPTION_BYTES),
        )
        budget -= fv.ByteSize() + 3
        if budget < 0:
            break
        shown.append(fv)
    if shown:
        bad = error_details_pb2.BadRequest(field_violations=shown)
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    message = clip(err.message, _MAX_MESSAGE_BYTES)
    if len(err.violations) > len(shown):
        message += f" (and {len(err.violations) - len(shown)} more violations)"
    status = status_pb2.Status(code=code_pb2.Code.Value(err.code), message=message, details=details)
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[Any, Any], err: GyozaError) -> None:
    await context.abort_with_status(to_status(err))


async def _internal(context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    """INTERNAL for a server bug; UNAVAILABLE (retry later) when the database is out of reach."""
    err = sys.exc_info()[1]
    mapped = translate(err) if err is not None else None
    if mapped is not None:
        log.warning("%s: %s (%s)", method, mapped.reason, type(err).__name__)
        await abort(context, mapped)
    log.exception("unexpected error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")


Unary = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]
Streaming = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Resp]]


def unary(fn: Unary[Req, Resp]) -> Unary[Req, Resp]:
    """Wrap a unary handler: GyozaError -> its status; any other exception -> INTERNAL."""

    @functools.wraps(fn)
    async def handler(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await fn(self, request, context)
        except GyozaError as err:
            await abort(context, err)
        except grpc.aio.AbortError:
            raise
        except Exception:
            await _internal(context, fn.__name__)
        raise AssertionError("unreachable: abort raises")

    return handler


def streaming(fn: Streaming[Req, Resp]) -> Streaming[Req, Resp]:
    """Wrap a server-streaming handler the same way; cancellation passes through untouched."""

    @functools.wraps(fn)
    async def handler(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Resp]:
        try:
            async for item in fn(self, request, context):
                yield item
        except GyozaError as err:
            await abort(context, err)
        except grpc.aio.AbortError:
            raise
        except Exception:
            await _internal(context, fn.__name__)

    return handler
