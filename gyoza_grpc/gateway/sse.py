"""GET /runs/{id}/events/stream: WatchEvents as server-sent events.

Each event is `id: <seq>` and `data: <event JSON>`, so a browser's EventSource that reconnects
sends Last-Event-ID and resumes right after the last event it saw (the header wins over
`?after=`). A WatchEvents heartbeat is an SSE comment. When the gRPC stream ends (after the
event that leaves the run terminal) the gateway sends `event: end` and closes; a gRPC error
mid-stream is an `event: error` whose data is the JSON error body. A client that disconnects
cancels the gRPC call.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
from aiohttp import web

from gyoza_grpc.gateway import responses as r
from gyoza_grpc.gateway.app import Call
from gyoza_grpc.gateway.errors import from_rpc


def _frame(data: Any, *, event_id: int | None = None, event: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data)}")
    return ("\n".join(lines) + "\n\n").encode()


async def stream_events(c: Call) -> web.StreamResponse:
    after = c.params["Last-Event-ID"]
    if after is None:
        after = c.params["after"]
    # An unknown run or a refused key is a plain JSON error, before the stream's 200.
    await c.calls.check_run(c.run_id)
    call = c.calls.watch_events(c.run_id, after)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    request = c.request
    try:
        await response.prepare(request)
        try:
            async for item in call:
                if item.HasField("event"):
                    e = item.event
                    await response.write(_frame(r.render(r.EVENT, e), event_id=e.seq))
                else:
                    await response.write(f": heartbeat {item.heartbeat.last_seq}\n\n".encode())
        except grpc.aio.AioRpcError as err:
            error = from_rpc(err, c.run_id)
            await response.write(_frame({**error.body(), "status": error.status}, event="error"))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the client went away (aiohttp cancels its handler)
            # The gateway's own shutdown cancelled the call (Upstream.end_streams).
            body = {"detail": "the gateway is shutting down; reconnect to resume", "status": 503}
            await response.write(_frame(body, event="error"))
        else:
            await response.write(_frame({}, event="end"))
        await response.write_eof()
    except ConnectionResetError:  # the client went away while we wrote
        pass
    finally:
        call.cancel()
    return response
