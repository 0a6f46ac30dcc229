"""GET /runs/{id}/events/stream: WatchEvents as server-sent events through the gateway."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse

from tests.conftest import eventually
from tests.gateway.conftest import Gateway
from tests.gateway.schema_check import check_frame

READ_TIMEOUT_S = 10.0


@dataclass
class Frame:
    """One SSE block: its fields, and its comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return json.loads(self.fields["data"])


async def next_frame(resp: ClientResponse) -> Frame | None:
    """The next blank-line-terminated block, or None at the end of the stream."""
    frame = Frame()
    while True:
        line = await asyncio.wait_for(resp.content.readline(), READ_TIMEOUT_S)
        if not line:
            return None
        text = line.decode().rstrip("\n")
        if text == "":
            if frame.fields:
                check_frame(frame.fields, resp.url.path)
            return frame
        if text.startswith(":"):
            frame.comments.append(text[1:].strip())
        else:
            name, _, value = text.partition(": ")
            frame.fields[name] = value


async def frames_to_end(resp: ClientResponse) -> list[Frame]:
    """Every frame up to and including `event: end`, then the stream must close."""
    out: list[Frame] = []
    while True:
        frame = await next_frame(resp)
        assert frame is not None, "the stream closed without `event: end`"
        if frame.comments and not frame.fields:
            continue  # a heartbeat
        out.append(frame)
        if frame.fields.get("event") == "end":
            assert await next_frame(resp) is None
            return out


async def open_stream(gateway: Gateway, run_id: str, **kwargs: Any) -> ClientResponse:
    resp = await gateway.http.get(f"/runs/{run_id}/events/stream", **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return resp


async def finished_run(gateway: Gateway) -> str:
    rid = (await gateway.create())["id"]
    await gateway.event(rid, "STARTED", payload={"worker_id": "w1"})
    await gateway.event(rid, "PROGRESS", msg=50)
    await gateway.event(rid, "COMPLETED", payload={"outputs": {"y": 2}})
    return rid  # type: ignore[no-any-return]


async def test_live_events_then_end_at_terminal(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    resp = await open_stream(gateway, rid)
    # A quiet stream gets heartbeats (comments) from WatchEvents' heartbeats.
    first = await next_frame(resp)
    assert first is not None and first.comments == ["heartbeat -1"] and not first.fields
    await gateway.event(rid, "STARTED", payload={"worker_id": "w1"})
    await gateway.event(rid, "PROGRESS", msg=50)
    await gateway.event(rid, "COMPLETED", payload={"outputs": {"y": 2}})
    frames = await frames_to_end(resp)
    assert [f.fields.get("id") for f in frames] == ["0", "1", "2", None]
    assert [f.data.get("type") for f in frames[:3]] == ["STARTED", "PROGRESS", "COMPLETED"]
    # Each data line is the same JSON as the run-wide timeline shows.
    listed = (await gateway.call("GET", f"/runs/{rid}/events?scope=run", 200))["events"]
    assert [f.data for f in frames[:3]] == listed
    assert frames[3].fields["event"] == "end"


async def test_an_automatic_retry_does_not_end_the_stream(gateway: Gateway) -> None:
    rid = (await gateway.create(retry_policy={"max_attempts": 2}))["id"]
    resp = await open_stream(gateway, rid)
    await gateway.event(rid, "STARTED", payload={"worker_id": "w1"})
    await gateway.event(rid, "FAILED", payload={"error_message": "boom"})  # -> RETRIED
    await gateway.event(rid, "STARTED", payload={"worker_id": "w2"})
    await gateway.event(rid, "FAILED", payload={"error_message": "boom again"})
    frames = await frames_to_end(resp)
    assert [(f.data.get("type"), f.data.get("attempt")) for f in frames[:-1]] == [
        ("STARTED", 1),
        ("FAILED", 1),
        ("RETRIED", 2),
        ("STARTED", 2),
        ("FAILED", 2),
    ]


async def test_replay_resumes_after_last_event_id_or_after(gateway: Gateway) -> None:
    rid = await finished_run(gateway)
    frames = await frames_to_end(await open_stream(gateway, rid))
    assert [f.fields.get("id") for f in frames] == ["0", "1", "2", None]
    resumed = await frames_to_end(await open_stream(gateway, rid, headers={"Last-Event-ID": "0"}))
    assert [f.fields.get("id") for f in resumed] == ["1", "2", None]
    after = await frames_to_end(await open_stream(gateway, rid, params={"after": "1"}))
    assert [f.fields.get("id") for f in after] == ["2", None]
    # An EventSource reconnecting keeps its URL: Last-Event-ID wins over ?after=.
    both = await frames_to_end(
        await open_stream(gateway, rid, params={"after": "0"}, headers={"Last-Event-ID": "1"})
    )
    assert [f.fields.get("id") for f in both] == ["2", None]
    # After the terminal event: nothing to send, the stream ends at once.
    done = await frames_to_end(await open_stream(gateway, rid, headers={"Last-Event-ID": "2"}))
    assert [f.fields.get("event") for f in done] == ["end"]


async def test_bad_cursor_is_422(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    body = await gateway.call(
        "GET", f"/runs/{rid}/events/stream", 422, headers={"Last-Event-ID": "x"}
    )
    assert body["detail"][0]["loc"] == ["header", "Last-Event-ID"]
    await gateway.call("GET", f"/runs/{rid}/events/stream?after=x", 422)


async def test_client_disconnect_cancels_the_watch(gateway: Gateway) -> None:
    fanout = gateway.server.fanout
    before = fanout.subscriber_count()
    rid = (await gateway.create())["id"]
    resp = await open_stream(gateway, rid)
    frame = await next_frame(resp)  # the watch is running
    assert frame is not None
    assert fanout.subscriber_count() == before + 1
    resp.close()

    async def unsubscribed() -> bool:
        return fanout.subscriber_count() == before

    await eventually(unsubscribed, timeout_s=10)


async def test_server_shutdown_mid_stream_is_an_error_event(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    resp = await open_stream(gateway, rid)
    await gateway.event(rid, "STARTED", payload={"worker_id": "w1"})
    frame = await next_frame(resp)
    while frame is not None and "id" not in frame.fields:
        frame = await next_frame(resp)
    assert frame is not None and frame.fields["id"] == "0"
    await gateway.server.stop(0)
    frame = await next_frame(resp)
    while frame is not None and not frame.fields:
        frame = await next_frame(resp)
    assert frame is not None and frame.fields["event"] == "error"
    assert frame.data["status"] == 503
    assert frame.data["code"] == "UNAVAILABLE"
    assert "after" in frame.data["detail"]  # the server says where to resume
    assert await next_frame(resp) is None
