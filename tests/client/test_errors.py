"""Errors: a status comes back as the server's own exception class, with its reason, metadata
and field violations; the table is checked both ways over the wire, for every code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

from gyoza.v1 import access_pb2, runs_pb2, runs_pb2_grpc
from gyoza_grpc.client import (
    NO_RETRY,
    AlreadyExists,
    Constraints,
    DeadlineExceeded,
    EventType,
    FailedPrecondition,
    FieldViolation,
    GyozaError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unknown,
    status_code,
)
from gyoza_grpc.client.errors import sent_reason
from gyoza_grpc.domain.access import ApiKeys, KeyEntry, Role
from gyoza_grpc.domain.errors import ERRORS_BY_CODE
from gyoza_grpc.server.api.errors import to_status
from tests.client.conftest import Either
from tests.conftest import TEST_SERVER_OPTIONS, served


class Scripted(runs_pb2_grpc.RunServiceServicer):
    """GetRun answers the status of the GyozaError class named by the request's id (its code
    name), built by the server's own `to_status`; "SLOW" never answers in time."""

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: Any) -> Any:
        if request.id == "SLOW":
            await asyncio.sleep(30)
        if request.id == "BARE":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no details at all")
        cls = ERRORS_BY_CODE[request.id]
        err = cls(
            f"refused with {request.id}",
            reason=f"{request.id}_REASON",
            metadata={"run_id": "r-1", "why": request.id.lower()},
            violations=[FieldViolation("constraints.cpu", "must be >= 0, got -1")]
            if cls is InvalidArgument
            else [],
        )
        await context.abort_with_status(to_status(err))


@pytest.fixture
async def scripted() -> AsyncIterator[str]:
    server = grpc.aio.server(options=TEST_SERVER_OPTIONS)
    runs_pb2_grpc.add_RunServiceServicer_to_server(Scripted(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def test_every_grpc_code_but_ok_has_its_class() -> None:
    codes = {code.name for code in grpc.StatusCode if code != grpc.StatusCode.OK}
    assert set(ERRORS_BY_CODE) == codes
    for name, cls in ERRORS_BY_CODE.items():
        assert cls.code == name and issubclass(cls, GyozaError)


@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
async def test_the_table_both_ways_over_the_wire(kind: str, scripted: str, code: str) -> None:
    """Server side: class -> status (to_status); client side: status -> the same class."""
    async with Either(kind, scripted, retry=NO_RETRY, timeout=timedelta(seconds=10)) as client:
        with pytest.raises(GyozaError) as raised:
            await client.call("get_run", code)
    err = raised.value
    assert type(err) is ERRORS_BY_CODE[code]
    assert status_code(err).name == code
    assert err.message == f"refused with {code}"
    assert err.reason == f"{code}_REASON"
    assert err.metadata == {"run_id": "r-1", "why": code.lower()}
    expected = [FieldViolation("constraints.cpu", "must be >= 0, got -1")]
    assert list(err.violations) == (expected if code == "INVALID_ARGUMENT" else [])
    assert isinstance(err.__cause__, grpc.aio.AioRpcError)  # the raw error stays reachable
    assert sent_reason(err) == f"{code}_REASON"


async def test_a_status_without_details_and_a_deadline(kind: str, scripted: str) -> None:
    async with Either(kind, scripted, timeout=timedelta(milliseconds=300)) as client:
        with pytest.raises(NotFound) as bare:
            await client.call("get_run", "BARE")
        assert (bare.value.message, bare.value.reason) == ("no details at all", "NOT_FOUND")
        assert (bare.value.metadata, bare.value.violations) == ({}, ())
        assert sent_reason(bare.value) is None  # the reason above is only the class's
        with pytest.raises(DeadlineExceeded):
            await client.call("get_run", "SLOW")
        with pytest.raises(DeadlineExceeded):  # a call's own deadline wins over the client's
            await client.call("get_run", "SLOW", timeout=timedelta(milliseconds=100))


async def test_the_real_servers_refusals(client: Either) -> None:
    with pytest.raises(NotFound) as missing:
        await client.call("get_run", "no-such-run")
    assert missing.value.reason == "RUN_NOT_FOUND"
    assert missing.value.metadata == {"run_id": "no-such-run"}

    with pytest.raises(InvalidArgument) as bad:
        await client.call("create_run", "", constraints=Constraints(cpu=-1, ram_mb=-2))
    assert {v.field for v in bad.value.violations} >= {"image", "constraints.cpu"}
    assert FieldViolation("constraints.cpu", "must be >= 0, got -1") in bad.value.violations

    run = await client.call("create_run", "img", request_id="key-1")
    with pytest.raises(AlreadyExists) as reused:
        await client.call("create_run", "other-img", request_id="key-1")
    assert reused.value.reason == "REQUEST_ID_REUSED"

    await client.call("cancel_run", run.id)
    with pytest.raises(FailedPrecondition) as locked:
        await client.call("cancel_run", run.id)
    assert locked.value.reason == "RUN_LOCKED"
    await client.call("retry_run", run.id)
    with pytest.raises(FailedPrecondition) as stale:
        await client.call("add_event", run.id, EventType.STARTED, attempt=1)
    assert stale.value.reason == "STALE_ATTEMPT"

    with pytest.raises(ValueError, match=r"inputs\.x: nan is not a finite number"):
        await client.call("create_run", "img", inputs={"x": float("nan")})


async def test_keys_refused_and_a_view_with_another_key(kind: str, sqlite_url: str) -> None:
    keys = ApiKeys.of([KeyEntry(Role.READER, "reader-key-0123456789")])
    async with (
        served(sqlite_url, api_keys=keys) as gs,
        Either(kind, gs.target, api_key="") as client,
    ):
        with pytest.raises(Unauthenticated) as none:
            await client.call("list_workers")
        assert none.value.reason == "API_KEY_MISSING"
        assert none.value.metadata["method"] == "/gyoza.v1.WorkerService/ListWorkers"

        reader = _view(kind, client.client.with_api_key("reader-key-0123456789"))
        assert await reader.call("list_workers") == []
        caller = await reader.call("get_caller")
        assert caller.keys_required and caller.role == access_pb2.ROLE_READER
        assert "/gyoza.v1.RunService/GetRun" in caller.methods
        assert "/gyoza.v1.RunService/CreateRun" not in caller.methods
        with pytest.raises(PermissionDenied) as denied:
            await reader.call("create_run", "img")
        assert denied.value.reason == "ROLE_FORBIDDEN"
        with pytest.raises(Unauthenticated) as wrong:
            await _view(kind, client.client.with_api_key("nope-0123456789")).call("list_workers")
        assert wrong.value.reason == "API_KEY_INVALID"
        await reader.close()  # a view's close leaves the channel to its original
        assert await reader.call("list_workers") == []


def _view(kind: str, client: Any) -> Either:
    view = Either.__new__(Either)
    view.kind, view.client = kind, client
    return view


def test_an_error_that_is_not_a_call_is_unknown() -> None:
    from gyoza_grpc.client.errors import from_rpc_error

    err = from_rpc_error(grpc.RpcError("odd"))
    assert type(err) is Unknown and err.message == "odd"
