"""One log line per RPC when it ends, and the RPC metrics: a grpc.aio server interceptor.

The line names the method, the gRPC status code, the duration, the peer, how many messages a
stream sent, and the run id, topic and worker id when the request carries them. It never
reads metadata, so API keys and tokens never reach the log; request values are cut to
MAX_VALUE_LEN characters.

It sits on the hot path, so the work per call is small: wrapped handlers and the request
fields to read are found once per method, the metric children once per (method, code), and
the line is made only when the `gyoza_grpc.access` logger is enabled for INFO. When the line
would reach nothing but configure_logging's handler, it is made straight from the fields, in
exactly the layout the formatter would give the record, and queued on the handler (one write
per FLUSH_AFTER_S, 50 ms): no LogRecord, no Formatter. Otherwise it goes through `logging`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gyoza_grpc.server.api.roles import ALL_METHODS, is_open
from gyoza_grpc.server.ops.log_format import (
    ACCESS_LOGGER,
    ACCESS_MESSAGE,
    AccessLines,
    access_lines,
    json_value,
)
from gyoza_grpc.server.ops.metrics import ServerMetrics

log = logging.getLogger(ACCESS_LOGGER)

MAX_VALUE_LEN = 128
# The method label of calls to methods the server does not have.
UNKNOWN_METHOD = "/unknown"
# Request fields worth a log line's attention; `id` is a run id in RunService only.
_FIELDS = ("run_id", "topic", "worker_id")
_RUN_SERVICE = "/gyoza.v1.RunService/"
_WATCHES = frozenset(
    (
        "/gyoza.v1.RunService/WatchEvents",
        "/gyoza.v1.RunService/WatchRuns",
        "/gyoza.v1.TopicService/WatchTopic",
    )
)
_CODE_NAMES: dict[Any, str] = {c: c.name for c in grpc.StatusCode}
_CODE_NAMES.update({c.value[0]: c.name for c in grpc.StatusCode})


def _code_name(context: Any, failed: bool) -> str:
    """The status the call ended with: what the handler set or aborted with, else OK (or
    UNKNOWN when an exception escaped without a status)."""
    code = context.code()
    if code is None or code == 0 or code is grpc.StatusCode.OK:
        return "UNKNOWN" if failed else "OK"
    return _CODE_NAMES.get(code, str(code))


def _duration_ms(seconds: float) -> str:
    """json_value(round(seconds * 1000, 3)), the logged duration, more cheaply: below
    10**12 ms the rounded value has at most 15 significant digits, so its repr is the
    correctly rounded f"{ms:.3f}" without the trailing zeros the repr would not write."""
    ms = seconds * 1000
    if type(ms) is not float or not -1e12 < ms < 1e12:  # an int, a nan, an inf, or huge
        return json_value(round(ms, 3))
    text = f"{ms:.3f}".rstrip("0")
    return text + "0" if text[-1] == "." else text


class MethodLog:
    """The access log of one method: what is known about it (its name, its request fields,
    its metric children), found once, and `finish`, which logs and counts one call."""

    __slots__ = (
        "_children",
        "_fields",
        "_line_keys",
        "_line_starts",
        "_metrics",
        "label",
        "name",
        "stream_gauge",
    )

    def __init__(self, name: str, metrics: ServerMetrics | None, *, streaming: bool) -> None:
        self.name = name
        self.label = name.lstrip("/")
        self._metrics = metrics
        self._fields: tuple[tuple[str, str], ...] | None = None
        self._children: dict[str, tuple[Any, Any]] = {}
        # For the direct line, in one format (AccessLines): the keys of peer, messages and the
        # request fields, and per code the line's start from the method to duration_ms.
        self._line_keys: tuple[AccessLines, str, str, tuple[tuple[str, str], ...]] | None = None
        self._line_starts: dict[str, str] = {}
        self.stream_gauge = (
            metrics.watch_streams.labels(self.label)
            if metrics is not None and streaming and name in _WATCHES
            else None
        )

    def _request_fields(self, request: Any) -> tuple[tuple[str, str], ...]:
        descriptor = getattr(request, "DESCRIPTOR", None)
        if descriptor is None:
            return ()  # an undecodable request, or a request stream
        names = descriptor.fields_by_name
        found = [(f, f) for f in _FIELDS if f in names and names[f].type == names[f].TYPE_STRING]
        if self.name.startswith(_RUN_SERVICE) and "id" in names and not found:
            found.append(("id", "run_id"))
        return tuple(found)

    def finish(
        self,
        request: Any,
        context: Any,
        code: str,
        seconds: float,
        *,
        stream: bool = False,
        sent: int | None = None,
        peer: str = "",
    ) -> None:
        """Count and log one ended call; `sent` is a stream's message count, when known."""
        if self._metrics is not None:
            children = self._children.get(code)
            if children is None:
                timed = None if stream else self._metrics.rpc_duration.labels(self.label, code)
                children = self._children[code] = (
                    self._metrics.rpc_requests.labels(self.label, code),
                    timed,
                )
            children[0].inc()
            if children[1] is not None:
                children[1].observe(seconds)
        if not log.isEnabledFor(logging.INFO):
            return
        if self._fields is None:
            self._fields = self._request_fields(request)
        direct = access_lines(log)
        if direct is not None and type(peer) is str and type(code) is str:
            self._write_line(direct[0].write_line, direct[1], request, code, seconds, sent, peer)
            return
        fields: dict[str, Any] = {
            "method": self.label,
            "code": code,
            "duration_ms": round(seconds * 1000, 3),
            "peer": peer,
        }
        if sent is not None:
            fields["messages"] = sent
        for attr, key in self._fields:
            value = getattr(request, attr, "")
            if value:
                fields[key] = value[:MAX_VALUE_LEN]
        log.info(ACCESS_MESSAGE, extra={"fields": fields})

    def _write_line(
        self,
        write: Callable[[str], None],
        lines: AccessLines,
        request: Any,
        code: str,
        seconds: float,
        sent: int | None,
        peer: str,
    ) -> None:
        """The line of the fields finish() would log, in the same order, as `lines` has it."""
        keys = self._line_keys
        if keys is None or keys[0] is not lines:
            assert self._fields is not None
            keys = self._line_keys = (
                lines,
                lines.key("peer"),
                lines.key("messages"),
                tuple((attr, lines.key(key)) for attr, key in self._fields),
            )
            self._line_starts = {}
        start = self._line_starts.get(code)
        if start is None:
            start = self._line_starts[code] = (
                f"{lines.key('method')}{json_value(self.label)}"
                f"{lines.key('code')}{json_value(code)}{lines.key('duration_ms')}"
            )
        line = f"{lines.head(time.time())}{start}{_duration_ms(seconds)}{keys[1]}{json_value(peer)}"
        if sent is not None:
            line = f"{line}{keys[2]}{json_value(sent)}"
        for attr, key in keys[3]:
            value = getattr(request, attr, "")
            if value:
                line = f"{line}{key}{json_value(value[:MAX_VALUE_LEN])}"
        write(f"{line}{lines.tail}")


class AccessLogInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Put it first in the interceptor list: it then sees every other interceptor's refusal."""

    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self._metrics = metrics
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._unknown_methods: dict[bool, MethodLog] = {}

    def _unknown(self, streaming: bool) -> MethodLog:
        found = self._unknown_methods.get(streaming)
        if found is None:
            found = self._unknown_methods[streaming] = MethodLog(
                UNKNOWN_METHOD, self._metrics, streaming=streaming
            )
        return found

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.wrap(handler_call_details.method, handler)

    def wrap(self, method: str, handler: Any) -> Any:
        """`handler` logging and counting its calls: made once per method and kept (also
        used at registration, by api/registration.py, when no interceptor runs)."""
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if method not in ALL_METHODS and not is_open(method):
            # A method this server does not have, refused by auth before UNIMPLEMENTED: one
            # label for all of them, nothing cached (a client could name endless methods).
            return _wrap(handler, self._unknown(handler.response_streaming))
        observed = MethodLog(method, self._metrics, streaming=handler.response_streaming)
        wrapped = _wrap(handler, observed)
        self._cache[method] = (handler, wrapped)
        return wrapped


def _wrap(handler: Any, m: MethodLog) -> Any:
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=_unary_response(handler.unary_unary, m))
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=_unary_response(handler.stream_unary, m))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=_stream_response(handler.unary_stream, m))
    if handler.stream_stream is not None:
        return handler._replace(stream_stream=_stream_response(handler.stream_stream, m))
    return handler


def _unary_response(inner: Callable[..., Awaitable[Any]], m: MethodLog) -> Any:
    async def call(request: Any, context: Any) -> Any:
        start = time.perf_counter()
        # Read while the call is alive: grpc.aio's peer() on a finished call can crash.
        peer = context.peer()
        failed = True
        code = "UNKNOWN"
        try:
            response = await inner(request, context)
            failed = False
            return response
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            if code != "CANCELLED":
                code = _code_name(context, failed)
            m.finish(request, context, code, time.perf_counter() - start, peer=peer)

    return call


def _stream_response(inner: Callable[..., Any], m: MethodLog) -> Any:
    """grpc.aio accepts an async generator or a coroutine that calls context.write (the
    health servicer's Watch); each is wrapped as what it is."""
    if inspect.iscoroutinefunction(inner):

        async def writes(request: Any, context: Any) -> None:
            start = time.perf_counter()
            peer = context.peer()  # while the call is alive
            failed = True
            code = "UNKNOWN"
            try:
                await inner(request, context)
                failed = False
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                if code != "CANCELLED":
                    code = _code_name(context, failed)
                m.finish(
                    request, context, code, time.perf_counter() - start, stream=True, peer=peer
                )

        return writes
    if not inspect.isasyncgenfunction(inner):
        return inner  # a synchronous generator: not used by this server

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        start = time.perf_counter()
        # Read while the call is alive: grpc.aio's peer() on a finished call can crash.
        peer = context.peer()
        gauge = m.stream_gauge
        if gauge is not None:
            gauge.inc()
        sent = 0
        failed = True
        code = "UNKNOWN"
        try:
            async for item in inner(request, context):
                yield item
                sent += 1
            failed = False
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        finally:
            if gauge is not None:
                gauge.dec()
            if code != "CANCELLED":
                code = _code_name(context, failed)
            m.finish(
                request,
                context,
                code,
                time.perf_counter() - start,
                stream=True,
                sent=sent,
                peer=peer,
            )

    return stream
