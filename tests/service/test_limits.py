"""Limits through a real server: message size, JSON size caps, events per run, open watch
streams, deadlines. Each is a precise status and message, never a crash.

Limits behave the same on both backends (they are checked before the store), so these run
on SQLite with small caps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

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
from gyoza_grpc.domain.limits import DEFAULT_LIMITS, MAX_JSON_DEPTH, Limits, json_size
from gyoza_grpc.server import GyozaServer
from tests.conftest import eventually, launch, served
from tests.service.helpers import (
    S,
    add,
    create,
    error_reason,
    fails,
    running,
    struct,
    violations,
)

SMALL = Limits(
    max_message_bytes=64 * 1024,
    max_json_bytes=2000,
    max_payload_bytes=500,
    max_events_per_run=6,
    max_watch_streams=2,
)


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    """The server the shared `channel` and `runs` fixtures talk to: SQLite, SMALL limits."""
    async with served(sqlite_url, limits=SMALL) as gs:
        yield gs


def sized(n: int) -> dict[str, Any]:
    """A JSON object of exactly `n` bytes in compact form."""
    doc = {"k": ""}
    doc["k"] = "x" * (n - json_size(doc))
    assert json_size(doc) == n
    return doc


def metadata(err: grpc.aio.AioRpcError) -> dict[str, str]:
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return dict(info.metadata)
    raise AssertionError("no ErrorInfo")


async def serving(channel: grpc.aio.Channel) -> bool:
    resp = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


# -- message size --------------------------------------------------------------------------


async def test_a_request_over_the_message_size_is_resource_exhausted(
    runs: runs_pb2_grpc.RunServiceStub, channel: grpc.aio.Channel
) -> None:
    big = {"blob": "x" * (SMALL.max_message_bytes + 1000)}
    err = await fails(
        runs.CreateRun(runs_pb2.CreateRunRequest(image="i", inputs=struct(big))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert "larger than max" in (err.details() or "")
    assert await serving(channel)
    # Just under the message size, the JSON cap (a smaller number) names the field instead.
    err = await fails(
        runs.CreateRun(runs_pb2.CreateRunRequest(image="i", inputs=struct(sized(30_000)))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in violations(err)] == ["inputs"]


async def test_the_default_message_size_is_4_mib(sqlite_url: str) -> None:
    assert DEFAULT_LIMITS.max_message_bytes == 4 * 1024 * 1024
    gs = await launch(sqlite_url)
    try:
        async with grpc.aio.insecure_channel(gs.target) as channel:
            stub = runs_pb2_grpc.RunServiceStub(channel)
            req = runs_pb2.AddEventRequest(run_id="x" * (4 * 1024 * 1024), type=S.EVENT_TYPE_INFO)
            await fails(stub.AddEvent(req), grpc.StatusCode.RESOURCE_EXHAUSTED)
            req = runs_pb2.AddEventRequest(run_id="x" * (4 * 1024 * 1024 - 100))
            await fails(stub.AddEvent(req), grpc.StatusCode.INVALID_ARGUMENT)  # reached us
    finally:
        await gs.stop(0)


# -- JSON size caps ------------------------------------------------------------------------


async def test_inputs_and_attributes_at_the_cap_pass_and_one_byte_more_is_refused(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    cap = SMALL.max_json_bytes
    run = await create(runs, inputs=sized(cap))
    assert len(run.inputs["k"]) > 1900
    err = await fails(
        runs.CreateRun(runs_pb2.CreateRunRequest(image="i", inputs=struct(sized(cap + 1)))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == [
        ("inputs", f"is {cap + 1} bytes of JSON; at most {cap} bytes are allowed")
    ]
    delivery = runs_pb2.EventDelivery(topic="t", attributes=struct(sized(cap + 1)))
    err = await fails(
        runs.CreateRun(runs_pb2.CreateRunRequest(image="i", event_delivery=delivery)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in violations(err)] == ["event_delivery.attributes"]
    # Multi-byte characters count as their UTF-8 bytes.
    err = await fails(
        runs.CreateRun(
            runs_pb2.CreateRunRequest(image="i", inputs=struct({"k": "é" * (cap // 2)}))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in violations(err)] == ["inputs"]


async def test_outputs_are_capped_through_update_and_completed(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    cap = SMALL.max_json_bytes
    run = await running(runs)
    update = runs_pb2.UpdateRunRequest(
        id=run.id,
        outputs=struct(sized(cap + 1)),
        update_mask=field_mask_pb2.FieldMask(paths=["outputs"]),
    )
    err = await fails(runs.UpdateRun(update), grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in violations(err)] == ["outputs"]
    # A COMPLETED event's outputs count against the outputs cap, not the payload cap.
    err = await fails(
        add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"outputs": sized(cap + 1)}),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == [
        ("payload.outputs", f"is {cap + 1} bytes of JSON; at most {cap} bytes are allowed")
    ]
    done = await add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload={"outputs": sized(cap)})
    assert done.run.state == S.RUN_STATE_COMPLETED
    assert len(done.run.outputs["k"]) > 1900


async def test_event_payloads_are_capped(runs: runs_pb2_grpc.RunServiceStub) -> None:
    cap = SMALL.max_payload_bytes
    run = await create(runs)
    await add(runs, run.id, S.EVENT_TYPE_INFO, payload=sized(cap))
    err = await fails(
        add(runs, run.id, S.EVENT_TYPE_INFO, payload=sized(cap + 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == [
        ("payload", f"is {cap + 1} bytes of JSON; at most {cap} bytes are allowed")
    ]
    await add(runs, run.id, S.EVENT_TYPE_STARTED)
    # The rest of a COMPLETED payload keeps the payload cap.
    big_rest = {"outputs": {}, "note": "x" * cap}
    err = await fails(
        add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload=big_rest),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in violations(err)] == ["payload"]


async def test_create_run_from_definition_caps_inputs(channel: grpc.aio.Channel) -> None:
    defs = definitions_pb2_grpc.DefinitionServiceStub(channel)
    await defs.UpsertDefinition(
        definitions_pb2.UpsertDefinitionRequest(
            definition=definitions_pb2.Definition(name="op", version="1.0.0", image="i")
        )
    )
    req = definitions_pb2.CreateRunFromDefinitionRequest(
        name="op", version="1.0.0", inputs=struct(sized(SMALL.max_json_bytes + 1))
    )
    err = await fails(defs.CreateRunFromDefinition(req), grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in violations(err)] == ["inputs"]


# -- events per run ------------------------------------------------------------------------


async def test_a_run_at_its_event_cap_takes_only_lifecycle_events(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    cap = SMALL.max_events_per_run
    run = await create(runs)
    for i in range(cap):
        await add(runs, run.id, S.EVENT_TYPE_INFO, msg=f"m{i}")
    for type_ in (S.EVENT_TYPE_INFO, S.EVENT_TYPE_ERROR):
        err = await fails(add(runs, run.id, type_), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert error_reason(err) == "EVENT_LIMIT_REACHED"
        assert metadata(err) == {"run_id": run.id, "max_events_per_run": str(cap)}
        assert f"run '{run.id}' holds {cap} events" in (err.details() or "")
        assert f"the most a run may hold is {cap}" in (err.details() or "")
    # It can still move forward and end.
    await add(runs, run.id, S.EVENT_TYPE_ASSIGNED, payload={"worker_id": "w"})
    await add(runs, run.id, S.EVENT_TYPE_STARTED)
    await fails(
        add(runs, run.id, S.EVENT_TYPE_PROGRESS, progress=5), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    done = await add(runs, run.id, S.EVENT_TYPE_COMPLETED)
    assert done.run.state == S.RUN_STATE_COMPLETED and done.event.seq == cap + 2
    # No manual retry past the cap, by any route.
    await fails(
        runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id)), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    await fails(add(runs, run.id, S.EVENT_TYPE_RETRIED), grpc.StatusCode.RESOURCE_EXHAUSTED)
    update = runs_pb2.UpdateRunRequest(id=run.id, state=S.RUN_STATE_PENDING)
    await fails(runs.UpdateRun(update), grpc.StatusCode.RESOURCE_EXHAUSTED)
    got = await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run.id))
    assert [e.seq for e in got.events] == list(range(cap + 3))


async def test_cancel_and_failure_with_automatic_retry_pass_the_cap(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    cap = SMALL.max_events_per_run
    run = await create(runs, retry_policy=runs_pb2.RetryPolicy(max_attempts=2))
    await add(runs, run.id, S.EVENT_TYPE_STARTED)
    for _ in range(cap - 1):
        await add(runs, run.id, S.EVENT_TYPE_INFO)
    failed = await add(runs, run.id, S.EVENT_TYPE_FAILED)
    assert failed.run.state == S.RUN_STATE_PENDING and failed.run.current_attempt == 2
    cancelled = await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))
    assert cancelled.run.state == S.RUN_STATE_CANCELLED


# -- open watch streams --------------------------------------------------------------------


async def _first(call: Any) -> Any:
    return await call.read()


async def test_watch_streams_past_the_cap_are_resource_exhausted_and_slots_come_back(
    channel: grpc.aio.Channel, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    topics = topics_pb2_grpc.TopicServiceStub(channel)
    run = await create(runs, event_delivery=runs_pb2.EventDelivery(topic="t"))
    await add(runs, run.id, S.EVENT_TYPE_INFO)
    a = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id))
    b = topics.WatchTopic(topics_pb2.WatchTopicRequest(topic="t"))
    assert (await a.read()).event.seq == 0
    assert (await b.read()).event.cursor == 1
    third = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id))
    err = await fails(_first(third), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert error_reason(err) == "TOO_MANY_WATCHERS"
    assert "--max-watch-streams 2" in (err.details() or "")
    err = await fails(
        _first(topics.WatchTopic(topics_pb2.WatchTopicRequest(topic="t"))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    # A cancelled stream gives its slot back.
    a.cancel()

    async def accepted() -> bool:
        call = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id))
        try:
            await call.read()
            return True
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
        finally:
            call.cancel()

    await eventually(accepted)
    b.cancel()


async def test_slots_come_back_on_completion_error_and_deadline(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    # More streams than the cap, one after another, ending each way: none leaks a slot.
    for _ in range(3 * SMALL.max_watch_streams):
        await fails(
            _first(runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id="no-such-run"))),
            grpc.StatusCode.NOT_FOUND,
        )
    done = await running(runs)
    await add(runs, done.id, S.EVENT_TYPE_COMPLETED)
    for _ in range(3 * SMALL.max_watch_streams):
        items = [i async for i in runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=done.id))]
        assert [i.event.seq for i in items] == [0, 1]
    idle = await create(runs)
    for _ in range(3 * SMALL.max_watch_streams):
        call = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=idle.id), timeout=0.3)
        err = await fails(_drain(call), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert err is not None

    async def free_again() -> bool:
        call = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=done.id))
        try:
            return len([i async for i in call]) == 2
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False

    await eventually(free_again)


async def _drain(call: Any) -> list[Any]:
    return [i async for i in call]


# -- deadlines -----------------------------------------------------------------------------


async def test_a_long_poll_ends_by_the_callers_deadline_and_leaves_no_waiter(
    channel: grpc.aio.Channel, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    workers = workers_pb2_grpc.WorkerServiceStub(channel)
    for wid in ("early", "late"):
        await workers.Heartbeat(
            workers_pb2.HeartbeatRequest(
                worker_id=wid, resources=workers_pb2.Resources(cpu=4, ram_mb=1000)
            )
        )
    wait = duration_pb2.Duration(seconds=30)
    started = time.monotonic()
    try:
        resp = await workers.ClaimRuns(
            workers_pb2.ClaimRunsRequest(worker_id="early", wait=wait), timeout=1.0
        )
        assert list(resp.claims) == []  # answered empty just before the deadline
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10  # not the 30 s it asked to wait
    # The expired call left no waiter behind to swallow the next run's wake-up.
    late = asyncio.ensure_future(
        workers.ClaimRuns(workers_pb2.ClaimRunsRequest(worker_id="late", wait=wait), timeout=40)
    )
    await asyncio.sleep(0.3)
    run = await create(runs)
    started = time.monotonic()
    resp = await late
    assert [c.run.id for c in resp.claims] == [run.id]
    assert time.monotonic() - started < 10


# -- flags ---------------------------------------------------------------------------------


def test_limit_flags_and_environment_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from gyoza_grpc import cli
    from gyoza_grpc.cli.serve import limits_from_args

    monkeypatch.setenv("GYOZA_MAX_WATCH_STREAMS", "7")
    args = cli.build_parser().parse_args(
        ["serve", "--max-message-bytes", "1000", "--max-json-bytes", "900",
         "--max-payload-bytes", "800", "--max-events-per-run", "50"]
    )  # fmt: skip
    assert limits_from_args(args) == Limits(
        max_message_bytes=1000,
        max_json_bytes=900,
        max_payload_bytes=800,
        max_events_per_run=50,
        max_watch_streams=7,
    )
    assert limits_from_args(cli.build_parser().parse_args(["serve"])) == Limits(max_watch_streams=7)


def test_a_limit_below_one_is_refused_at_startup(capsys: pytest.CaptureFixture[str]) -> None:
    from gyoza_grpc import cli

    assert cli.main(["serve", "--max-events-per-run", "0"]) == 2
    assert "max_events_per_run must be at least 1, got 0" in capsys.readouterr().err


def _nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        doc = {"d": doc}
    return doc


async def test_json_nesting_is_capped_so_every_run_can_still_be_listed(
    runs: runs_pb2_grpc.RunServiceStub,
) -> None:
    deepest = await runs.CreateRun(
        runs_pb2.CreateRunRequest(image="img", inputs=struct(_nested(MAX_JSON_DEPTH)))
    )
    page = await runs.ListRuns(runs_pb2.ListRunsRequest(limit=10))  # decodes on the client
    assert [r.id for r in page.data] == [deepest.run.id]
    err = await fails(
        runs.CreateRun(
            runs_pb2.CreateRunRequest(image="img", inputs=struct(_nested(MAX_JSON_DEPTH + 1)))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == [
        ("inputs", f"nests {MAX_JSON_DEPTH + 1} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    ]
