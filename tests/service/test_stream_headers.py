"""Watch streams send their response headers as soon as they are accepted (issue 16).

grpc.aio sends a stream's headers with its first message unless the handler sends them: on a
quiet run WatchEvents sent none until the first event or heartbeat (15 s by default), and a
client that waits for the headers before it adds events (grpc-js's `metadata` event, grpclib's
`recv_initial_metadata()`) hung that long. Headers now go once the watch is subscribed (and,
for a run, the run found), so every event added after they arrive reaches the stream.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, topics_pb2, topics_pb2_grpc

R = runs_pb2
HEADERS_WITHIN_S = 1.0  # the quiet interval before a heartbeat is 15 s


async def test_a_watch_on_a_quiet_run_sends_headers_at_once(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    run = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
    call = runs.WatchEvents(R.WatchEventsRequest(run_id=run.id, after=run.last_seq))
    try:
        await asyncio.wait_for(call.initial_metadata(), HEADERS_WITHIN_S)
        # Headers first, then an event: the event reaches the stream.
        await runs.AddEvent(R.AddEventRequest(run_id=run.id, type=R.EVENT_TYPE_INFO, msg="hi"))
        first = await asyncio.wait_for(call.read(), 5)
        assert first.event.msg == "hi"
    finally:
        call.cancel()


async def test_a_watch_on_a_quiet_topic_sends_headers_at_once(
    channel: grpc.aio.Channel, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    topics = topics_pb2_grpc.TopicServiceStub(channel)
    call = topics.WatchTopic(topics_pb2.WatchTopicRequest(topic="quiet"))
    try:
        await asyncio.wait_for(call.initial_metadata(), HEADERS_WITHIN_S)
        req = R.CreateRunRequest(image="img", event_delivery=R.EventDelivery(topic="quiet"))
        run = (await runs.CreateRun(req)).run
        await runs.AddEvent(R.AddEventRequest(run_id=run.id, type=R.EVENT_TYPE_INFO, msg="hi"))
        first = await asyncio.wait_for(call.read(), 5)
        assert first.event.run_id == run.id
    finally:
        call.cancel()


async def test_an_unknown_run_still_ends_with_not_found(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    call = runs.WatchEvents(R.WatchEventsRequest(run_id="no-such-run"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(call.read(), 5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
