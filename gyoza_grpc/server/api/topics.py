"""TopicService: topic feeds, replayed and live, in each topic's own cursor order."""

from __future__ import annotations

import functools
from typing import Any, TypeAlias

import grpc

from gyoza.v1 import topics_pb2, topics_pb2_grpc
from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.limits import DEFAULT_LIMITS, Limits
from gyoza_grpc.domain.model import TopicEvent
from gyoza_grpc.server.api import convert
from gyoza_grpc.server.api.errors import streaming, unary
from gyoza_grpc.server.api.response_budget import ResponseBudget, fill_within
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.streams.watch import EventWatcher, Heartbeat
from gyoza_grpc.server.streams.watch_slots import WatchSlots

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _topic(value: str) -> str:
    return convert.required_text(value, "topic")


def _after(request: topics_pb2.WatchTopicRequest | topics_pb2.ListTopicEventsRequest) -> int:
    if not request.HasField("after"):
        return 0
    if request.after < 0:
        raise InvalidArgument.field("after", f"must be >= 0 (a cursor), got {request.after}")
    return request.after


def fill_topic_event(out: topics_pb2.TopicEvent, te: TopicEvent) -> None:
    out.cursor = te.cursor
    out.run_id = te.event.run_id
    convert.fill_event(out.event, te.event)
    out.attributes.CopyFrom(convert.dict_to_struct(te.attributes))
    out.topic = te.topic


def topic_event_to_pb(te: TopicEvent) -> topics_pb2.TopicEvent:
    out = topics_pb2.TopicEvent()
    fill_topic_event(out, te)
    return out


def _topic_response(te: TopicEvent) -> topics_pb2.WatchTopicResponse:
    return topics_pb2.WatchTopicResponse(event=topic_event_to_pb(te))


class TopicServicer(topics_pb2_grpc.TopicServiceServicer):
    def __init__(
        self,
        store: RunStore,
        watcher: EventWatcher,
        *,
        watch_slots: WatchSlots | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._store = store
        self._watcher = watcher
        self._slots = watch_slots or WatchSlots(limits.max_watch_streams)
        self._limits = limits

    @unary
    async def ListTopicEvents(
        self, request: topics_pb2.ListTopicEventsRequest, context: Context
    ) -> topics_pb2.ListTopicEventsResponse:
        topic = _topic(request.topic)
        after = _after(request)
        limit = request.limit or DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument.for_fields(
                [FieldViolation("limit", f"must be between 1 and {MAX_LIMIT} (0 means 100)")]
            )
        found, has_more = await self._store.list_topic_events(topic, after=after, limit=limit)
        out = topics_pb2.ListTopicEventsResponse()
        budget = ResponseBudget(self._limits.max_response_bytes)
        complete = fill_within(budget, out.events, found, fill_topic_event)
        out.has_more = has_more or not complete
        return out

    @streaming
    async def WatchTopic(self, request: topics_pb2.WatchTopicRequest, context: Context) -> Any:
        topic = _topic(request.topic)
        after = _after(request)
        wire = self._watcher.wire  # one message per topic event, shared by all of its watchers
        with self._slots.held(context):
            accepted = functools.partial(context.send_initial_metadata, ())
            async for item in self._watcher.watch_topic(topic, after, accepted=accepted):
                if isinstance(item, Heartbeat):
                    yield topics_pb2.WatchTopicResponse(
                        heartbeat=topics_pb2.TopicHeartbeat(
                            last_cursor=item.position, server_time=convert.now_pb(item.server_time)
                        )
                    )
                else:
                    yield wire.get(("topic", item.topic, item.cursor), _topic_response, item)
