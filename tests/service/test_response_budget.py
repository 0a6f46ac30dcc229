"""Answers built of many items stay under the clients' receive limit (issue 16, defect 1).

A client refuses a message over 4 MiB by default (grpcio and grpc-js alike). Each run is under
its caps, yet five runs of 1 MB inputs made a ClaimRuns answer of 5 MB: committed (the runs
ASSIGNED to a worker that never saw them), then refused by the client, and an ExecuteBatchError
traceback in the server's log. Now a claim stops assigning before its answer would pass the
response budget, and a list page ends early with has_more, so paging visits every item once.
Every call here is made on a channel with grpc's default receive limit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from gyoza.v1 import (
    definitions_pb2,
    definitions_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
)
from gyoza_grpc.domain.limits import Limits
from gyoza_grpc.server import GyozaServer
from tests.conftest import served

R = runs_pb2
W = workers_pb2
MB = 1_000_000
DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024
# Sending large requests needs no option (grpc's default send limit is unbounded); the
# receive limit is the one under test and stays at its default.
SEND_OPTIONS = [("grpc.max_send_message_length", -1)]


def struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(doc)
    return s


def blob(n: int, tag: str = "") -> dict[str, Any]:
    return {"blob": (tag + "x" * n)[:n]}


@pytest.fixture
def server_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The ERROR records the server logged (grpc's ExecuteBatchError traceback among them)."""
    caplog.set_level(logging.ERROR)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
async def channel(server: GyozaServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target, options=SEND_OPTIONS) as ch:
        yield ch


async def create_large(runs: runs_pb2_grpc.RunServiceStub, n: int, size: int) -> list[R.Run]:
    made = []
    for i in range(n):
        req = R.CreateRunRequest(image="img", inputs=struct(blob(size, f"{i}:")))
        made.append((await runs.CreateRun(req)).run)
    return made


async def claim(workers: workers_pb2_grpc.WorkerServiceStub, n: int) -> W.ClaimRunsResponse:
    return await workers.ClaimRuns(W.ClaimRunsRequest(worker_id="w", max_runs=n))


async def held(workers: workers_pb2_grpc.WorkerServiceStub) -> set[str]:
    worker = (await workers.GetWorker(W.GetWorkerRequest(worker_id="w"))).worker
    return {h.run_id for h in worker.held}


async def test_a_claim_of_large_runs_is_delivered_whole(
    channel: grpc.aio.Channel, server_errors: Callable[[], list[str]]
) -> None:
    """Five PENDING runs of 1 MB inputs, ClaimRuns(max_runs=5) on a default channel: each
    answer fits, the worker holds exactly what it was told, and claiming again takes the
    rest; every run is delivered once."""
    runs = runs_pb2_grpc.RunServiceStub(channel)
    workers = workers_pb2_grpc.WorkerServiceStub(channel)
    made = await create_large(runs, 5, MB)
    order = {r.id: i for i, r in enumerate(made)}
    await workers.Heartbeat(W.HeartbeatRequest(worker_id="w", resources=W.Resources(cpu=8)))
    delivered: list[str] = []
    answers = 0
    while len(delivered) < len(made) and answers < 5:
        resp = await claim(workers, 5)
        answers += 1
        assert 0 < resp.ByteSize() < DEFAULT_RECEIVE_LIMIT
        delivered += [c.run.id for c in resp.claims]
        # Nothing assigned beyond the answer: the worker holds what it was handed.
        assert await held(workers) == set(delivered)
        for c in resp.claims:
            assert c.run.inputs["blob"].startswith(f"{order[c.run.id]}:")  # the whole run
    assert sorted(delivered) == sorted(r.id for r in made)
    assert answers >= 2  # 5 MB never went in one answer
    assert server_errors() == []


async def test_one_run_always_fits_the_claim_budget(database_url: str) -> None:
    """A budget smaller than one run still hands out one run per claim: never none."""
    async with (
        served(database_url, limits=Limits(max_response_bytes=1000)) as gs,
        grpc.aio.insecure_channel(gs.target) as ch,
    ):
        runs = runs_pb2_grpc.RunServiceStub(ch)
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        made = await create_large(runs, 3, 5000)
        await workers.Heartbeat(W.HeartbeatRequest(worker_id="w", resources=W.Resources(cpu=8)))
        got = []
        for _ in range(3):
            resp = await claim(workers, 3)
            assert len(resp.claims) == 1
            got.append(resp.claims[0].run.id)
        assert sorted(got) == sorted(r.id for r in made)
        assert len((await claim(workers, 3)).claims) == 0


async def page_runs(
    runs: runs_pb2_grpc.RunServiceStub, *, backward_from: str = "", **fields: Any
) -> tuple[list[str], int]:
    """Every run id ListRuns pages through (newest first), and how many pages it took."""
    seen: list[str] = []
    pages = 0
    cursor = backward_from
    while True:
        if backward_from:
            req = R.ListRunsRequest(ending_before=cursor, **fields)
        else:
            req = R.ListRunsRequest(starting_after=cursor, **fields)
        resp = await runs.ListRuns(req)
        pages += 1
        assert resp.ByteSize() < DEFAULT_RECEIVE_LIMIT
        ids = [r.id for r in resp.data]
        assert ids, "a page always holds a run while has_more is true"
        if backward_from:
            seen = ids + seen
            cursor = ids[0]
        else:
            seen += ids
            cursor = ids[-1]
        if not resp.has_more:
            return seen, pages
        assert pages < 50


