"""API keys and roles against a real keyed server (SQLite): every role against a unary and a
streaming method of each service, missing and unknown keys, both header forms, the open
health and reflection services, the interceptor order, and keys kept out of the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from gyoza.v1 import (
    access_pb2,
    access_pb2_grpc,
    definitions_pb2,
    definitions_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
)
from gyoza_grpc.domain.access import ApiKeys, KeyEntry, Role
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.server.api import roles
from gyoza_grpc.worker import Worker, WorkerError
from tests.conftest import launch, served
from tests.keyed_channel import open_channel

ADMIN_KEY = "admin-key-0123456789abcdef"
WORKER_KEY = "worker-key-0123456789abcdef"
READER_KEY = "reader-key-0123456789abcdef"
UNKNOWN_KEY = "nobody-key-0123456789abcdef"
KEYS = {Role.ADMIN: ADMIN_KEY, Role.WORKER: WORKER_KEY, Role.READER: READER_KEY}
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def api_keys() -> ApiKeys:
    return ApiKeys.of(KeyEntry(role, key, role.value) for role, key in KEYS.items())


@pytest.fixture
async def keyed(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    async with served(sqlite_url, api_keys=api_keys()) as gs:
        yield gs


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status details"
    assert status.code == err.code().value[0]
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no google.rpc.ErrorInfo detail")


async def outcome(call: Callable[[grpc.aio.Channel], Awaitable[Any]], ch: grpc.aio.Channel) -> Any:
    """The call's result, or its AioRpcError."""
    try:
        return await call(ch)
    except grpc.aio.AioRpcError as err:
        return err


async def first_message(stream: Any) -> Any:
    async for item in stream:
        stream.cancel()
        return item
    return None


async def opened(stream: Any) -> Any:
    """A stream that sends nothing at first: its refusal, or "open" once its headers came and
    nothing was refused for a moment."""
    await stream.initial_metadata()
    try:
        return await asyncio.wait_for(stream.read(), 0.5)
    except TimeoutError:
        return "open"
    finally:
        stream.cancel()


