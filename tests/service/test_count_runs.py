"""CountRuns: ListRuns' filters counted, per state without a state filter, and its argument
errors, on a server shared by the module (SQLite and PostgreSQL).

As in test_list_filters.py, each test scopes its counts to its own runs (a unique image or
topic, or created_gte its first run's created_at), and checks each count against ListRuns.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gyoza.v1 import runs_pb2
from tests.service.helpers import S, Stub, all_runs, create, fails, in_state, invalid

pytestmark = pytest.mark.asyncio(loop_scope="module")
STATES = [v for v in runs_pb2.RunState.values() if v != S.RUN_STATE_UNSPECIFIED]


@pytest.fixture(scope="module")
def runs(shared_runs: Stub) -> Stub:
    return shared_runs


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def _count(runs: Stub, **filters: object) -> runs_pb2.CountRunsResponse:
    return await runs.CountRuns(runs_pb2.CountRunsRequest(**filters))  # type: ignore[arg-type]


def _by_state(resp: runs_pb2.CountRunsResponse) -> dict[int, int]:
    return {c.state: c.count for c in resp.by_state}


async def _listed(runs: Stub, **filters: object) -> int:
    return len(await all_runs(runs, **filters))


async def test_counts_per_state_match_list_runs(runs: Stub) -> None:
    image = _unique("count")
    await create(runs, image)
    await create(runs, image)
    await in_state(runs, S.RUN_STATE_RUNNING, image=image)
    await in_state(runs, S.RUN_STATE_COMPLETED, image=image)
    await in_state(runs, S.RUN_STATE_CANCELLED, image=image)

    got = await _count(runs, image=image)
    assert got.total == 5 == await _listed(runs, image=image)
    # Every state, in RunState order, zeros included.
    assert [c.state for c in got.by_state] == STATES
    assert _by_state(got) == {
        S.RUN_STATE_PENDING: 2,
        S.RUN_STATE_ASSIGNED: 0,
        S.RUN_STATE_RUNNING: 1,
        S.RUN_STATE_COMPLETED: 1,
        S.RUN_STATE_FAILED: 0,
        S.RUN_STATE_CANCELLED: 1,
    }
    for state in STATES:
        one = await _count(runs, image=image, state=state)
        assert one.total == _by_state(got)[state] == await _listed(runs, image=image, state=state)
        assert list(one.by_state) == []  # a state filter: the total is that state's count


async def test_filters_combine_as_list_runs_does(runs: Stub) -> None:
    ia, news = _unique("a"), _unique("news")
    first = await create(runs, ia)
    await create(runs, ia, event_delivery=runs_pb2.EventDelivery(topic=news))
    await in_state(
        runs, S.RUN_STATE_RUNNING, image=ia, event_delivery=runs_pb2.EventDelivery(topic=news)
    )
    mine = {"created_gte": first.created_at}
    for filters in (
        {"image": ia},
        {"topic": news},
        {"image": ia, "topic": news, "state": S.RUN_STATE_RUNNING},
        {"op_definition": "some-op", **mine},
        {"image": _unique("none")},
        mine,
    ):
        assert (await _count(runs, **filters)).total == await _listed(runs, **filters), filters
    assert (await _count(runs, topic=news)).total == 2
    assert (await _count(runs, image=_unique("none"))).total == 0


async def test_created_bounds(runs: Stub) -> None:
    image = _unique("created")
    made = [await create(runs, image) for _ in range(4)]  # oldest first
    at = [r.created_at for r in made]
    assert (await _count(runs, image=image, created_gte=at[1])).total == 3
    assert (await _count(runs, image=image, created_gt=at[1])).total == 2
    assert (await _count(runs, image=image, created_lt=at[3])).total == 3
    assert (await _count(runs, image=image, created_gte=at[1], created_lte=at[2])).total == 2
    # An empty range that is not reversed is a count of zero.
    assert (await _count(runs, image=image, created_gt=at[1], created_lt=at[1])).total == 0


# -- argument errors, as ListRuns' -------------------------------------------------------------


async def test_unknown_state_invalid(runs: Stub) -> None:
    err = await invalid(_count(runs, state=42), "state")
    assert "42" in err.details()


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("created_gte", "created_lte"),
        ("created_gte", "created_lt"),
        ("created_gt", "created_lte"),
        ("created_gt", "created_lt"),
    ],
)
async def test_since_after_until_invalid(runs: Stub, low: str, high: str) -> None:
    later = timestamp_pb2.Timestamp(seconds=2_000_000_000)
    earlier = timestamp_pb2.Timestamp(seconds=1_000_000_000)
    err = await invalid(_count(runs, **{low: later, high: earlier}), high)
    assert low in err.details()


async def test_out_of_range_timestamp_invalid(runs: Stub) -> None:
    bad = timestamp_pb2.Timestamp(seconds=10**12)
    await invalid(_count(runs, created_gte=bad), "created_gte")


async def test_nul_in_filter_invalid(runs: Stub) -> None:
    await fails(_count(runs, image="a\x00b"), grpc.StatusCode.INVALID_ARGUMENT)
