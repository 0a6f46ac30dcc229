"""Watch streams: every event once and in order, across dropped connections and quiet spells,
heartbeats kept inside, the end of the run ending the iteration."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from gyoza.v1 import runs_pb2
from gyoza_grpc.client import (
    AsyncClient,
    EventType,
    NotFound,
    RetryConfig,
    RetryPolicy,
    RunState,
)
from gyoza_grpc.server import GyozaServer
from tests.client.conftest import Either, until
from tests.client.proxy import Proxy
from tests.conftest import served

# Resume quickly and for long: these tests break the stream on purpose, many times.
PATIENT = RetryConfig(max_attempts=100, max_backoff=timedelta(milliseconds=200))


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    """Heartbeats every 50 ms, so a test sees many of them."""
    async with served(sqlite_url, watch_heartbeat_s=0.05) as gs:
        yield gs


@pytest.fixture
async def writer(server: GyozaServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.target) as client:
        yield client


async def test_a_watch_follows_a_retry_skips_heartbeats_and_ends_with_the_run(
    client: Either, writer: AsyncClient, server: GyozaServer
) -> None:
    run = await writer.create_run("img", retry_policy=RetryPolicy(max_attempts=2))
    watcher = client.start("watch_events", run.id)
    await writer.add_event(run.id, EventType.STARTED, payload={"worker_id": "w"})
    await until(lambda: len(watcher.items) == 1)
    # A quiet spell: heartbeats go by (the raw stream shows them), and none reaches the caller.
    raw = writer.run_service.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id, after=0))
    assert (await raw.read()).HasField("heartbeat")
    raw.cancel()
    await writer.add_event(run.id, EventType.FAILED, msg="boom")  # retried automatically
    await writer.add_event(run.id, EventType.STARTED, payload={"worker_id": "w"})
    await writer.add_event(run.id, EventType.COMPLETED, payload={"outputs": {"ok": True}})
    events = await watcher.wait()
    assert [(e.seq, e.type) for e in events] == [
        (0, EventType.STARTED),
        (1, EventType.FAILED),
        (2, EventType.RETRIED),
        (3, EventType.STARTED),
        (4, EventType.COMPLETED),
    ]
    # After the end: nothing more, and the iteration ends at once.
    assert await client.collect("watch_events", run.id, after=4) == []
    assert [e.seq for e in await client.collect("watch_events", run.id, after=2)] == [3, 4]
    with pytest.raises(NotFound) as missing:
        await client.collect("watch_events", "no-such-run")
    assert missing.value.reason == "RUN_NOT_FOUND"


async def test_dropped_connections_lose_and_repeat_nothing(
    kind: str, writer: AsyncClient, server: GyozaServer
) -> None:
    async with (
        Proxy(server.target) as proxy,
        Either(kind, proxy.target, watch_retry=PATIENT) as client,
    ):
        run = await writer.create_run("img", topic="t-drops")
        events = client.start("watch_events", run.id)
        feed = client.start("watch_topic", "t-drops", take=61)
        total = 0
        for _ in range(3):  # drop every connection while the watchers are idle...
            for _ in range(10):
                await writer.add_event(run.id, EventType.INFO, msg=str(total))
                total += 1
            await until(lambda t=total: len(events.items) >= t and len(feed.items) >= t)
            proxy.cut()
        for n in range(30):  # ...and in the middle of a burst
            await writer.add_event(run.id, EventType.INFO, msg=str(total))
            total += 1
            if n in (5, 17):
                proxy.cut()
        await writer.cancel_run(run.id)
        got = await events.wait()
        topic = await feed.wait()
    assert [e.seq for e in got] == list(range(total + 1))
    assert [e.msg for e in got[:-1]] == [str(n) for n in range(total)]
    assert got[-1].state == RunState.CANCELLED
    assert [t.cursor for t in topic] == list(range(1, total + 2))
    assert proxy.connections >= 4  # one channel, reconnected after each cut it saw


async def test_a_stream_quiet_past_the_idle_timeout_is_resumed(
    kind: str, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's heartbeat (30 s here) is slower than the client's idle timeout: the
    client takes the quiet stream for lost and reopens it, and still loses nothing."""
    caplog.set_level(logging.DEBUG, logger="gyoza_grpc.client")

    def resumes() -> int:
        return sum(getattr(r, "action", "") == "resume_watch" for r in caplog.records)

    async with (
        served(sqlite_url, watch_heartbeat_s=30) as gs,
        AsyncClient(gs.target) as writer,
        Either(
            kind,
            gs.target,
            watch_retry=PATIENT,
            watch_idle_timeout=timedelta(milliseconds=200),
        ) as client,
    ):
        run = await writer.create_run("img")
        watcher = client.start("watch_events", run.id)
        await writer.add_event(run.id, EventType.INFO, msg="first")
        await until(lambda: len(watcher.items) == 1)
        await until(lambda: resumes() >= 3)  # three quiet spells, three new streams
        await writer.add_event(run.id, EventType.INFO, msg="second")
        await writer.cancel_run(run.id)
        got = await watcher.wait()
    assert [e.msg for e in got[:2]] == ["first", "second"] and len(got) == 3
    assert "no message for 0.2s" in caplog.text
