"""GET /runs/{id}/events/stream: WatchEvents as server-sent events; GET /runs/stream: WatchRuns.

Each event is `id: <seq>` and `data: <event JSON>`, so a browser's EventSource that reconnects
sends Last-Event-ID and resumes right after the last event it saw (the header wins over
`?after=`). A WatchEvents heartbeat is an SSE comment. When the gRPC stream ends (after the
event that leaves the run terminal) the gateway sends `event: end` and closes; a gRPC error
mid-stream is an `event: error` whose data is the JSON error body. A client that disconnects
cancels the gRPC call.

GET /runs/stream has no cursor (WatchRuns replays nothing): `event: ready` once the server
has subscribed the stream (its gRPC headers came), then `event: run` per run created or
changed, `event: resync` when changes may have been missed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
from aiohttp import web

from gyoza_grpc.gateway import inbound
from gyoza_grpc.gateway import responses as r
from gyoza_grpc.gateway.app import Call, handles
from gyoza_grpc.gateway.errors import from_rpc

_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def _frame(data: Any, *, event_id: int | None = None, event: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data)}")
    return ("\n".join(lines) + "\n\n").encode()


@handles
async def stream_events(c: Call) -> web.StreamResponse:
    after = c.params["Last-Event-ID"]
    if after is None:
        after = c.params["after"]
    # An unknown run or a refused key is a plain JSON error, before the stream's 200.
    await c.calls.check_run(c.run_id)
    call = c.calls.watch_events(c.run_id, after)
    response = web.StreamResponse(headers=_HEADERS)
    try:
        await response.prepare(c.request)
        try:
            async for item in call:
                if item.HasField("event"):
                    e = item.event
                    await response.write(_frame(r.render(r.EVENT, e), event_id=e.seq))
                else:
                    await response.write(f": heartbeat {item.heartbeat.last_seq}\n\n".encode())
        except grpc.aio.AioRpcError as err:
            await _write_error(response, err, c.run_id)
        except asyncio.CancelledError:
            if _client_left():
                raise
            await _shutting_down(response)
        else:
            await response.write(_frame({}, event="end"))
        await response.write_eof()
    except ConnectionResetError:  # the client went away while we wrote
        pass
    finally:
        call.cancel()
    return response


@handles
async def stream_runs(c: Call) -> web.StreamResponse:
    call = c.calls.watch_runs(inbound.watch_runs_request(c.params))
    try:
        # The headers come once the server has subscribed; a refused call (a key, a filter)
        # has ended by then: a plain JSON error, before the stream's 200.
        await call.initial_metadata()
        if call.done():
            await call.read()  # raises the call's error
        response = web.StreamResponse(headers=_HEADERS)
        try:
            await response.prepare(c.request)
            await response.write(_frame({}, event="ready"))
            try:
                async for item in call:
                    if item.HasField("run"):
                        await response.write(_frame(r.render(r.RUN, item.run), event="run"))
                    elif item.HasField("resync"):
                        data = r.render(r.RESYNC, item.resync)
                        await response.write(_frame(data, event="resync"))
                    else:
                        await response.write(b": heartbeat\n\n")
            except grpc.aio.AioRpcError as err:
                await _write_error(response, err, None)
            except asyncio.CancelledError:
                if _client_left():
                    raise
                await _shutting_down(response, "reconnect, then list the runs again")
            await response.write_eof()
        except ConnectionResetError:  # the client went away while we wrote
            pass
        return response
    finally:
        call.cancel()


async def _write_error(
    response: web.StreamResponse, err: grpc.aio.AioRpcError, run_id: str | None
) -> None:
    error = from_rpc(err, run_id)
    await response.write(_frame({**error.body(), "status": error.status}, event="error"))


def _client_left() -> bool:
    """Whether a stream's cancellation is the client going away (aiohttp cancels its
    handler), not the gateway's own shutdown cancelling the call (Upstream.end_streams)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _shutting_down(response: web.StreamResponse, then: str = "reconnect to resume") -> None:
    body = {"detail": f"the gateway is shutting down; {then}", "status": 503}
    await response.write(_frame(body, event="error"))