# One unary and one streaming method per service where it has one, each with a request the
# handler answers at once (a result or a validation error: either way the call got through).
CALLS: dict[str, Callable[[grpc.aio.Channel], Awaitable[Any]]] = {
    "/gyoza.v1.RunService/CreateRun": lambda ch: runs_pb2_grpc.RunServiceStub(ch).CreateRun(
        runs_pb2.CreateRunRequest(image="img")
    ),
    "/gyoza.v1.RunService/GetRun": lambda ch: runs_pb2_grpc.RunServiceStub(ch).GetRun(
        runs_pb2.GetRunRequest(id="missing")
    ),
    "/gyoza.v1.RunService/UpdateRun": lambda ch: runs_pb2_grpc.RunServiceStub(ch).UpdateRun(
        runs_pb2.UpdateRunRequest(id="missing")
    ),
    "/gyoza.v1.RunService/CancelRun": lambda ch: runs_pb2_grpc.RunServiceStub(ch).CancelRun(
        runs_pb2.CancelRunRequest(id="missing")
    ),
    "/gyoza.v1.RunService/ListRuns": lambda ch: runs_pb2_grpc.RunServiceStub(ch).ListRuns(
        runs_pb2.ListRunsRequest()
    ),
    "/gyoza.v1.RunService/CountRuns": lambda ch: runs_pb2_grpc.RunServiceStub(ch).CountRuns(
        runs_pb2.CountRunsRequest()
    ),
    "/gyoza.v1.RunService/WatchEvents": lambda ch: first_message(
        runs_pb2_grpc.RunServiceStub(ch).WatchEvents(runs_pb2.WatchEventsRequest(run_id="missing"))
    ),
    "/gyoza.v1.RunService/WatchRuns": lambda ch: opened(
        runs_pb2_grpc.RunServiceStub(ch).WatchRuns(runs_pb2.WatchRunsRequest())
    ),
    "/gyoza.v1.AccessService/GetCaller": lambda ch: access_pb2_grpc.AccessServiceStub(ch).GetCaller(
        access_pb2.GetCallerRequest()
    ),
    "/gyoza.v1.TopicService/ListTopicEvents": lambda ch: topics_pb2_grpc.TopicServiceStub(
        ch
    ).ListTopicEvents(topics_pb2.ListTopicEventsRequest(topic="t")),
    "/gyoza.v1.TopicService/WatchTopic": lambda ch: first_message(
        topics_pb2_grpc.TopicServiceStub(ch).WatchTopic(topics_pb2.WatchTopicRequest(topic=""))
    ),
    "/gyoza.v1.WorkerService/Heartbeat": lambda ch: workers_pb2_grpc.WorkerServiceStub(
        ch
    ).Heartbeat(workers_pb2.HeartbeatRequest(worker_id="w")),
    "/gyoza.v1.WorkerService/ClaimRuns": lambda ch: workers_pb2_grpc.WorkerServiceStub(
        ch
    ).ClaimRuns(workers_pb2.ClaimRunsRequest(worker_id="")),
    "/gyoza.v1.WorkerService/ReleaseRun": lambda ch: workers_pb2_grpc.WorkerServiceStub(
        ch
    ).ReleaseRun(workers_pb2.ReleaseRunRequest(worker_id="w", run_id="missing", attempt=1)),
    "/gyoza.v1.WorkerService/ListWorkers": lambda ch: workers_pb2_grpc.WorkerServiceStub(
        ch
    ).ListWorkers(workers_pb2.ListWorkersRequest()),
    "/gyoza.v1.DefinitionService/UpsertDefinition": lambda ch: (
        definitions_pb2_grpc.DefinitionServiceStub(ch).UpsertDefinition(
            definitions_pb2.UpsertDefinitionRequest()
        )
    ),
    "/gyoza.v1.DefinitionService/ListDefinitions": lambda ch: (
        definitions_pb2_grpc.DefinitionServiceStub(ch).ListDefinitions(
            definitions_pb2.ListDefinitionsRequest()
        )
    ),
}
ALLOWED = {
    Role.ADMIN: set(CALLS),
    Role.WORKER: {
        "/gyoza.v1.AccessService/GetCaller",
        "/gyoza.v1.RunService/GetRun",
        "/gyoza.v1.RunService/WatchEvents",
        "/gyoza.v1.WorkerService/Heartbeat",
        "/gyoza.v1.WorkerService/ClaimRuns",
        "/gyoza.v1.WorkerService/ReleaseRun",
    },
    Role.READER: {
        "/gyoza.v1.AccessService/GetCaller",
        "/gyoza.v1.RunService/GetRun",
        "/gyoza.v1.RunService/ListRuns",
        "/gyoza.v1.RunService/CountRuns",
        "/gyoza.v1.RunService/WatchEvents",
        "/gyoza.v1.RunService/WatchRuns",
        "/gyoza.v1.TopicService/ListTopicEvents",
        "/gyoza.v1.TopicService/WatchTopic",
        "/gyoza.v1.WorkerService/ListWorkers",
        "/gyoza.v1.DefinitionService/ListDefinitions",
    },
}


@pytest.mark.parametrize("role", list(Role))
async def test_each_role_gets_exactly_its_methods(keyed: GyozaServer, role: Role) -> None:
    async with open_channel(keyed.target, api_key=KEYS[role]) as ch:
        for method, call in CALLS.items():
            result = await asyncio.wait_for(outcome(call, ch), 30)
            if method in ALLOWED[role]:
                code = result.code() if isinstance(result, grpc.aio.AioRpcError) else None
                assert code not in AUTH_CODES, (role, method, result)
                continue
            assert isinstance(result, grpc.aio.AioRpcError), (role, method, result)
            assert result.code() == grpc.StatusCode.PERMISSION_DENIED, (role, method)
            assert result.details() == f"role '{role}' may not call {method}"
            info = error_info(result)
            assert info.reason == "ROLE_FORBIDDEN"
            assert dict(info.metadata) == {"role": role.value, "method": method}


@pytest.mark.parametrize("role", list(Role))
async def test_get_caller_names_the_role_and_its_methods(keyed: GyozaServer, role: Role) -> None:
    async with open_channel(keyed.target, api_key=KEYS[role]) as ch:
        got = await access_pb2_grpc.AccessServiceStub(ch).GetCaller(access_pb2.GetCallerRequest())
    assert got.keys_required
    assert access_pb2.Role.Name(got.role) == f"ROLE_{role.value.upper()}"
    assert list(got.methods) == sorted(roles.ALLOWED[role])
    can_cancel = "/gyoza.v1.RunService/CancelRun" in got.methods
    assert can_cancel == (role is Role.ADMIN)


async def test_get_caller_without_keys_allows_everything(sqlite_url: str) -> None:
    async with served(sqlite_url) as gs, grpc.aio.insecure_channel(gs.target) as ch:
        got = await access_pb2_grpc.AccessServiceStub(ch).GetCaller(access_pb2.GetCallerRequest())
    assert not got.keys_required and got.role == access_pb2.ROLE_UNSPECIFIED
    assert list(got.methods) == sorted(roles.ALL_METHODS)


