"""The aiohttp application: one handler per route of `openapi.ROUTES` (`@handles`, named by
the route's operation_id). Each reads its request
with the route's tables (validation.py), makes its gRPC calls through upstream.Calls (over
gyoza_grpc.client's AsyncClient), and answers with the tables of responses.py.

Errors become JSON in one middleware: the gateway's own 400/422 (HttpError), a failed call
(errors.from_rpc), and aiohttp's routing 404/405, all as `{"detail": ...}`. A request aiohttp
cannot parse (a request line or header over 8190 bytes) is answered as JSON by runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from aiohttp import web

from gyoza.v1 import runs_pb2
from gyoza_grpc.client import AsyncClient, GyozaError, RetryConfig
from gyoza_grpc.gateway import inbound
from gyoza_grpc.gateway import responses as r
from gyoza_grpc.gateway.dashboard import add_dashboard, ui_headers
from gyoza_grpc.gateway.errors import HttpError, from_rpc
from gyoza_grpc.gateway.openapi import ROUTES, Route, document
from gyoza_grpc.gateway.runner import GatewayRunner
from gyoza_grpc.gateway.upstream import EVENTS_PAGE, Calls, Upstream
from gyoza_grpc.gateway.validation import read_body, read_request

log = logging.getLogger("gyoza_grpc.gateway")

DEFAULT_TIMEOUT_S = 30.0
# The reads (and creates with a request_id) are tried again after UNAVAILABLE for about a
# second and a half: a server restarting, not a long outage, which a caller hears of as 503.
RETRY = RetryConfig(max_attempts=5, max_backoff=timedelta(seconds=1))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_INT64_MAX = 2**63 - 1

UPSTREAM = web.AppKey("upstream", Upstream)
RouteHandler = Callable[["Call"], Awaitable[web.StreamResponse]]
# operation_id -> its handler: each `@handles` function, here and in sse.py.
HANDLERS: dict[str, RouteHandler] = {}


def handles(fn: RouteHandler) -> RouteHandler:
    """Make `fn` the handler of the route (openapi.ROUTES) whose operation_id is its name: a
    new route is its row there and its function here, nothing else (make_app checks that
    every route has a handler and every handler a route)."""
    HANDLERS[fn.__name__] = fn
    return fn


@dataclass(frozen=True)
class Call:
    """One HTTP request, read: its parameters, its body, and the gRPC calls to make for it."""

    request: web.Request
    params: dict[str, Any]
    body: dict[str, Any] | None
    calls: Calls

    @property
    def run_id(self) -> str:
        return str(self.params["id"])


def metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The caller's X-API-Key, as the server's `x-api-key` metadata."""
    key = request.headers.get("X-API-Key")
    if key is None:
        return ()
    if not key.isascii() or not key.isprintable():
        raise HttpError(401, "X-API-Key must be printable ASCII")
    return (("x-api-key", key),)


async def read(request: web.Request, route: Route) -> Call:
    """The request as FastAPI read it: the body's JSON first, then every parameter and the
    body validated together."""
    body_value = None
    if route.body is not None:
        body_value = read_body(await request.read(), request.headers.get("Content-Type"))
    params, body = read_request(
        route.params,
        path=request.match_info,
        query=request.query,
        headers=request.headers,
        body=route.body,
        body_value=body_value,
        body_required=route.body_required,
    )
    return Call(request, params, body, request.app[UPSTREAM].calls(metadata(request)))


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.json_response(doc, status=status, dumps=json.dumps)


def _run(run: runs_pb2.Run, status: int = 200) -> web.Response:
    return _json(r.render(r.RUN, run), status)


# -- handlers, in the order of openapi.ROUTES ------------------------------------------------


@handles
async def list_runs(c: Call) -> web.Response:
    req = inbound.list_runs_request(c.params)
    resp = await c.calls.list_runs(req, with_events=c.params["view"] == "full")
    return _json(r.render(r.RUN_LIST, resp))


@handles
async def count_runs(c: Call) -> web.Response:
    resp = await c.calls.count_runs(inbound.count_runs_request(c.params))
    return _json(r.render(r.RUN_COUNT, resp))


@handles
async def create_run(c: Call) -> web.Response:
    assert c.body is not None
    return _run(await c.calls.create_run(inbound.create_run_request(c.body)), 201)


@handles
async def get_run(c: Call) -> web.Response:
    return _run(await c.calls.get_run(c.run_id))


@handles
async def update_run(c: Call) -> web.Response:
    """The original skipped the fields that are None: nothing given is the run unchanged. It
    looked the run up first, so an unknown run is a 404 even with a state that does not exist."""
    assert c.body is not None
    if all(value is None for value in c.body.values()):
        return _run(await c.calls.get_run(c.run_id))
    try:
        req = inbound.update_run_request(c.run_id, c.body)
    except HttpError as err:
        if err.status == 400:
            await c.calls.get_run(c.run_id)
        raise
    return _run(await c.calls.update_run(req))


@handles
async def retry_run(c: Call) -> web.Response:
    return _run(await c.calls.retry_run(c.run_id))


@handles
async def cancel_run(c: Call) -> web.Response:
    try:
        return _run(await c.calls.cancel_run(c.run_id))
    except GyozaError as err:
        error = from_rpc(err, c.run_id)
        if error.extra.get("reason") == "RUN_LOCKED" and "state" in error.extra.get("metadata", {}):
            # The original's words for this refusal.
            error.detail = f"Run is already in terminal state {error.extra['metadata']['state']}"
        raise error from None


