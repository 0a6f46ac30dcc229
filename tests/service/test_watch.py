"""WatchEvents through a real server: replay + live without gaps, resumption, endings,
heartbeats, cleanup and shutdown."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.server.streams.fanout import run_key
from tests.conftest import eventually, launch

ET = runs_pb2


async def create(runs: runs_pb2_grpc.RunServiceStub, **kw: object) -> runs_pb2.Run:
    return (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img", **kw))).run  # type: ignore[arg-type]


async def add(
    runs: runs_pb2_grpc.RunServiceStub, run_id: str, type_: int, **kw: object
) -> runs_pb2.AddEventResponse:
    return await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run_id, type=type_, **kw))  # type: ignore[arg-type]


async def start(runs: runs_pb2_grpc.RunServiceStub, run_id: str) -> None:
    await add(runs, run_id, ET.EVENT_TYPE_STARTED)


async def collect(
    runs: runs_pb2_grpc.RunServiceStub, run_id: str, after: int | None = None
) -> list[runs_pb2.Event]:
    """Every event of a watch that ends by itself (OK)."""
    req = runs_pb2.WatchEventsRequest(run_id=run_id)
    if after is not None:
        req.after = after
    out = []
    async for item in runs.WatchEvents(req):
        if item.HasField("event"):
            out.append(item.event)
    return out


async def test_replay_and_live_have_no_gap_at_the_handover(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    run = await create(runs)
    await start(runs, run.id)
    for i in range(20):
        await add(runs, run.id, ET.EVENT_TYPE_INFO, msg=f"before {i}")

    async def writer() -> None:
        for i in range(60):
            await add(runs, run.id, ET.EVENT_TYPE_PROGRESS, progress=i % 101)
        await add(runs, run.id, ET.EVENT_TYPE_COMPLETED)

    watchers = [asyncio.create_task(collect(runs, run.id)) for _ in range(5)]
    await writer()
    results = await asyncio.wait_for(asyncio.gather(*watchers), 20)
    for events in results:
        assert [e.seq for e in events] == list(range(82))
        assert events[-1].type == ET.EVENT_TYPE_COMPLETED
        assert events[-1].state == ET.RUN_STATE_COMPLETED


async def test_200_concurrent_watchers_see_identical_sequences(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    run = await create(runs)
    await start(runs, run.id)
    watchers = [asyncio.create_task(collect(runs, run.id)) for _ in range(200)]
    for i in range(30):
        await add(runs, run.id, ET.EVENT_TYPE_PROGRESS, progress=i)
    await add(runs, run.id, ET.EVENT_TYPE_COMPLETED)
    results = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    first = [(e.seq, e.type, e.msg, e.progress) for e in results[0]]
    assert [s for s, *_ in first] == list(range(32))
    for events in results[1:]:
        assert [(e.seq, e.type, e.msg, e.progress) for e in events] == first


async def test_resume_after_disconnects_at_random_points(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    rng = random.Random(7)
    run = await create(runs)
    await start(runs, run.id)
    total = 600

    async def writer() -> None:
        for i in range(total - 2):
            await add(runs, run.id, ET.EVENT_TYPE_INFO, msg=str(i))
            if i % 10 == 0:
                await asyncio.sleep(0)
        await add(runs, run.id, ET.EVENT_TYPE_COMPLETED)

    writing = asyncio.create_task(writer())
    seen: list[int] = []
    last: int | None = None
    trials = 0
    done = False
    while not done:
        trials += 1
        req = runs_pb2.WatchEventsRequest(run_id=run.id)
        if last is not None:
            req.after = last
        call = runs.WatchEvents(req)
        budget = rng.randint(1, 6) if trials <= 100 else 10**9
        got = 0
        async for item in call:
            if not item.HasField("event"):
                continue
            seen.append(item.event.seq)
            last = item.event.seq
            got += 1
            if item.event.state == ET.RUN_STATE_COMPLETED:
                done = True
                break
            if got >= budget:
                call.cancel()  # a forced disconnect mid-stream
                break
        else:
            done = True
    await writing
    assert trials > 100
    assert seen == list(range(total))


async def test_stream_ends_on_terminal_event_but_not_on_automatic_retry(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    run = await create(runs, retry_policy=runs_pb2.RetryPolicy(max_attempts=2))
    watcher = asyncio.create_task(collect(runs, run.id))
    await start(runs, run.id)
    await add(runs, run.id, ET.EVENT_TYPE_FAILED, payload=None)
    await start(runs, run.id)
    await add(runs, run.id, ET.EVENT_TYPE_FAILED)
    events = await asyncio.wait_for(watcher, 10)
    assert [e.type for e in events] == [
        ET.EVENT_TYPE_STARTED,
        ET.EVENT_TYPE_FAILED,
        ET.EVENT_TYPE_RETRIED,
        ET.EVENT_TYPE_STARTED,
        ET.EVENT_TYPE_FAILED,
    ]
    assert events[-1].state == ET.RUN_STATE_FAILED


async def test_a_terminal_run_replays_and_ends(runs: runs_pb2_grpc.RunServiceStub) -> None:
    run = await create(runs)
    await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id, reason="stop"))
    events = await asyncio.wait_for(collect(runs, run.id), 5)
    assert [(e.seq, e.type, e.msg) for e in events] == [(0, ET.EVENT_TYPE_CANCELLED, "stop")]
    assert await asyncio.wait_for(collect(runs, run.id, after=0), 5) == []


async def test_unknown_run_is_not_found(runs: runs_pb2_grpc.RunServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(runs, "missing")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "run 'missing' not found"


async def test_heartbeats_on_an_idle_run(sqlite_url: str) -> None:
    gs = await launch(sqlite_url, watch_heartbeat_s=0.05)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            runs = runs_pb2_grpc.RunServiceStub(ch)
            run = await create(runs)
            await start(runs, run.id)
            call = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id))
            items = []
            async for item in call:
                items.append(item)
                if len(items) == 4:
                    call.cancel()
                    break
            assert items[0].event.type == ET.EVENT_TYPE_STARTED
            beats = [i.heartbeat for i in items[1:]]
            assert all(i.HasField("heartbeat") for i in items[1:])
            assert all(b.last_seq == 0 and b.server_time.seconds > 0 for b in beats)
    finally:
        await gs.stop(0)


async def test_open_cancel_cycles_leave_nothing_behind(
    server: GyozaServer, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    run = await create(runs)
    await start(runs, run.id)
    for _ in range(1000):
        call = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id))
        item = await call.read()
        assert item.event.seq == 0
        call.cancel()

    async def drained() -> bool:
        return server.fanout.subscriber_count() == 0

    await eventually(drained)
    tasks = [t for t in asyncio.all_tasks() if "WatchEvents" in repr(t.get_coro())]
    assert tasks == []


async def test_a_slow_watcher_is_caught_up_from_the_store(
    runs: runs_pb2_grpc.RunServiceStub, server: GyozaServer
) -> None:
    run = await create(runs)
    await start(runs, run.id)
    # A channel whose flow-control window stays at its initial 64 KiB (no BDP probing), and
    # events of 1 KiB: the server can send the watcher only a few dozen before it must wait
    # for it to read. Without that, grpc could buffer every event on the client side, the
    # stream end before the watcher looked, and the store never be read.
    async with grpc.aio.insecure_channel(
        server.target, options=[("grpc.http2.bdp_probe", 0)]
    ) as slow:
        call = runs_pb2_grpc.RunServiceStub(slow).WatchEvents(
            runs_pb2.WatchEventsRequest(run_id=run.id)
        )
        first = await call.read()
        assert first.event.seq == 0
        # The watcher reads nothing while far more events than its buffer holds are appended.
        for i in range(700):
            await add(runs, run.id, ET.EVENT_TYPE_INFO, msg=f"{i:04d}" + "x" * 1020)
        await add(runs, run.id, ET.EVENT_TYPE_COMPLETED)
        assert server.fanout.subscriber_count() == 1
        # Its buffer overflowed: what it missed must come from the store.
        assert [s.overflowed for s in server.fanout.subscribers(run_key(run.id))] == [True]
        seqs = [0]
        while (item := await call.read()) is not grpc.aio.EOF:
            if item.HasField("event"):
                seqs.append(item.event.seq)
                if 1 <= item.event.seq <= 700:
                    assert item.event.msg.startswith(f"{item.event.seq - 1:04d}")
    assert seqs == list(range(702))


async def test_shutdown_ends_streams_with_unavailable_and_resume_is_exact(
    sqlite_url: str,
) -> None:
    gs = await launch(sqlite_url)
    async with grpc.aio.insecure_channel(gs.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        run = await create(runs)
        await start(runs, run.id)
        for i in range(5):
            await add(runs, run.id, ET.EVENT_TYPE_INFO, msg=str(i))
        call = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id))
        seen = []
        for _ in range(6):
            seen.append((await call.read()).event.seq)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stopping = asyncio.create_task(gs.stop(30))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                item = await call.read()
                if item is grpc.aio.EOF:
                    break
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        await stopping
        assert loop.time() - t0 < 5  # not the 30 s grace period

    gs = await launch(sqlite_url)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            runs = runs_pb2_grpc.RunServiceStub(ch)
            await add(runs, run.id, ET.EVENT_TYPE_COMPLETED)
            rest = await asyncio.wait_for(collect(runs, run.id, after=seen[-1]), 5)
        assert seen + [e.seq for e in rest] == list(range(7))
    finally:
        await gs.stop(0)


async def test_list_events_pages_with_limit_and_has_more(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    run = await create(runs)
    await start(runs, run.id)
    for i in range(9):
        await add(runs, run.id, ET.EVENT_TYPE_INFO, msg=str(i))
    seqs: list[int] = []
    after: int | None = None
    while True:
        req = runs_pb2.ListEventsRequest(run_id=run.id, limit=4)
        if after is not None:
            req.after = after
        resp = await runs.ListEvents(req)
        seqs += [e.seq for e in resp.events]
        after = seqs[-1]
        if not resp.has_more:
            break
    assert seqs == list(range(10))