async def test_allowed_calls_really_run(keyed: GyozaServer) -> None:
    async with (
        open_channel(keyed.target, api_key=ADMIN_KEY) as admin,
        open_channel(keyed.target, api_key=READER_KEY) as reader,
    ):
        created = await runs_pb2_grpc.RunServiceStub(admin).CreateRun(
            runs_pb2.CreateRunRequest(image="img")
        )
        got = await runs_pb2_grpc.RunServiceStub(reader).GetRun(
            runs_pb2.GetRunRequest(id=created.run.id)
        )
        assert got.run.id == created.run.id


async def call_with(keyed: GyozaServer, metadata: list[tuple[str, str]]) -> Any:
    async with grpc.aio.insecure_channel(keyed.target) as ch:
        stub = runs_pb2_grpc.RunServiceStub(ch)
        try:
            return await stub.ListRuns(runs_pb2.ListRunsRequest(), metadata=metadata)
        except grpc.aio.AioRpcError as err:
            return err


@pytest.mark.parametrize(
    "metadata",
    [
        [("x-api-key", READER_KEY)],
        [("authorization", f"Bearer {READER_KEY}")],
        [("authorization", f"bearer {READER_KEY}")],
        [("x-api-key", READER_KEY), ("authorization", "Bearer wrong")],
    ],
    ids=["x-api-key", "bearer", "bearer-lowercase", "x-api-key-first"],
)
async def test_both_header_forms_are_accepted(
    keyed: GyozaServer, metadata: list[tuple[str, str]]
) -> None:
    result = await call_with(keyed, metadata)
    assert isinstance(result, runs_pb2.ListRunsResponse), result


@pytest.mark.parametrize(
    "metadata, reason, details",
    [
        (
            [],
            "API_KEY_MISSING",
            "no API key: send metadata 'x-api-key: KEY' or 'authorization: Bearer KEY'",
        ),
        ([("x-api-key", "")], "API_KEY_MISSING", None),
        (
            [("authorization", f"Basic {READER_KEY}")],
            "API_KEY_MISSING",
            "the authorization header is not 'Bearer KEY': "
            "send metadata 'x-api-key: KEY' or 'authorization: Bearer KEY'",
        ),
        ([("x-api-key", UNKNOWN_KEY)], "API_KEY_INVALID", "the API key is not valid"),
        ([("authorization", f"Bearer {UNKNOWN_KEY}")], "API_KEY_INVALID", None),
        ([("x-api-key", READER_KEY[:-1])], "API_KEY_INVALID", None),
    ],
    ids=["none", "empty", "basic", "unknown", "unknown-bearer", "prefix"],
)
async def test_missing_or_unknown_key_is_unauthenticated(
    keyed: GyozaServer, metadata: list[tuple[str, str]], reason: str, details: str | None
) -> None:
    err = await call_with(keyed, metadata)
    assert isinstance(err, grpc.aio.AioRpcError), err
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    if details is not None:
        assert err.details() == details
    info = error_info(err)
    assert (info.reason, dict(info.metadata)) == (
        reason,
        {"method": "/gyoza.v1.RunService/ListRuns"},
    )


async def test_a_stream_without_a_key_is_refused_before_it_starts(keyed: GyozaServer) -> None:
    async with grpc.aio.insecure_channel(keyed.target) as ch:
        stream = runs_pb2_grpc.RunServiceStub(ch).WatchEvents(
            runs_pb2.WatchEventsRequest(run_id="any")
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await first_message(stream)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_unknown_method_needs_a_key_too(keyed: GyozaServer) -> None:
    async with grpc.aio.insecure_channel(keyed.target) as ch:
        call = ch.unary_unary("/gyoza.v1.RunService/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await call(b"")
        with pytest.raises(grpc.aio.AioRpcError) as admin:
            await call(b"", metadata=[("x-api-key", ADMIN_KEY)])
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert admin.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_auth_comes_before_decoding(keyed: GyozaServer) -> None:
    """An undecodable request is UNAUTHENTICATED without a key, INVALID_ARGUMENT with one."""
    async with grpc.aio.insecure_channel(keyed.target) as ch:
        call = ch.unary_unary("/gyoza.v1.RunService/GetRun")
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await call(b"\x0a\xff")
        with pytest.raises(grpc.aio.AioRpcError) as admin:
            await call(b"\x0a\xff", metadata=[("x-api-key", ADMIN_KEY)])
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert admin.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def list_services(ch: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request])):
        return [s.name for s in response.list_services_response.service]
    raise AssertionError("no reflection response")


