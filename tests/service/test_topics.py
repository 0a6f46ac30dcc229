"""Topic feeds through a real server: gap-free cursors under concurrent writers, exact
resumption, attributes, live delivery and validation."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from google.protobuf import struct_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc, topics_pb2, topics_pb2_grpc

ET = runs_pb2


@pytest.fixture
def topics(channel: grpc.aio.Channel) -> topics_pb2_grpc.TopicServiceStub:
    return topics_pb2_grpc.TopicServiceStub(channel)


async def create_on_topic(
    runs: runs_pb2_grpc.RunServiceStub, topic: str, **attributes: object
) -> runs_pb2.Run:
    attrs = struct_pb2.Struct()
    attrs.update(attributes)
    req = runs_pb2.CreateRunRequest(
        image="img", event_delivery=runs_pb2.EventDelivery(topic=topic, attributes=attrs)
    )
    return (await runs.CreateRun(req)).run


async def drive(runs: runs_pb2_grpc.RunServiceStub, run_id: str, n_progress: int) -> None:
    await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run_id, type=ET.EVENT_TYPE_STARTED))
    for i in range(n_progress):
        await runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=run_id, type=ET.EVENT_TYPE_PROGRESS, progress=i)
        )
        await asyncio.sleep(0)
    await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run_id, type=ET.EVENT_TYPE_COMPLETED))


async def test_topic_feed_with_concurrent_writers_and_random_resumes(
    runs: runs_pb2_grpc.RunServiceStub, topics: topics_pb2_grpc.TopicServiceStub
) -> None:
    rng = random.Random(11)
    created = [await create_on_topic(runs, "feed", n=i) for i in range(20)]
    per_run = 10
    expected_total = 20 * (per_run + 2)
    writers = asyncio.gather(*(drive(runs, r.id, per_run) for r in created))

    received: list[topics_pb2.TopicEvent] = []
    last: int | None = None
    while len(received) < expected_total:
        req = topics_pb2.WatchTopicRequest(topic="feed")
        if last is not None:
            req.after = last
        call = topics.WatchTopic(req)
        budget = rng.randint(1, 25)
        got = 0
        async for item in call:
            if not item.HasField("event"):
                continue
            received.append(item.event)
            last = item.event.cursor
            got += 1
            if got >= budget or len(received) == expected_total:
                call.cancel()
                break
    await writers

    assert [te.cursor for te in received] == list(range(1, expected_total + 1))
    keys = [(te.run_id, te.event.seq) for te in received]
    assert len(set(keys)) == expected_total
    by_run: dict[str, list[int]] = {}
    for te in received:
        by_run.setdefault(te.run_id, []).append(te.event.seq)
        assert te.attributes["n"] == [r.id for r in created].index(te.run_id)
        assert te.topic == "feed"
    assert all(seqs == list(range(per_run + 2)) for seqs in by_run.values())

    # The same feed read back with ListTopicEvents pages is identical.
    listed: list[topics_pb2.TopicEvent] = []
    after = 0
    while True:
        page = await topics.ListTopicEvents(
            topics_pb2.ListTopicEventsRequest(topic="feed", after=after, limit=37)
        )
        listed += page.events
        if not page.has_more:
            break
        after = page.events[-1].cursor
    assert [(t.cursor, t.run_id, t.event.seq) for t in listed] == [
        (t.cursor, t.run_id, t.event.seq) for t in received
    ]


async def test_topics_are_independent_and_runs_without_topic_publish_nothing(
    runs: runs_pb2_grpc.RunServiceStub, topics: topics_pb2_grpc.TopicServiceStub
) -> None:
    a = await create_on_topic(runs, "a")
    b = await create_on_topic(runs, "b")
    plain = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))).run
    for r in (a, b, plain):
        await drive(runs, r.id, 1)
    for name, run in (("a", a), ("b", b)):
        page = await topics.ListTopicEvents(topics_pb2.ListTopicEventsRequest(topic=name))
        assert [t.cursor for t in page.events] == [1, 2, 3]
        assert {t.run_id for t in page.events} == {run.id}
        assert not page.has_more
    empty = await topics.ListTopicEvents(topics_pb2.ListTopicEventsRequest(topic="nobody"))
    assert list(empty.events) == [] and not empty.has_more


async def test_a_live_watch_receives_events_as_they_commit(
    runs: runs_pb2_grpc.RunServiceStub, topics: topics_pb2_grpc.TopicServiceStub
) -> None:
    call = topics.WatchTopic(topics_pb2.WatchTopicRequest(topic="live"))
    run = await create_on_topic(runs, "live", team="x")
    await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=ET.EVENT_TYPE_STARTED))
    item = await asyncio.wait_for(call.read(), 5)
    assert item.event.cursor == 1
    assert item.event.event.type == ET.EVENT_TYPE_STARTED
    assert item.event.attributes["team"] == "x"
    call.cancel()


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (topics_pb2.ListTopicEventsRequest(topic=""), "topic"),
        (topics_pb2.ListTopicEventsRequest(topic="t", limit=1001), "limit"),
        (topics_pb2.ListTopicEventsRequest(topic="t", limit=-1), "limit"),
        (topics_pb2.ListTopicEventsRequest(topic="t", after=-2), "after"),
    ],
)
async def test_invalid_topic_requests(
    topics: topics_pb2_grpc.TopicServiceStub,
    request_: topics_pb2.ListTopicEventsRequest,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await topics.ListTopicEvents(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")