async def test_a_full_view_list_of_large_runs_pages_to_the_end(
    channel: grpc.aio.Channel, server_errors: Callable[[], list[str]]
) -> None:
    """Seven runs of 1 MB inputs (each with an event carrying a payload), ListRuns in the full
    view with limit 100: pages end early with has_more, and paging forward, then backward
    from the oldest, visits every run exactly once, in order."""
    runs = runs_pb2_grpc.RunServiceStub(channel)
    made = await create_large(runs, 7, MB)
    for r in made:
        await runs.AddEvent(
            R.AddEventRequest(run_id=r.id, type=R.EVENT_TYPE_INFO, payload=struct(blob(30_000)))
        )
    newest_first = [r.id for r in reversed(made)]
    forward, pages = await page_runs(runs, limit=100, view=R.RUN_VIEW_FULL)
    assert forward == newest_first
    assert pages >= 2
    oldest = newest_first[-1]
    backward, _ = await page_runs(runs, backward_from=oldest, limit=100, view=R.RUN_VIEW_FULL)
    assert backward == newest_first[:-1]
    full = (await runs.ListRuns(R.ListRunsRequest(limit=1, view=R.RUN_VIEW_FULL))).data[0]
    assert [e.type for e in full.events] == [R.EVENT_TYPE_INFO]
    assert server_errors() == []


async def page_all(fetch: Callable[[int], Awaitable[tuple[list[int], bool]]]) -> list[int]:
    """Positions (seq, cursor, attempt) `fetch(after)` pages through, each page non-empty."""
    seen: list[int] = []
    after = 0
    for _ in range(100):
        found, more = await fetch(after)
        assert found
        seen += found
        after = found[-1]
        if not more:
            return seen
    raise AssertionError("paging did not end")


@pytest.fixture
async def small_budget(database_url: str) -> AsyncIterator[GyozaServer]:
    """A server whose answers hold about 8 KiB: the other lists' paging, with small items."""
    async with served(database_url, limits=Limits(max_response_bytes=8 * 1024)) as gs:
        yield gs


async def test_events_topic_events_attempts_and_definitions_page_within_the_budget(
    small_budget: GyozaServer,
) -> None:
    async with grpc.aio.insecure_channel(small_budget.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        topics = topics_pb2_grpc.TopicServiceStub(ch)
        definitions = definitions_pb2_grpc.DefinitionServiceStub(ch)
        req = R.CreateRunRequest(
            image="img",
            event_delivery=R.EventDelivery(topic="t", attributes=struct(blob(1000))),
            retry_policy=R.RetryPolicy(max_attempts=1),
        )
        run = (await runs.CreateRun(req)).run
        for _ in range(20):
            await runs.AddEvent(
                R.AddEventRequest(run_id=run.id, type=R.EVENT_TYPE_INFO, payload=struct(blob(1000)))
            )
        for _ in range(6):  # six attempts, each ending with 2 KB of outputs
            await runs.AddEvent(R.AddEventRequest(run_id=run.id, type=R.EVENT_TYPE_STARTED))
            done = R.AddEventRequest(
                run_id=run.id,
                type=R.EVENT_TYPE_COMPLETED,
                payload=struct({"outputs": blob(2000)}),
            )
            await runs.AddEvent(done)
            await runs.RetryRun(R.RetryRunRequest(id=run.id))
        last_seq = (await runs.GetRun(R.GetRunRequest(id=run.id))).run.last_seq

        async def events(after: int) -> tuple[list[int], bool]:
            resp = await runs.ListEvents(R.ListEventsRequest(run_id=run.id, after=after - 1))
            assert resp.ByteSize() <= 8 * 1024 or len(resp.events) == 1
            return [e.seq + 1 for e in resp.events], resp.has_more

        assert await page_all(events) == list(range(1, last_seq + 2))

        async def topic_events(after: int) -> tuple[list[int], bool]:
            resp = await topics.ListTopicEvents(
                topics_pb2.ListTopicEventsRequest(topic="t", after=after)
            )
            assert resp.ByteSize() <= 8 * 1024 or len(resp.events) == 1
            return [e.cursor for e in resp.events], resp.has_more

        assert await page_all(topic_events) == list(range(1, last_seq + 2))

        async def attempts(after: int) -> tuple[list[int], bool]:
            resp = await runs.ListAttempts(R.ListAttemptsRequest(run_id=run.id, after=after))
            assert resp.ByteSize() <= 8 * 1024 or len(resp.attempts) == 1
            return [a.attempt for a in resp.attempts], resp.has_more

        assert await page_all(attempts) == list(range(1, 8))

        for i in range(12):
            d = definitions_pb2.Definition(
                name=f"op-{i:02d}", version="1.0.0", image="img", description="d" * 2000
            )
            await definitions.UpsertDefinition(
                definitions_pb2.UpsertDefinitionRequest(definition=d)
            )
        names: list[str] = []
        after_name = ""
        while True:
            resp = await definitions.ListDefinitions(
                definitions_pb2.ListDefinitionsRequest(limit=100, starting_after=after_name)
            )
            assert resp.definitions and resp.ByteSize() <= 8 * 1024
            names += [d.name for d in resp.definitions]
            after_name = names[-1]
            if not resp.has_more:
                break
        assert names == [f"op-{i:02d}" for i in range(12)]


async def test_list_attempts_refuses_a_negative_after(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    run = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.ListAttempts(R.ListAttemptsRequest(run_id=run.id, after=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after" in (err.value.details() or "")
    resp = await runs.ListAttempts(R.ListAttemptsRequest(run_id=run.id))
    assert [a.attempt for a in resp.attempts] == [1] and not resp.has_more
