"""TopicService's calls: a topic's feed, paged or followed live."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from gyoza.v1 import topics_pb2
from gyoza_grpc.client.paging import AsyncPager, Page
from gyoza_grpc.client.transport import Transport
from gyoza_grpc.client.watching import Resumable

TOPIC_EVENTS_PAGE_SIZE = 1000  # the most ListTopicEvents answers at once


class TopicCalls:
    """The TopicService part of `AsyncClient` (and, through it, of `Client`)."""

    _transport: Transport

    def list_topic_events(
        self,
        topic: str,
        *,
        after: int | None = None,
        page_size: int = TOPIC_EVENTS_PAGE_SIZE,
        limit: int | None = None,
        timeout: timedelta | None = None,
    ) -> AsyncPager[topics_pb2.TopicEvent]:
        """A topic's events in cursor order, read lazily: after cursor `after`, `page_size`
        per call (1..1000), at most `limit` in all."""

        async def fetch(
            previous: Sequence[topics_pb2.TopicEvent] | None, size: int
        ) -> Page[topics_pb2.TopicEvent]:
            request = topics_pb2.ListTopicEventsRequest(
                topic=topic, after=after if previous is None else previous[-1].cursor, limit=size
            )
            resp = await self._transport.unary(
                self._transport.stubs.topics.ListTopicEvents, request, timeout=timeout, retry=True
            )
            return Page(list(resp.events), resp.has_more)

        return AsyncPager(fetch, page_size=page_size, limit=limit)

    def watch_topic(
        self, topic: str, *, after: int | None = None
    ) -> AsyncIterator[topics_pb2.TopicEvent]:
        """A topic's events after cursor `after` (all when None), then live, for as long as
        the caller iterates (a topic's stream never ends by itself).

        It resumes by itself after a dropped connection or a server restart, from the last
        event delivered: every event comes once, in cursor order. Keep `event.cursor` to pick
        up later with `after=` (in another process, say).
        """
        transport = self._transport

        def open_after(position: int | None) -> Any:
            request = topics_pb2.WatchTopicRequest(topic=topic, after=position)
            return transport.open_stream(transport.stubs.topics.WatchTopic, request)

        def unpack(
            message: topics_pb2.WatchTopicResponse,
        ) -> tuple[topics_pb2.TopicEvent | None, int]:
            if message.HasField("event"):
                return message.event, message.event.cursor
            return None, message.heartbeat.last_cursor

        return transport.follow(
            Resumable(f"watch of topic {topic}", open_after, unpack), after=after
        )
