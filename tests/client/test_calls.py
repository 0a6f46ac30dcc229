"""Every call of the client, through a real server, the blocking and the async client alike."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta

import pytest

from gyoza.v1 import access_pb2, definitions_pb2
from gyoza_grpc.client import (
    NO_RETRY,
    AsyncClient,
    Client,
    Constraints,
    Definition,
    EventType,
    InputSpec,
    InvalidArgument,
    Resources,
    RetryPolicy,
    RunState,
    Unavailable,
    WorkerState,
    to_dict,
)
from tests.client.conftest import Either, free_port


async def test_runs_from_create_to_retry(client: Either) -> None:
    run = await client.call(
        "create_run",
        "img:1",
        inputs={"n": 3, "nested": {"a": [1, 2.5, None, True]}},
        priority=7,
        constraints=Constraints(cpu=2, ram_mb=512),
        retry_policy=RetryPolicy(max_attempts=2, initial_backoff=timedelta(seconds=0)),
        topic="t-calls",
        attributes={"team": "ml"},
    )
    assert run.state == RunState.PENDING and run.priority == 7
    assert to_dict(run.inputs) == {"n": 3, "nested": {"a": [1, 2.5, None, True]}}
    assert (run.constraints.cpu, run.constraints.ram_mb) == (2, 512)
    assert run.event_delivery.topic == "t-calls"
    assert to_dict(run.event_delivery.attributes) == {"team": "ml"}
    assert run.request_id  # made by the client: its retries cannot create a second run

    again = await client.call("create_run", "img:1", request_id="fixed-key")
    same = await client.call("create_run", "img:1", request_id="fixed-key")
    assert same.id == again.id and same.request_id == "fixed-key"

    added = await client.call(
        "add_event", run.id, EventType.STARTED, payload={"worker_id": "w"}, attempt=1
    )
    assert added.run.state == RunState.RUNNING and added.event.seq == 0
    await client.call("add_event", run.id, EventType.PROGRESS, progress=40, msg="working")
    full = await client.call("get_run", run.id, with_events=True)
    assert [e.type for e in full.events] == [EventType.STARTED, EventType.PROGRESS]
    assert full.progress == 40
    assert not (await client.call("get_run", run.id)).events

    updated = await client.call("update_run", run.id, priority=9)
    assert updated.priority == 9 and updated.state == RunState.RUNNING
    done = await client.call("update_run", run.id, state=RunState.COMPLETED, outputs={"answer": 42})
    assert done.state == RunState.COMPLETED and to_dict(done.outputs) == {"answer": 42}

    retried = await client.call("retry_run", run.id)
    assert (retried.state, retried.current_attempt) == (RunState.PENDING, 2)
    attempts = await client.call("list_attempts", run.id)
    assert [a.attempt for a in attempts] == [1, 2]
    cancelled = await client.call("cancel_run", run.id, reason="enough")
    assert cancelled.state == RunState.CANCELLED

    events = await client.collect("list_events", run.id)
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-1].type == EventType.CANCELLED and events[-1].msg == "enough"
    second_attempt = await client.collect("list_events", run.id, attempt=2)
    assert {e.attempt for e in second_attempt} == {2}
    tail = await client.collect("list_events", run.id, after=events[-3].seq)
    assert [e.seq for e in tail] == [e.seq for e in events[-2:]]

    feed = await client.collect("list_topic_events", "t-calls")
    assert [t.event.seq for t in feed] == [e.seq for e in events]
    assert [t.cursor for t in feed] == list(range(1, len(feed) + 1))
    watched = await client.collect("watch_topic", "t-calls", after=2, take=len(feed) - 2)
    assert [t.cursor for t in watched] == [t.cursor for t in feed[2:]]


async def test_list_runs_filters(client: Either) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    a = await client.call("create_run", "img-filter-a")
    b = await client.call("create_run", "img-filter-b", topic="t-filter")
    await client.call("cancel_run", b.id)
    assert [r.id for r in await client.collect("list_runs", image="img-filter-a")] == [a.id]
    assert [r.id for r in await client.collect("list_runs", topic="t-filter")] == [b.id]
    cancelled = await client.collect("list_runs", state=RunState.CANCELLED)
    assert [r.id for r in cancelled] == [b.id]
    since = await client.collect("list_runs", created_gte=before)
    assert [r.id for r in since] == [b.id, a.id]  # newest first
    assert await client.collect("list_runs", created_lt=before) == []
    with pytest.raises(ValueError, match="naive"):
        await client.collect("list_runs", created_gte=datetime.now())


async def test_count_runs(client: Either) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    image = f"img-count-{client.kind}"
    await client.call("create_run", image)
    run = await client.call("create_run", image)
    await client.call("cancel_run", run.id)
    got = await client.call("count_runs", image=image)
    assert got.total == 2
    counts = {RunState(c.state): c.count for c in got.by_state}
    assert counts == {s: 0 for s in RunState if s} | {RunState.PENDING: 1, RunState.CANCELLED: 1}
    only = await client.call("count_runs", image=image, state=RunState.CANCELLED)
    assert (only.total, list(only.by_state)) == (1, [])
    assert (await client.call("count_runs", image=image, created_lt=before)).total == 0
    with pytest.raises(InvalidArgument) as err:
        await client.call("count_runs", created_gte=datetime.now(UTC), created_lt=before)
    assert [v.field for v in err.value.violations] == ["created_lt"]


async def test_definitions(client: Either) -> None:
    spec = Definition(
        name="resize",
        version="1.0.0",
        image="resize:1",
        input_specs={
            "width": InputSpec(type=definitions_pb2.INPUT_TYPE_INT, required=True),
            "mode": InputSpec(type=definitions_pb2.INPUT_TYPE_STRING),
        },
        retry_policy=RetryPolicy(max_attempts=3),
    )
    first = await client.call("upsert_definition", spec)
    assert first.created and first.definition.version == "1.0.0"
    assert not (await client.call("upsert_definition", spec)).created
    spec.version, spec.image = "1.1.0", "resize:2"
    await client.call("upsert_definition", spec)
    await client.call("upsert_definition", Definition(name="blur", version="0.1.0", image="b"))

    assert (await client.call("get_definition", "resize")).version == "1.1.0"
    assert (await client.call("get_definition", "resize", version="1.0.0")).image == "resize:1"
    listed = await client.collect("list_definitions", page_size=1)
    assert [(d.name, d.version) for d in listed] == [("blur", "0.1.0"), ("resize", "1.1.0")]
    versions = await client.call("list_definition_versions", "resize")
    assert [d.version for d in versions] == ["1.1.0", "1.0.0"]

    run = await client.call("create_run_from_definition", "resize", inputs={"width": 640})
    assert (run.op_definition, run.definition_version, run.image) == ("resize", "1.1.0", "resize:2")
    assert run.retry_policy.max_attempts == 3 and run.request_id
    old = await client.call(
        "create_run_from_definition", "resize", version="1.0.0", inputs={"width": 1}
    )
    assert old.image == "resize:1"

    assert await client.call("delete_definition", "resize", version="1.0.0") == ["1.0.0"]
    assert [d.version for d in await client.call("list_definition_versions", "resize")] == ["1.1.0"]


async def test_worker_calls(client: Either) -> None:
    resources = Resources(cpu=4, ram_mb=8000)
    beat = await client.call("heartbeat", "w1", resources=resources, tags=["cpu"])
    assert beat.lease_seconds > 0 and list(beat.stop) == []
    run = await client.call("create_run", "img-worker", constraints=Constraints(cpu=1))
    (claim,) = await client.call("claim_runs", "w1", max_runs=5)
    assert claim.run.id == run.id and claim.attempt == 1
    worker = await client.call("get_worker", "w1")
    assert worker.state == WorkerState.ALIVE and list(worker.tags) == ["cpu"]
    assert [(h.run_id, h.attempt) for h in worker.held] == [(run.id, 1)]
    assert [w.worker_id for w in await client.call("list_workers")] == ["w1"]

    released = await client.call("release_run", "w1", run.id, claim.attempt)
    assert released.state == RunState.PENDING
    # A long-poll that finds nothing answers empty when its wait is over.
    await client.call("claim_runs", "w1", max_runs=1)  # takes the released run back
    empty = await client.call("claim_runs", "w1", wait=timedelta(milliseconds=200))
    assert empty == []
    beat = await client.call("heartbeat", "w1", resources=resources, running=[(run.id, 1)])
    assert list(beat.stop) == []

    # The stop-order long-poll: empty when its wait is over, at once when a run is stopped.
    held = [(run.id, 1)]
    quiet = timedelta(milliseconds=200)
    assert await client.call("wait_for_stop_orders", "w1", running=held, wait=quiet) == []
    poll = asyncio.ensure_future(
        client.call("wait_for_stop_orders", "w1", running=held, wait=timedelta(seconds=30))
    )
    await asyncio.sleep(0.2)
    await client.call("cancel_run", run.id)
    (order,) = await asyncio.wait_for(poll, 20)
    assert (order.run_id, order.attempt) == (run.id, 1)

    await client.call("heartbeat", "w1", resources=resources, not_ready_reason="engine down")
    assert (await client.call("get_worker", "w1")).not_ready_reason == "engine down"


async def test_the_caller(client: Either) -> None:
    caller = await client.call("get_caller")  # a server without keys: anyone may call anything
    assert not caller.keys_required and caller.role == access_pb2.ROLE_UNSPECIFIED
    assert "/gyoza.v1.RunService/CancelRun" in caller.methods


def _calls(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if not name.startswith("_") and inspect.isfunction(getattr(cls, name))
    }


# `call` sends a request through the async stubs (`run_service`, ...), which a blocking
# client does not hand out.
ASYNC_ONLY = {"call"}


def test_the_blocking_client_has_every_call_of_the_async_one_and_runs_it() -> None:
    assert _calls(Client) == _calls(AsyncClient) - ASYNC_ONLY
    for name in _calls(Client) - {"close", "with_api_key"}:
        blocking = getattr(Client, name)
        assert blocking.__wrapped__ is getattr(AsyncClient, name), name  # one implementation
        assert not inspect.iscoroutinefunction(blocking), name


def test_an_async_client_belongs_to_the_loop_of_its_first_call() -> None:
    client = AsyncClient(f"127.0.0.1:{free_port()}", retry=NO_RETRY)

    async def call() -> None:
        with pytest.raises(Unavailable):  # nothing listens there: the channel is open, though
            await client.list_workers()

    asyncio.run(call())
    with pytest.raises(RuntimeError, match="one client per event loop"):
        asyncio.run(call())
