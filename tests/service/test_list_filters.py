"""ListRuns filters and argument errors, on a server shared by the module.

The tests here run one after another on one database, so each scopes its queries to its own
runs: a unique image or topic, or created_gte = its first run's created_at (every earlier
test's runs are older). Tests that need an empty database are in test_list_runs.py.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gyoza.v1 import runs_pb2
from tests.service.helpers import S, Stub, add, all_runs, create, fails, in_state, invalid

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def runs(shared_runs: Stub) -> Stub:
    return shared_runs


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def _make(runs: Stub, n: int, **fields: object) -> list[runs_pb2.Run]:
    """n runs created one after another; returned oldest first."""
    return [await create(runs, **fields) for _ in range(n)]  # type: ignore[arg-type]


async def _page(runs: Stub, **fields: object) -> runs_pb2.ListRunsResponse:
    return await runs.ListRuns(runs_pb2.ListRunsRequest(**fields))  # type: ignore[arg-type]


def _ids(page: runs_pb2.ListRunsResponse) -> list[str]:
    return [r.id for r in page.data]


async def _filtered(runs: Stub, **filters: object) -> list[str]:
    return [r.id for r in await all_runs(runs, **filters)]


# -- argument errors ---------------------------------------------------------------------


@pytest.mark.parametrize("limit", [101, -1, 1000])
async def test_limit_out_of_range_invalid(runs: Stub, limit: int) -> None:
    err = await invalid(_page(runs, limit=limit), "limit")
    assert "limit" in err.details()


async def test_both_cursors_invalid(runs: Stub) -> None:
    made = await _make(runs, 3)
    await invalid(_page(runs, starting_after=made[0].id, ending_before=made[2].id), "ending_before")


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
async def test_unknown_cursor_invalid(runs: Stub, cursor: str) -> None:
    await _make(runs, 2)
    err = await invalid(_page(runs, **{cursor: "no-such-run"}), cursor)
    assert "no-such-run" in err.details()


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
async def test_overlong_cursor_invalid_not_echoed(runs: Stub, cursor: str) -> None:
    err = await invalid(_page(runs, **{cursor: "z" * 5000}), cursor)
    assert "zzzzzzzzzz" not in err.details()


async def test_unknown_state_filter_invalid(runs: Stub) -> None:
    await invalid(_page(runs, state=42), "state")


async def test_out_of_range_timestamp_invalid(runs: Stub) -> None:
    bad = timestamp_pb2.Timestamp(seconds=10**12)
    await invalid(_page(runs, created_gte=bad), "created_gte")
    bad = timestamp_pb2.Timestamp(seconds=0, nanos=-5)
    await invalid(_page(runs, created_lt=bad), "created_lt")


async def test_list_rejects_nul_in_filter(runs: Stub) -> None:
    await fails(_page(runs, image="a\x00b"), grpc.StatusCode.INVALID_ARGUMENT)


# -- views -------------------------------------------------------------------------------


async def test_full_view_in_list(runs: Stub) -> None:
    image = _unique("view")
    a = await create(runs, image)
    await add(runs, a.id, S.EVENT_TYPE_INFO, msg="one")
    b = await create(runs, image)
    full = await _page(runs, image=image, view=S.RUN_VIEW_FULL)
    assert _ids(full) == [b.id, a.id]
    assert [e.msg for e in full.data[1].events] == ["one"]
    assert list(full.data[0].events) == []
    basic = await _page(runs, image=image)
    assert _ids(basic) == [b.id, a.id]
    assert all(len(r.events) == 0 for r in basic.data)


# -- filters -----------------------------------------------------------------------------


async def test_filters_combine_with_and(runs: Stub) -> None:
    ia, ib, news = _unique("a"), _unique("b"), _unique("news")
    a1 = await in_state(runs, S.RUN_STATE_RUNNING, image=ia)
    a2 = await create(runs, ia)
    b1 = await in_state(runs, S.RUN_STATE_RUNNING, image=ib)
    t1 = await create(runs, ia, event_delivery=runs_pb2.EventDelivery(topic=news))
    t2 = await in_state(
        runs, S.RUN_STATE_RUNNING, image=ib, event_delivery=runs_pb2.EventDelivery(topic=news)
    )
    mine = {"created_gte": a1.created_at}  # only this test's runs

    assert await _filtered(runs, image=ia) == [t1.id, a2.id, a1.id]
    assert await _filtered(runs, state=S.RUN_STATE_RUNNING, **mine) == [t2.id, b1.id, a1.id]
    assert await _filtered(runs, state=S.RUN_STATE_PENDING, **mine) == [t1.id, a2.id]
    assert await _filtered(runs, topic=news) == [t2.id, t1.id]
    assert await _filtered(runs, image=ia, state=S.RUN_STATE_RUNNING) == [a1.id]
    assert await _filtered(runs, image=ib, topic=news) == [t2.id]
    assert await _filtered(runs, image=ia, topic=news, state=S.RUN_STATE_RUNNING) == []
    assert await _filtered(runs, image=_unique("none")) == []
    assert await _filtered(runs, state=S.RUN_STATE_COMPLETED, **mine) == []
    assert await _filtered(runs, topic=_unique("other")) == []
    # Every run here is ad-hoc: op_definition is empty, and a filter on one finds nothing.
    assert all(r.op_definition == "" for r in await all_runs(runs, **mine))
    assert await _filtered(runs, op_definition="some-op", **mine) == []
    assert len(await _filtered(runs, op_definition="", **mine)) == 5


def _ts(run: runs_pb2.Run) -> timestamp_pb2.Timestamp:
    return run.created_at


async def test_created_filters(runs: Stub) -> None:
    image = _unique("created")
    r = await _make(runs, 5, image=image)  # oldest first, distinct created_at
    times = [x.created_at.ToMicroseconds() for x in r]
    assert times == sorted(times) and len(set(times)) == 5
    newest_first = [x.id for x in reversed(r)]

    async def window(**bounds: object) -> list[str]:
        return await _filtered(runs, image=image, **bounds)

    assert await window(created_gte=_ts(r[1])) == newest_first[:4]
    assert await window(created_gt=_ts(r[1])) == newest_first[:3]
    assert await window(created_lte=_ts(r[3])) == newest_first[1:]
    assert await window(created_lt=_ts(r[3])) == newest_first[2:]
    assert await window(created_gte=_ts(r[1]), created_lt=_ts(r[3])) == [r[2].id, r[1].id]
    assert await window(created_gt=_ts(r[1]), created_lte=_ts(r[3])) == [r[3].id, r[2].id]
    assert await window(created_gt=_ts(r[4])) == []
    assert await window(created_lt=_ts(r[0])) == []
    assert await window(created_gte=_ts(r[3]), created_lte=_ts(r[1])) == []
    # created_gt alone (no image) sees exactly the runs newer than r[1].
    assert await _filtered(runs, created_gt=_ts(r[1])) == newest_first[:3]
    # Combined with paging.
    between = {"image": image, "created_lte": _ts(r[3]), "created_gte": _ts(r[1])}
    p = await _page(runs, limit=1, **between)
    assert (_ids(p), p.has_more) == ([r[3].id], True)
    p = await _page(runs, limit=1, starting_after=r[2].id, **between)
    assert (_ids(p), p.has_more) == ([r[1].id], False)
    p = await _page(runs, limit=1, ending_before=r[2].id, **between)
    assert (_ids(p), p.has_more) == ([r[3].id], False)


async def test_has_more_counts_only_matching_runs(runs: Stub) -> None:
    ia, ib = _unique("a"), _unique("b")
    a = await _make(runs, 2, image=ia)
    await _make(runs, 3, image=ib)  # newer, not matching
    p = await _page(runs, image=ia, limit=1)
    assert (_ids(p), p.has_more) == ([a[1].id], True)
    p = await _page(runs, image=ia, limit=2)
    assert (_ids(p), p.has_more) == ([a[1].id, a[0].id], False)
    p = await _page(runs, image=ia, limit=1, starting_after=a[1].id)
    assert (_ids(p), p.has_more) == ([a[0].id], False)
    p = await _page(runs, image=ia, limit=1, ending_before=a[0].id)
    assert (_ids(p), p.has_more) == ([a[1].id], False)
