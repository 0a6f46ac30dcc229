"""The access log: one JSON line per RPC when it ends, with method, code, duration, peer and
the request's run id / topic / worker id; never metadata (API keys)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gyoza.v1 import (
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
)
from tests.conftest import eventually, launch
from tests.ops.helpers import Captured, access_log

SECRET = "sk-test-7f3a9c-never-log-me"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """The database plays no part here: the conftest server runs on SQLite only."""
    return sqlite_url


@pytest.fixture
def log() -> Iterator[Captured]:
    with access_log() as captured:
        yield captured


async def test_one_line_per_unary_call_with_code_duration_and_run_id(
    channel: grpc.aio.Channel, log: Captured
) -> None:
    runs = runs_pb2_grpc.RunServiceStub(channel)
    run = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))).run
    secret_headers = [("x-api-key", SECRET), ("authorization", f"Bearer {SECRET}")]
    await runs.GetRun(runs_pb2.GetRunRequest(id=run.id), metadata=secret_headers)
    with pytest.raises(grpc.aio.AioRpcError):
        await runs.GetRun(runs_pb2.GetRunRequest(id="no-such-run"), metadata=secret_headers)

    async def three_lines() -> bool:
        return len(log.lines()) == 3

    await eventually(three_lines)
    create, ok, missing = log.lines()
    assert create["method"] == "gyoza.v1.RunService/CreateRun" and create["code"] == "OK"
    assert "run_id" not in create  # CreateRunRequest carries none
    assert ok["method"] == "gyoza.v1.RunService/GetRun"
    assert (ok["code"], ok["run_id"], ok["level"]) == ("OK", run.id, "INFO")
    assert isinstance(ok["duration_ms"], float) and 0 <= ok["duration_ms"] < 60_000
    assert ok["peer"].startswith("ipv4:127.0.0.1:")
    assert "messages" not in ok
    assert (missing["code"], missing["run_id"]) == ("NOT_FOUND", "no-such-run")
    assert SECRET not in log.text
    assert "x-api-key" not in log.text and "authorization" not in log.text


async def test_a_long_request_value_is_cut(channel: grpc.aio.Channel, log: Captured) -> None:
    runs = runs_pb2_grpc.RunServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetRun(runs_pb2.GetRunRequest(id="x" * 5000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def logged() -> bool:  # the line is made once the server has ended the call
        return len(log.rpcs("GetRun")) == 1

    await eventually(logged)
    (line,) = log.rpcs("GetRun")
    assert (line["code"], line["run_id"]) == ("INVALID_ARGUMENT", "x" * 128)


async def test_undecodable_requests_are_logged_invalid_argument(
    channel: grpc.aio.Channel, log: Captured
) -> None:
    call = channel.unary_unary("/gyoza.v1.RunService/GetRun")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"\xff\xff\xff")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def logged() -> bool:  # the line is made as the server ends the call
        return bool(log.rpcs("GetRun"))

    await eventually(logged)
    (line,) = log.rpcs("GetRun")
    assert line["code"] == "INVALID_ARGUMENT" and "run_id" not in line


async def test_a_stream_is_logged_when_it_ends_with_its_message_count(
    channel: grpc.aio.Channel, log: Captured
) -> None:
    runs = runs_pb2_grpc.RunServiceStub(channel)
    run = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))).run
    await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=runs_pb2.EVENT_TYPE_INFO))
    watch = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run.id))
    first = await watch.read()
    assert first.HasField("event") and first.event.seq == 0
    assert log.rpcs("WatchEvents") == []  # not logged while it is open
    await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))
    last = await watch.read()
    assert last.event.state == runs_pb2.RUN_STATE_CANCELLED
    assert await watch.read() is grpc.aio.EOF

    async def logged() -> bool:
        return len(log.rpcs("WatchEvents")) == 1

    await eventually(logged)
    (line,) = log.rpcs("WatchEvents")
    assert (line["code"], line["messages"], line["run_id"]) == ("OK", 2, run.id)


async def test_a_cancelled_stream_and_topic_and_worker_fields(
    channel: grpc.aio.Channel, log: Captured
) -> None:
    topics = topics_pb2_grpc.TopicServiceStub(channel)
    watch = topics.WatchTopic(topics_pb2.WatchTopicRequest(topic="orders"))
    await watch.initial_metadata()  # the server has accepted the stream (a sleep may not do)
    watch.cancel()
    workers = workers_pb2_grpc.WorkerServiceStub(channel)
    await workers.Heartbeat(
        workers_pb2.HeartbeatRequest(
            worker_id="w-7", resources=workers_pb2.Resources(cpu=1, ram_mb=100)
        )
    )

    async def both() -> bool:
        return bool(log.rpcs("WatchTopic")) and bool(log.rpcs("Heartbeat"))

    await eventually(both)
    (topic,) = log.rpcs("WatchTopic")
    assert (topic["code"], topic["topic"], topic["messages"]) == ("CANCELLED", "orders", 0)
    (beat,) = log.rpcs("Heartbeat")
    assert (beat["code"], beat["worker_id"]) == ("OK", "w-7")


async def test_health_watch_streams_and_is_logged(channel: grpc.aio.Channel, log: Captured) -> None:
    """grpc_health's Watch writes with context.write: the interceptors must not break it."""
    health = health_pb2_grpc.HealthStub(channel)
    call = health.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    call.cancel()

    async def logged() -> bool:
        return bool(log.rpcs("Watch"))

    await eventually(logged)
    assert log.rpcs("Watch")[0]["method"] == "grpc.health.v1.Health/Watch"


async def test_nothing_is_logged_below_info(sqlite_url: str) -> None:
    with access_log() as log:
        logging.getLogger("gyoza_grpc.access").setLevel(logging.WARNING)
        gs = await launch(sqlite_url)
        try:
            async with grpc.aio.insecure_channel(gs.target) as ch:
                runs = runs_pb2_grpc.RunServiceStub(ch)
                await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))
        finally:
            await gs.stop(0)
        assert log.text == ""
