"""WatchRuns on each backend: new runs and every change of a run arrive as the run after the
change; filters; nothing replayed; heartbeats; resync for a watcher that fell behind; the
watch-stream cap; the end at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from gyoza.v1 import definitions_pb2, definitions_pb2_grpc, runs_pb2, runs_pb2_grpc
from gyoza_grpc.domain.limits import Limits
from gyoza_grpc.server import GyozaServer
from tests.conftest import eventually, served
from tests.service.helpers import S, add, create, fails, start
from tests.service.watch_runs import RunsWatcher


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[GyozaServer]:
    async with served(database_url, watch_heartbeat_s=0.2) as gs:
        yield gs


async def test_a_new_run_and_each_change_arrive(runs: runs_pb2_grpc.RunServiceStub) -> None:
    async with RunsWatcher(runs) as w:
        run = await create(runs, image="img", priority=7)
        got = await w.until(run.id, S.RUN_STATE_PENDING)
        assert (got.image, got.priority, got.last_seq, list(got.events)) == ("img", 7, -1, [])
        await start(runs, run.id, worker_id="w1")
        got = await w.until(run.id, S.RUN_STATE_RUNNING)
        assert got.execution_summary.worker_id == "w1"
        await add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=40)

        async def progressed() -> bool:
            latest = w.latest(run.id)
            return latest is not None and latest.progress == 40

        await eventually(progressed)
        await add(runs, run.id, S.EVENT_TYPE_COMPLETED)
        got = await w.until(run.id, S.RUN_STATE_COMPLETED)
        assert got.last_seq == 2
        await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))
        got = await w.until(run.id, S.RUN_STATE_PENDING)
        assert got.current_attempt == 2
        # Copies of one run come in the order of its changes.
        seqs = [r.last_seq for r in w.runs(run.id)]
        assert seqs == sorted(seqs)


async def test_an_edit_without_events_arrives(runs: runs_pb2_grpc.RunServiceStub) -> None:
    run = await create(runs)
    async with RunsWatcher(runs) as w:
        req = runs_pb2.UpdateRunRequest(id=run.id, priority=9)
        req.update_mask.paths.append("priority")
        await runs.UpdateRun(req)

        async def edited() -> bool:
            latest = w.latest(run.id)
            return latest is not None and latest.priority == 9

        await eventually(edited)


async def test_nothing_is_replayed(runs: runs_pb2_grpc.RunServiceStub) -> None:
    before = await create(runs, image="before")
    async with RunsWatcher(runs) as w:
        after = await create(runs, image="after")
        await w.until(after.id, S.RUN_STATE_PENDING)
        assert w.runs(before.id) == []


async def test_filters_on_image_definition_and_topic(
    runs: runs_pb2_grpc.RunServiceStub, channel: grpc.aio.Channel
) -> None:
    defs = definitions_pb2_grpc.DefinitionServiceStub(channel)
    await defs.UpsertDefinition(
        definitions_pb2.UpsertDefinitionRequest(
            definition=definitions_pb2.Definition(name="resize", version="1.0.0", image="img-r")
        )
    )
    topic = runs_pb2.EventDelivery(topic="news")
    async with (
        RunsWatcher(runs, image="a") as by_image,
        RunsWatcher(runs, op_definition="resize") as by_definition,
        RunsWatcher(runs, topic="news") as by_topic,
        RunsWatcher(runs) as everything,
    ):
        a = await create(runs, image="a")
        b = await create(runs, image="b", event_delivery=topic)
        made = await defs.CreateRunFromDefinition(
            definitions_pb2.CreateRunFromDefinitionRequest(name="resize")
        )
        d = made.run
        for run in (a, b, d):
            await everything.until(run.id, S.RUN_STATE_PENDING)
        await start(runs, b.id)
        await everything.until(b.id, S.RUN_STATE_RUNNING)
        await by_topic.until(b.id, S.RUN_STATE_RUNNING)
        assert {r.id for r in by_image.runs()} == {a.id}
        assert {r.id for r in by_definition.runs()} == {d.id}
        assert {r.id for r in by_topic.runs()} == {b.id}


async def test_a_quiet_stream_gets_heartbeats(runs: runs_pb2_grpc.RunServiceStub) -> None:
    async with RunsWatcher(runs) as w:

        async def beating() -> bool:
            return w.heartbeats() >= 2

        await eventually(beating)
        assert w.runs() == []


async def test_a_filter_with_a_nul_is_invalid(runs: runs_pb2_grpc.RunServiceStub) -> None:
    call = runs.WatchRuns(runs_pb2.WatchRunsRequest(image="a\x00b"))
    err = await fails(call.read(), grpc.StatusCode.INVALID_ARGUMENT)
    assert "image" in (err.details() or "")


async def test_shutdown_ends_the_stream_unavailable(server: GyozaServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        async with RunsWatcher(runs) as w:
            await server.stop(1)

            async def ended() -> bool:
                return w.error is not None

            await eventually(ended)
            assert w.error is not None
            assert w.error.code() == grpc.StatusCode.UNAVAILABLE


async def test_watch_streams_are_capped(sqlite_url: str) -> None:
    limits = Limits(max_watch_streams=1)
    async with (
        served(sqlite_url, limits=limits) as gs,
        grpc.aio.insecure_channel(gs.target) as ch,
    ):
        runs = runs_pb2_grpc.RunServiceStub(ch)
        async with RunsWatcher(runs):
            call = runs.WatchRuns(runs_pb2.WatchRunsRequest())
            await fails(call.read(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # The slot comes back when the stream ends.

        async def reopened() -> bool:
            return gs.run_feed.watcher_count() == 0

        await eventually(reopened)
        async with RunsWatcher(runs) as again:
            run = await create(runs)
            await again.until(run.id, S.RUN_STATE_PENDING)
