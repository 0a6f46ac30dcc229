"""The aiohttp application: one handler per route of `openapi.ROUTES`, each a single gRPC
call (the event stream: a GetRun, so that an unknown run is a 404, then WatchEvents).

Errors become JSON in one middleware: the gateway's own 400/422 (HttpError), a gRPC status
(mapped by errors.http_status), and aiohttp's routing 404/405, all as `{"detail": ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from gyoza.v1 import definitions_pb2, definitions_pb2_grpc, runs_pb2, runs_pb2_grpc
from gyoza_grpc.gateway import shapes
from gyoza_grpc.gateway.errors import HttpError, http_status, rpc_error_body
from gyoza_grpc.gateway.openapi import ROUTES, document

log = logging.getLogger("gyoza_grpc.gateway")

DEFAULT_TIMEOUT_S = 30.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    """The gRPC side: one channel for every request, and the open event streams (cancelled
    on shutdown, so that they do not hold the gateway open)."""

    channel: grpc.aio.Channel
    timeout_s: float
    runs: runs_pb2_grpc.RunServiceStub = field(init=False)
    definitions: definitions_pb2_grpc.DefinitionServiceStub = field(init=False)
    streams: set[grpc.aio.Call] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.runs = runs_pb2_grpc.RunServiceStub(self.channel)
        self.definitions = definitions_pb2_grpc.DefinitionServiceStub(self.channel)


UPSTREAM = web.AppKey("upstream", Upstream)


def metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The caller's X-API-Key, as the server's `x-api-key` metadata."""
    key = request.headers.get("X-API-Key")
    if key is None:
        return ()
    if not key.isascii() or not key.isprintable():
        raise HttpError(401, "X-API-Key must be printable ASCII")
    return (("x-api-key", key),)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.json_response(doc, status=status, dumps=json.dumps)


async def _body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    return shapes.parse_body(await request.read(), required=required)


async def _call(request: web.Request, rpc: Any, message: Any) -> Any:
    up = request.app[UPSTREAM]
    return await rpc(message, timeout=up.timeout_s, metadata=metadata(request))


# -- handlers, in the order of openapi.ROUTES ------------------------------------------------


async def list_runs(request: web.Request) -> web.Response:
    req = shapes.list_runs_request(request.query)
    resp = await _call(request, request.app[UPSTREAM].runs.ListRuns, req)
    return _json(
        {
            "object": "list",
            "data": [shapes.run_json(r, with_events=True) for r in resp.data],
            "has_more": resp.has_more,
            "url": "/runs",
        }
    )


async def create_run(request: web.Request) -> web.Response:
    req = shapes.create_run_request(await _body(request))
    resp = await _call(request, request.app[UPSTREAM].runs.CreateRun, req)
    return _json(shapes.run_json(resp.run, with_events=resp.run.last_seq < 0), status=201)


async def get_run(request: web.Request) -> web.Response:
    req = runs_pb2.GetRunRequest(id=request.match_info["id"], view=runs_pb2.RUN_VIEW_FULL)
    resp = await _call(request, request.app[UPSTREAM].runs.GetRun, req)
    return _json(shapes.run_json(resp.run, with_events=True))


async def update_run(request: web.Request) -> web.Response:
    req = shapes.update_run_request(request.match_info["id"], await _body(request))
    resp = await _call(request, request.app[UPSTREAM].runs.UpdateRun, req)
    return _json(shapes.run_json(resp.run, with_events=False))


async def retry_run(request: web.Request) -> web.Response:
    req = runs_pb2.RetryRunRequest(id=request.match_info["id"])
    resp = await _call(request, request.app[UPSTREAM].runs.RetryRun, req)
    return _json(shapes.run_json(resp.run, with_events=False))


async def cancel_run(request: web.Request) -> web.Response:
    req = runs_pb2.CancelRunRequest(id=request.match_info["id"])
    resp = await _call(request, request.app[UPSTREAM].runs.CancelRun, req)
    return _json(shapes.run_json(resp.run, with_events=False))


