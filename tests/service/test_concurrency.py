"""Concurrent callers on one run: one transaction per RPC, seqs gap-free, no lost update,
nothing after a terminal event, exactly one winner between racing terminal events."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2
from tests.service.helpers import TERMINAL, S, Stub, add, as_dict, events, get, running, struct

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def runs(shared_runs: Stub) -> Stub:
    return shared_runs


def _split(results: list[Any]) -> tuple[list[Any], list[grpc.aio.AioRpcError]]:
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    for e in errors:
        assert isinstance(e, grpc.aio.AioRpcError), repr(e)
    return ok, errors  # type: ignore[return-value]


def _check_timeline(timeline: list[runs_pb2.Event]) -> None:
    assert [e.seq for e in timeline] == list(range(len(timeline))), "seqs are not gap-free"
    terminal_at = [i for i, e in enumerate(timeline) if e.state in TERMINAL]
    assert terminal_at in ([], [len(timeline) - 1]), "an event follows a terminal event"


async def test_fifty_callers_mixing_events_and_cancel(runs: Stub) -> None:
    run = await running(runs)
    calls = []
    kinds = []
    for i in range(50):
        if i in (17, 25, 33, 41):
            calls.append(runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id, reason=f"c{i}")))
            kinds.append("cancel")
        elif i % 2:
            calls.append(add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=i, msg=f"p{i}"))
            kinds.append("progress")
        else:
            calls.append(add(runs, run.id, S.EVENT_TYPE_INFO, msg=f"i{i}"))
            kinds.append("info")
    results = await asyncio.gather(*calls, return_exceptions=True)

    cancels = [r for r, k in zip(results, kinds, strict=True) if k == "cancel"]
    adds = [r for r, k in zip(results, kinds, strict=True) if k != "cancel"]
    ok_cancels, failed_cancels = _split(cancels)
    ok_adds, failed_adds = _split(adds)
    assert len(ok_cancels) == 1, "exactly one CancelRun wins"
    for err in failed_cancels:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == "run is already in terminal state CANCELLED"
    for err in failed_adds:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert "terminal state CANCELLED" in err.details()

    timeline = await events(runs, run.id)
    _check_timeline(timeline)
    # STARTED, every successful AddEvent, one CANCELLED: nothing lost, nothing extra.
    assert len(timeline) == 1 + len(ok_adds) + 1
    assert [e.type for e in timeline].count(S.EVENT_TYPE_CANCELLED) == 1
    last = timeline[-1]
    assert (last.type, last.state) == (S.EVENT_TYPE_CANCELLED, S.RUN_STATE_CANCELLED)
    (winner,) = [
        i
        for i, (r, k) in enumerate(zip(results, kinds, strict=True))
        if k == "cancel" and not isinstance(r, BaseException)
    ]
    assert last.msg == f"c{winner}"
    by_seq = {e.seq: e for e in timeline}
    returned = [r.event for r in ok_adds]
    assert len({e.seq for e in returned}) == len(returned), "two calls got one seq"
    for e in returned:
        assert by_seq[e.seq] == e
        assert e.seq < last.seq

    final = await get(runs, run.id)
    assert final.state == S.RUN_STATE_CANCELLED
    assert final.last_seq == last.seq == len(timeline) - 1
    # No lost update: the run's progress is that of the last PROGRESS event on its timeline.
    progress_events = [e for e in timeline if e.type == S.EVENT_TYPE_PROGRESS]
    expected = progress_events[-1].progress if progress_events else 0
    assert final.progress == expected
    assert ok_cancels[0].run.last_seq == last.seq
    assert ok_cancels[0].run.state == S.RUN_STATE_CANCELLED


async def test_cancel_reason_of_the_winner_is_recorded(runs: Stub) -> None:
    run = await running(runs)
    results = await asyncio.gather(
        *(runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id, reason=f"r{i}")) for i in range(8)),
        return_exceptions=True,
    )
    ok, _ = _split(results)
    assert len(ok) == 1
    timeline = await events(runs, run.id)
    assert [e.type for e in timeline] == [S.EVENT_TYPE_STARTED, S.EVENT_TYPE_CANCELLED]
    winner_seq = ok[0].run.last_seq
    assert timeline[winner_seq].msg.startswith("r")


@pytest.mark.parametrize("round_", range(5))
async def test_completed_races_cancel(runs: Stub, round_: int) -> None:
    run = await running(runs)
    done, cancel = await asyncio.gather(
        add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"outputs": {"r": round_}}),
        runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id)),
        return_exceptions=True,
    )
    winners = [r for r in (done, cancel) if not isinstance(r, BaseException)]
    losers = [r for r in (done, cancel) if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], grpc.aio.AioRpcError)
    assert losers[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    timeline = await events(runs, run.id)
    _check_timeline(timeline)
    assert len(timeline) == 2
    final = await get(runs, run.id)
    if winners[0] is done:
        assert final.state == S.RUN_STATE_COMPLETED
        assert as_dict(final.outputs) == {"r": round_}
        assert timeline[1].type == S.EVENT_TYPE_COMPLETED
        assert "terminal state COMPLETED" in losers[0].details()
    else:
        assert final.state == S.RUN_STATE_CANCELLED
        assert as_dict(final.outputs) == {}
        assert timeline[1].type == S.EVENT_TYPE_CANCELLED
        assert "terminal state CANCELLED" in losers[0].details()


async def test_two_completed_events_one_wins(runs: Stub) -> None:
    run = await running(runs)
    results = await asyncio.gather(
        add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"outputs": {"w": 1}}),
        add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"outputs": {"w": 2}}),
        return_exceptions=True,
    )
    ok, errors = _split(results)
    assert len(ok) == 1 and len(errors) == 1
    assert errors[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    final = await get(runs, run.id)
    assert as_dict(final.outputs) == as_dict(ok[0].run.outputs)
    assert len(await events(runs, run.id)) == 2


async def test_failed_with_retries_races_events(runs: Stub) -> None:
    """Concurrent FAILED (with a retry left) and PROGRESS from the same stale-able worker:
    events carrying attempt=1 never land on attempt 2."""
    run = await running(runs, retry_policy=runs_pb2.RetryPolicy(max_attempts=2))
    calls = [add(runs, run.id, S.EVENT_TYPE_FAILED, attempt=1, msg="boom")]
    calls += [add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=i, attempt=1) for i in range(1, 20)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok, errors = _split(results)
    assert not isinstance(results[0], BaseException), "the FAILED event was refused"
    for err in errors:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    timeline = await events(runs, run.id)
    assert [e.seq for e in timeline] == list(range(len(timeline)))
    retried_at = [i for i, e in enumerate(timeline) if e.type == S.EVENT_TYPE_RETRIED]
    assert len(retried_at) == 1 and retried_at[0] == len(timeline) - 1
    assert all(e.attempt == 1 for e in timeline[:-1])
    assert len(timeline) == 1 + len(ok) + 1  # STARTED, the successes, RETRIED
    final = await get(runs, run.id)
    assert (final.state, final.current_attempt, final.progress) == (S.RUN_STATE_PENDING, 2, 0)


@pytest.mark.parametrize("position", [2, 6, 10, 14, 18])
async def test_update_outputs_not_lost_among_progress_events(runs: Stub, position: int) -> None:
    """PROGRESS rewrites the attempt row: it must start from the attempt as UpdateRun left
    it, not from what it read before it got the run's lock."""
    run = await running(runs)
    calls: list[Any] = [add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=i) for i in range(1, 21)]
    calls.insert(
        position,
        runs.UpdateRun(runs_pb2.UpdateRunRequest(id=run.id, outputs=struct({"kept": True}))),
    )
    calls.insert(position // 2, runs.UpdateRun(runs_pb2.UpdateRunRequest(id=run.id, priority=1)))
    results = await asyncio.gather(*calls)
    assert len(results) == 22
    final = await get(runs, run.id)
    assert as_dict(final.outputs) == {"kept": True}
    assert final.priority == 1
    timeline = await events(runs, run.id)
    assert [e.seq for e in timeline] == list(range(21))
    assert final.progress == timeline[-1].progress
    assert final.last_seq == 20


async def test_concurrent_runs_have_independent_seqs(runs: Stub) -> None:
    made = await asyncio.gather(*(running(runs) for _ in range(5)))

    async def burst(run_id: str) -> None:
        await asyncio.gather(*(add(runs, run_id, S.EVENT_TYPE_INFO, msg=str(i)) for i in range(8)))

    await asyncio.gather(*(burst(r.id) for r in made))
    for r in made:
        timeline = await events(runs, r.id)
        assert [e.seq for e in timeline] == list(range(9))
        assert sorted(e.msg for e in timeline[1:]) == sorted(str(i) for i in range(8))
        assert all(e.run_id == r.id for e in timeline)
