"""Pagers: every item once, in order, a page fetched only when the iteration reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gyoza_grpc.client import AsyncClient, EventType, InvalidArgument
from gyoza_grpc.server import GyozaServer
from tests.cli.conftest import MetadataRecorder
from tests.client.conftest import Either
from tests.conftest import launch


@pytest.fixture
async def recorded(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[GyozaServer, MetadataRecorder]]:
    """A server that remembers every call it receives."""
    recorder = MetadataRecorder()
    real_server = grpc.aio.server

    def recording_server(*args: Any, interceptors: Any = (), **kwargs: Any) -> Any:
        return real_server(*args, interceptors=[*interceptors, recorder], **kwargs)

    monkeypatch.setattr(grpc.aio, "server", recording_server)
    gs = await launch(sqlite_url)
    try:
        yield gs, recorder
    finally:
        await gs.stop(0)


def calls_to(recorder: MetadataRecorder, method: str) -> int:
    return len(recorder.keys_sent_to(method))


async def make_runs(target: str, image: str, n: int) -> list[str]:
    """n runs, oldest first (their ids)."""
    async with AsyncClient(target) as writer:
        return [(await writer.create_run(image)).id for _ in range(n)]


async def test_runs_page_lazily_each_once_in_both_directions(
    kind: str, recorded: tuple[GyozaServer, MetadataRecorder]
) -> None:
    gs, recorder = recorded
    ids = await make_runs(gs.target, "img-paging", 23)
    newest_first = ids[::-1]
    async with Either(kind, gs.target) as client:
        pager_calls = calls_to(recorder, "ListRuns")
        got = await client.collect("list_runs", image="img-paging", page_size=5)
        assert [r.id for r in got] == newest_first
        assert calls_to(recorder, "ListRuns") - pager_calls == 5  # 5 + 5 + 5 + 5 + 3

        before = calls_to(recorder, "ListRuns")
        first = await client.collect("list_runs", image="img-paging", page_size=5, take=3)
        assert [r.id for r in first] == newest_first[:3]
        assert calls_to(recorder, "ListRuns") - before == 1  # only the page it read

        pages = await client.pages("list_runs", image="img-paging", page_size=10)
        assert [len(p.items) for p in pages] == [10, 10, 3]
        assert [p.has_more for p in pages] == [True, True, False]

        limited = await client.pages("list_runs", image="img-paging", page_size=10, limit=15)
        assert [len(p.items) for p in limited] == [10, 5]
        assert limited[-1].has_more  # the limit left runs out

        after = await client.collect("list_runs", image="img-paging", starting_after=ids[10])
        assert [r.id for r in after] == newest_first[13:]  # the 10 runs older than ids[10]
        newer = await client.pages(
            "list_runs", image="img-paging", ending_before=ids[5], page_size=4
        )
        # Towards newer runs, a page at a time; each page newest first.
        assert [[r.id for r in p.items] for p in newer] == [
            ids[9:5:-1],
            ids[13:9:-1],
            ids[17:13:-1],
            ids[21:17:-1],
            ids[22:21:-1],
        ]
        default = await client.pages("list_runs", image="img-paging", page_size=0)
        assert len(default[0].items) == 10  # 0: the server's default page
        with pytest.raises(InvalidArgument) as too_big:
            await client.collect("list_runs", page_size=101)
        assert [v.field for v in too_big.value.violations] == ["limit"]


async def test_runs_made_while_paging_do_not_repeat_or_shift_older_ones(
    kind: str, recorded: tuple[GyozaServer, MetadataRecorder]
) -> None:
    gs, _ = recorded
    ids = await make_runs(gs.target, "img-moving", 12)
    async with Either(kind, gs.target) as client:
        reader = client.start("list_runs", image="img-moving", page_size=3)
        # Whatever the reader has reached, runs created now are newer than all it will read.
        await make_runs(gs.target, "img-moving", 6)
        got = [r.id for r in await reader.wait()]
    assert len(got) == len(set(got))
    assert got[-12:] == ids[::-1]


async def test_events_and_topic_events_page(client: Either) -> None:
    run = await client.call("create_run", "img", topic="t-paging")
    for n in range(40):
        await client.call("add_event", run.id, EventType.INFO, msg=f"m{n}")
    events = await client.collect("list_events", run.id, page_size=7)
    assert [e.msg for e in events] == [f"m{n}" for n in range(40)]
    assert [e.seq for e in events] == list(range(40))
    assert [e.seq for e in await client.collect("list_events", run.id, after=30, limit=4)] == [
        31,
        32,
        33,
        34,
    ]
    feed = await client.collect("list_topic_events", "t-paging", page_size=6)
    assert [t.cursor for t in feed] == list(range(1, 41))
    assert [t.cursor for t in await client.collect("list_topic_events", "t-paging", after=38)] == [
        39,
        40,
    ]


async def test_pages_of_a_pager_start_again_each_time(client: Either) -> None:
    """A pager is a query, not a cursor: iterating it again reads from the first page."""
    await make_runs(client.client.target, "img-again", 3)
    pager = client.client.list_runs(image="img-again", page_size=2)
    if client.kind == "async":
        assert isinstance(pager.__aiter__(), AsyncIterator)
        first = [r.id async for r in pager]
        second = [r.id async for r in pager]
    else:
        first = await asyncio.to_thread(lambda: [r.id for r in pager])
        second = await asyncio.to_thread(lambda: [r.id for r in pager])
    assert first == second and len(first) == 3