@handles
async def list_events(c: Call) -> web.Response:
    if c.params["scope"] == "run":
        return await _timeline(c)
    # The original: the current attempt's events from index after + 1 (a Python slice, so a
    # negative `after` counts from the end), each with the run's current state.
    run = await c.calls.get_run(c.run_id)
    after = c.params["after"]
    start = after + 1 if after is not None else 0
    chosen = list(run.events)[start:]
    return _json({"events": [r.polled_event(i, e, run.state) for i, e in enumerate(chosen, start)]})


async def _timeline(c: Call) -> web.Response:
    """Every attempt's events by run-wide id, 1,000 a page."""
    after = c.params["after"]
    if after is not None and after < 0:
        after = None
    elif after is not None and after > _INT64_MAX:
        after = _INT64_MAX
    resp = await c.calls.list_events(c.run_id, after=after, limit=EVENTS_PAGE)
    return _json(r.render(r.TIMELINE, resp))


@handles
async def add_event(c: Call) -> web.Response:
    """The original looked the run up first: an unknown run is a 404 whatever the event."""
    assert c.body is not None
    try:
        req = inbound.add_event_request(c.run_id, c.body)
    except HttpError as err:
        if err.status == 400:
            await c.calls.get_run(c.run_id)
        raise
    return _run(await c.calls.add_event(req))


@handles
async def list_attempts(c: Call) -> web.Response:
    return _json(r.render_all(r.ATTEMPT, await c.calls.list_attempts(c.run_id)))


@handles
async def get_definition(c: Call) -> web.Response:
    definition = await c.calls.get_definition(c.params["name"], c.params["version"] or "")
    return _json(r.render(r.DEFINITION, definition))


@handles
async def create_run_from_definition(c: Call) -> web.Response:
    req = inbound.run_from_definition_request(c.params["name"], c.body or {})
    return _run(await c.calls.create_run_from_definition(req), 201)


@handles
async def list_definitions(c: Call) -> web.Response:
    resp = await c.calls.list_definitions(c.params["limit"], c.params["starting_after"] or "")
    return _json(r.render(r.DEFINITION_LIST, resp))


@handles
async def list_definition_versions(c: Call) -> web.Response:
    resp = await c.calls.list_definition_versions(c.params["name"])
    return _json(r.render(r.DEFINITION_VERSIONS, resp))


@handles
async def list_workers(c: Call) -> web.Response:
    return _json(r.render(r.WORKER_LIST, await c.calls.list_workers()))


@handles
async def get_worker(c: Call) -> web.Response:
    return _json(r.render(r.WORKER, await c.calls.get_worker(c.params["worker_id"])))


@handles
async def get_access(c: Call) -> web.Response:
    return _json(r.render(r.CALLER, await c.calls.get_caller()))


async def openapi_json(request: web.Request) -> web.Response:
    return _json(document())


def _handlers() -> dict[str, RouteHandler]:
    """Every route's handler; sse.py's register as it is imported (it imports this module,
    so not before now)."""
    from gyoza_grpc.gateway import sse  # noqa: F401

    routes = {route.operation_id for route in ROUTES}
    if routes != set(HANDLERS):
        raise RuntimeError(
            f"routes without a handler: {sorted(routes - set(HANDLERS))}; "
            f"handlers without a route: {sorted(set(HANDLERS) - routes)}"
        )
    return HANDLERS


def _route_handler(route: Route, handle: RouteHandler) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        call = await read(request, route)
        try:
            return await handle(call)
        except (GyozaError, grpc.aio.AioRpcError) as err:  # a call's, or a stream's own
            raise from_rpc(err, call.params.get("id") if "{id}" in route.path else None) from None

    return handler


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as err:
        return _json(err.body(), status=err.status)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        headers = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else None
        return web.json_response({"detail": err.reason}, status=err.status, headers=headers)


def make_app(
    target: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, client: AsyncClient | None = None
) -> web.Application:
    """The gateway for the server at `target`, each call with a deadline of `timeout_s` (or
    through `client`, which the caller owns). Only the callers' keys are sent, never one
    of the gateway's own; the channel is plaintext, as `--target` says nothing of TLS."""
    # A trailing slash is Starlette's 307 to the path without it.
    slashes = web.normalize_path_middleware(
        append_slash=False,
        remove_slash=True,
        merge_slashes=False,
        redirect_class=web.HTTPTemporaryRedirect,
    )
    app = web.Application(middlewares=[slashes, json_errors, ui_headers])

    async def upstream(app: web.Application) -> AsyncIterator[None]:
        own = client or AsyncClient(
            target, api_key="", tls=False, timeout=timedelta(seconds=timeout_s), retry=RETRY
        )
        app[UPSTREAM] = Upstream(own)
        yield
        if client is None:
            await own.close()

    async def end_streams(app: web.Application) -> None:
        app[UPSTREAM].end_streams()

    app.cleanup_ctx.append(upstream)
    app.on_shutdown.append(end_streams)
    handlers = _handlers()
    for route in ROUTES:
        handler = _route_handler(route, handlers[route.operation_id])
        app.router.add_route(route.method, route.path, handler, name=route.operation_id)
    app.router.add_get("/openapi.json", openapi_json, allow_head=False)
    add_dashboard(app)
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
    runner = GatewayRunner(
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