async def test_health_and_reflection_need_no_key(keyed: GyozaServer) -> None:
    async with grpc.aio.insecure_channel(keyed.target) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert "gyoza.v1.RunService" in await list_services(ch)


async def test_reflection_can_be_turned_off(sqlite_url: str) -> None:
    gs = await launch(sqlite_url, api_keys=api_keys(), reflection=False)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_services(ch)
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    finally:
        await gs.stop(0)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_no_keys_means_open(sqlite_url: str) -> None:
    gs = await launch(sqlite_url)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            page = await runs_pb2_grpc.RunServiceStub(ch).ListRuns(runs_pb2.ListRunsRequest())
    finally:
        await gs.stop(0)
    assert list(page.data) == []


async def test_keys_never_reach_the_logs(
    keyed: GyozaServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for key in (UNKNOWN_KEY, READER_KEY, ADMIN_KEY):
        await call_with(keyed, [("x-api-key", key)])
        await call_with(keyed, [("authorization", f"Bearer {key}")])
    async with open_channel(keyed.target, api_key=READER_KEY) as ch:
        err = await outcome(CALLS["/gyoza.v1.RunService/CreateRun"], ch)
    assert isinstance(err, grpc.aio.AioRpcError)
    assert "refused /gyoza.v1.RunService/ListRuns: unknown API key" in caplog.text
    assert "refused /gyoza.v1.RunService/CreateRun: role reader" in caplog.text
    for key in (UNKNOWN_KEY, READER_KEY, ADMIN_KEY, WORKER_KEY):
        assert key not in caplog.text
        assert key[:12] not in caplog.text
        assert key not in str(err)
    assert ADMIN_KEY not in repr(api_keys()) and ADMIN_KEY not in repr(
        KeyEntry(Role.ADMIN, ADMIN_KEY)
    )


# -- the worker SDK with a key ------------------------------------------------------------


async def until_state(stub: runs_pb2_grpc.RunServiceStub, run_id: str, state: int) -> Any:
    for _ in range(600):
        run = (await stub.GetRun(runs_pb2.GetRunRequest(id=run_id))).run
        if run.state == state:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {state}: {run}")


def worker(target: str, **kw: Any) -> Worker:
    return Worker(
        target,
        "w-keyed",
        lambda inputs, ctx: {"y": inputs.get("x", 0) * 2},
        cpu=2,
        heartbeat_interval=timedelta(seconds=0.2),
        claim_wait=timedelta(seconds=5),
        **kw,
    )


async def test_the_worker_sdk_works_with_a_worker_key(keyed: GyozaServer) -> None:
    """Claims, events and reconciling (a run left ASSIGNED by an earlier process is handed
    back, which takes GetWorker and ReleaseRun) all pass with the worker role."""
    async with open_channel(keyed.target, api_key=ADMIN_KEY) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        await workers.Heartbeat(
            workers_pb2.HeartbeatRequest(
                worker_id="w-keyed", resources=workers_pb2.Resources(cpu=2)
            )
        )
        left = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))).run
        claimed = await workers.ClaimRuns(
            workers_pb2.ClaimRunsRequest(worker_id="w-keyed", max_runs=1)
        )
        assert [c.run.id for c in claimed.claims] == [left.id]
        req = runs_pb2.CreateRunRequest(image="img")
        req.inputs.update({"x": 21})
        fresh = (await runs.CreateRun(req)).run

        w = worker(keyed.target, api_key=WORKER_KEY)
        task = asyncio.create_task(w.run())
        try:
            done = await until_state(runs, fresh.id, runs_pb2.RUN_STATE_COMPLETED)
            handed_back = await until_state(runs, left.id, runs_pb2.RUN_STATE_COMPLETED)
        finally:
            w.stop()
            await asyncio.wait_for(task, 30)
        timeline = await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=left.id))
    assert dict(done.outputs) == {"y": 42}
    assert handed_back.current_attempt == 1  # released (not counted as a try), then run
    assert "Released by worker w-keyed" in [e.msg for e in timeline.events]


@pytest.mark.parametrize("key", ["", UNKNOWN_KEY, READER_KEY], ids=["none", "unknown", "reader"])
async def test_the_worker_sdk_is_refused_without_a_worker_key(keyed: GyozaServer, key: str) -> None:
    with pytest.raises(WorkerError) as caught:
        await asyncio.wait_for(worker(keyed.target, api_key=key).run(), 30)
    want = "PERMISSION_DENIED" if key == READER_KEY else "UNAUTHENTICATED"
    assert want in str(caught.value)
    if key:
        assert key not in str(caught.value)
