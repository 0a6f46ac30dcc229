"""ListRuns: order, limits, cursors in both directions, has_more, filters, paging under load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest

from gyoza.v1 import runs_pb2
from gyoza_grpc.server import GyozaServer, start_server
from gyoza_grpc.server.config import ServerConfig
from tests.conftest import TEST_SERVER_OPTIONS
from tests.service.helpers import (
    Stub,
    create,
)


async def _make(runs: Stub, n: int, **fields: object) -> list[runs_pb2.Run]:
    """n runs created one after another; returned oldest first."""
    return [await create(runs, **fields) for _ in range(n)]  # type: ignore[arg-type]


async def _page(runs: Stub, **fields: object) -> runs_pb2.ListRunsResponse:
    return await runs.ListRuns(runs_pb2.ListRunsRequest(**fields))  # type: ignore[arg-type]


def _ids(page: runs_pb2.ListRunsResponse) -> list[str]:
    return [r.id for r in page.data]


async def test_empty(runs: Stub) -> None:
    page = await _page(runs)
    assert list(page.data) == []
    assert page.has_more is False


async def test_newest_first(runs: Stub) -> None:
    made = await _make(runs, 5)
    page = await _page(runs)
    assert _ids(page) == [r.id for r in reversed(made)]
    assert page.has_more is False
    assert page.data[0] == made[-1]


async def test_limit_zero_means_ten(runs: Stub) -> None:
    made = await _make(runs, 12)
    page = await _page(runs, limit=0)
    assert _ids(page) == [r.id for r in reversed(made)][:10]
    assert page.has_more is True


@pytest.mark.parametrize("limit", [1, 100])
async def test_limit_bounds_allowed(runs: Stub, limit: int) -> None:
    made = await _make(runs, 2)
    page = await _page(runs, limit=limit)
    assert len(page.data) == min(limit, 2)
    assert page.has_more is (limit < 2)
    assert page.data[0].id == made[-1].id


async def test_forward_paging_and_has_more_exact(runs: Stub) -> None:
    made = list(reversed(await _make(runs, 6)))  # newest first
    ids = [r.id for r in made]
    p1 = await _page(runs, limit=3)
    assert (_ids(p1), p1.has_more) == (ids[0:3], True)
    p2 = await _page(runs, limit=3, starting_after=ids[2])
    # Exactly 3 runs remain: a full page, and nothing after it.
    assert (_ids(p2), p2.has_more) == (ids[3:6], False)
    p3 = await _page(runs, limit=3, starting_after=ids[5])
    assert (_ids(p3), p3.has_more) == ([], False)
    p = await _page(runs, limit=2, starting_after=ids[3])
    assert (_ids(p), p.has_more) == (ids[4:6], False)
    p = await _page(runs, limit=1, starting_after=ids[3])
    assert (_ids(p), p.has_more) == (ids[4:5], True)


async def test_backward_paging_and_has_more_exact(runs: Stub) -> None:
    made = list(reversed(await _make(runs, 6)))  # newest first
    ids = [r.id for r in made]
    # ending_before the oldest: the runs just newer than it, newest first.
    p = await _page(runs, limit=3, ending_before=ids[5])
    assert (_ids(p), p.has_more) == (ids[2:5], True)
    p = await _page(runs, limit=2, ending_before=ids[2])
    assert (_ids(p), p.has_more) == (ids[0:2], False)
    p = await _page(runs, limit=5, ending_before=ids[5])
    assert (_ids(p), p.has_more) == (ids[0:5], False)
    p = await _page(runs, limit=4, ending_before=ids[5])
    assert (_ids(p), p.has_more) == (ids[1:5], True)
    p = await _page(runs, limit=3, ending_before=ids[0])
    assert (_ids(p), p.has_more) == ([], False)


# -- paging 250 runs ---------------------------------------------------------------------


async def _make_many(runs: Stub, n: int) -> set[str]:
    ids: set[str] = set()
    for start in range(0, n, 25):
        batch = await asyncio.gather(*(create(runs) for _ in range(min(25, n - start))))
        ids.update(r.id for r in batch)
    return ids


async def _walk(
    runs: Stub,
    limit: int,
    on_page: asyncio.Event | None = None,
    on_backward: asyncio.Event | None = None,
) -> tuple[list[str], list[str]]:
    """Page forward from the newest run to the oldest, then back again.

    Backward starts from the last forward page (the oldest runs) and follows ending_before.
    Returns (forward ids, backward ids) in the order visited.
    """
    forward: list[str] = []
    page = await _page(runs, limit=limit)
    if on_page is not None:
        on_page.set()
    for _ in range(1000):
        forward.extend(_ids(page))
        if not page.has_more:
            break
        page = await _page(runs, limit=limit, starting_after=page.data[-1].id)
    else:
        raise AssertionError("forward paging does not end")
    if on_backward is not None:
        on_backward.set()
    backward: list[str] = list(reversed(_ids(page)))
    for _ in range(1000):
        page = await _page(runs, limit=limit, ending_before=page.data[0].id)
        backward.extend(reversed(_ids(page)))
        if not page.has_more:
            break
    else:
        raise AssertionError("backward paging does not end")
    return forward, backward


async def test_paging_250_runs_both_ways(runs: Stub) -> None:
    originals = await _make_many(runs, 250)
    forward, backward = await _walk(runs, limit=7)
    assert len(forward) == 250 and set(forward) == originals
    assert len(backward) == 250 and set(backward) == originals
    assert backward == list(reversed(forward))


async def test_paging_250_runs_while_runs_are_created(runs: Stub) -> None:
    originals = await _make_many(runs, 250)
    started, backward_started, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    created_during: list[str] = []
    created_while_backward = 0

    async def creator() -> None:
        nonlocal created_while_backward
        await started.wait()
        while not stop.is_set() and len(created_during) < 300:
            created_during.append((await create(runs, "late")).id)
            created_while_backward += backward_started.is_set()

    task = asyncio.create_task(creator())
    try:
        forward, backward = await _walk(
            runs, limit=9, on_page=started, on_backward=backward_started
        )
    finally:
        stop.set()
        await task
    # Runs were created while each direction was paged.
    assert len(created_during) > created_while_backward > 0
    for visited in (forward, backward):
        assert len(visited) == len(set(visited)), "a run was visited twice"
        seen = [i for i in visited if i in originals]
        assert len(seen) == 250 and set(seen) == originals
        assert set(visited) <= originals | set(created_during)
    # Forward paging started from the newest run at the time: later runs are newer than it.
    assert [i for i in forward if i not in originals] == []
    assert [i for i in backward if i in originals] == list(
        reversed([i for i in forward if i in originals])
    )


# -- ties: a frozen clock gives every run the same created_at ----------------------------


@pytest.fixture
async def frozen_runs(database_url: str) -> AsyncIterator[Stub]:
    t = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    config = ServerConfig(host="127.0.0.1", port=0, database_url=database_url)
    gs: GyozaServer = await start_server(config, clock=lambda: t, extra_options=TEST_SERVER_OPTIONS)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            from gyoza.v1 import runs_pb2_grpc

            yield runs_pb2_grpc.RunServiceStub(ch)
    finally:
        await gs.stop(0)


async def test_ties_in_created_at_page_in_a_fixed_order(frozen_runs: Stub) -> None:
    runs = frozen_runs
    made = await _make_many(runs, 23)
    first = [r.id for r in (await _page(runs, limit=100)).data]
    again = [r.id for r in (await _page(runs, limit=100)).data]
    assert first == again and set(first) == made
    forward, backward = await _walk(runs, limit=4)
    assert forward == first
    assert backward == list(reversed(first))
    # Filters with a cursor among ties.
    p = await _page(runs, limit=5, starting_after=first[10])
    assert _ids(p) == first[11:16] and p.has_more is True
    p = await _page(runs, limit=5, ending_before=first[10])
    assert _ids(p) == first[5:10] and p.has_more is True