async def list_events(request: web.Request) -> web.Response:
    req = runs_pb2.ListEventsRequest(run_id=request.match_info["id"])
    after = shapes.after_value(request.query.get("after"), "after")
    if after is not None:
        req.after = after
    resp = await _call(request, request.app[UPSTREAM].runs.ListEvents, req)
    return _json({"events": [shapes.event_json(e) for e in resp.events], "has_more": resp.has_more})


async def add_event(request: web.Request) -> web.Response:
    req = shapes.add_event_request(request.match_info["id"], await _body(request))
    resp = await _call(request, request.app[UPSTREAM].runs.AddEvent, req)
    return _json(shapes.run_json(resp.run, with_events=False))


async def list_attempts(request: web.Request) -> web.Response:
    """Every attempt: the pages of ListAttempts (cut by the server's response budget)."""
    found: list[Any] = []
    after = 0
    while True:
        req = runs_pb2.ListAttemptsRequest(run_id=request.match_info["id"], after=after)
        resp = await _call(request, request.app[UPSTREAM].runs.ListAttempts, req)
        found += [shapes.attempt_json(a) for a in resp.attempts]
        if not resp.has_more or not resp.attempts:
            return _json(found)
        after = resp.attempts[-1].attempt


async def get_definition(request: web.Request) -> web.Response:
    req = definitions_pb2.GetDefinitionRequest(
        name=request.match_info["name"], version=request.query.get("version", "")
    )
    resp = await _call(request, request.app[UPSTREAM].definitions.GetDefinition, req)
    return _json(shapes.definition_json(resp.definition))


async def create_run_from_definition(request: web.Request) -> web.Response:
    body = await _body(request, required=False)
    req = shapes.run_from_definition_request(request.match_info["name"], body)
    resp = await _call(request, request.app[UPSTREAM].definitions.CreateRunFromDefinition, req)
    return _json(shapes.run_json(resp.run, with_events=resp.run.last_seq < 0), status=201)


async def openapi_json(request: web.Request) -> web.Response:
    return _json(document())


def _handlers() -> dict[str, Handler]:
    from gyoza_grpc.gateway.sse import stream_events

    return {
        "list_runs": list_runs,
        "create_run": create_run,
        "get_run": get_run,
        "update_run": update_run,
        "retry_run": retry_run,
        "cancel_run": cancel_run,
        "list_events": list_events,
        "add_event": add_event,
        "stream_events": stream_events,
        "list_attempts": list_attempts,
        "get_definition": get_definition,
        "create_run_from_definition": create_run_from_definition,
    }


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as err:
        return _json(err.body(), status=err.status)
    except grpc.aio.AioRpcError as err:
        return _json(rpc_error_body(err), status=http_status(err.code()))
    except web.HTTPException as err:
        if err.status < 400:
            raise
        headers = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else None
        return web.json_response({"detail": err.reason}, status=err.status, headers=headers)


def make_app(
    target: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, channel: grpc.aio.Channel | None = None
) -> web.Application:
    """The gateway for the server at `target` (or over `channel`, which the caller owns)."""
    app = web.Application(middlewares=[json_errors])

    async def upstream(app: web.Application) -> AsyncIterator[None]:
        ch = channel if channel is not None else grpc.aio.insecure_channel(target)
        app[UPSTREAM] = Upstream(ch, timeout_s)
        yield
        if channel is None:
            await ch.close()

    async def end_streams(app: web.Application) -> None:
        for call in list(app[UPSTREAM].streams):
            call.cancel()

    app.cleanup_ctx.append(upstream)
    app.on_shutdown.append(end_streams)
    handlers = _handlers()
    for route in ROUTES:
        app.router.add_route(route.method, route.path, handlers[route.operation_id])
    app.router.add_get("/openapi.json", openapi_json)
    return app


async def serve_gateway(
    target: str, host: str, port: int, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Serve until SIGINT or SIGTERM; then open event streams end and requests in flight get
    a few seconds to finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        make_app(target, timeout_s=timeout_s), handler_cancellation=True, shutdown_timeout=5.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:
            log.info("gyoza-grpc gateway on http://%s:%d -> %s", address[0], address[1], target)
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
        log.info("gateway shutting down")
    finally:
        await runner.cleanup()
