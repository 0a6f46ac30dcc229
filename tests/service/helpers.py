"""Helpers for the service tests: every call goes through the real server and the stubs."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gyoza.v1 import runs_pb2, runs_pb2_grpc

Stub = runs_pb2_grpc.RunServiceStub
S = runs_pb2  # short alias for enum values in tables

TERMINAL = (S.RUN_STATE_COMPLETED, S.RUN_STATE_FAILED, S.RUN_STATE_CANCELLED)


def struct(doc: dict[str, Any] | None = None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if doc:
        s.update(doc)
    return s


def as_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(s)


async def create(runs: Stub, image: str = "img", **fields: Any) -> runs_pb2.Run:
    for name in ("inputs",):
        if isinstance(fields.get(name), dict):
            fields[name] = struct(fields[name])
    return (await runs.CreateRun(runs_pb2.CreateRunRequest(image=image, **fields))).run


async def get(runs: Stub, run_id: str, *, full: bool = False) -> runs_pb2.Run:
    view = S.RUN_VIEW_FULL if full else S.RUN_VIEW_BASIC
    return (await runs.GetRun(runs_pb2.GetRunRequest(id=run_id, view=view))).run


async def add(
    runs: Stub, run_id: str, type_: int, *, payload: dict[str, Any] | None = None, **fields: Any
) -> runs_pb2.AddEventResponse:
    req = runs_pb2.AddEventRequest(run_id=run_id, type=type_, payload=struct(payload), **fields)
    return await runs.AddEvent(req)


async def events(runs: Stub, run_id: str, **fields: Any) -> list[runs_pb2.Event]:
    return list((await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run_id, **fields))).events)


async def attempts(runs: Stub, run_id: str) -> list[runs_pb2.Attempt]:
    resp = await runs.ListAttempts(runs_pb2.ListAttemptsRequest(run_id=run_id))
    return list(resp.attempts)


async def start(runs: Stub, run_id: str, worker_id: str = "w1") -> runs_pb2.Run:
    """PENDING -> RUNNING through a STARTED event."""
    return (await add(runs, run_id, S.EVENT_TYPE_STARTED, payload={"worker_id": worker_id})).run


async def running(runs: Stub, **fields: Any) -> runs_pb2.Run:
    run = await create(runs, **fields)
    return await start(runs, run.id)


async def in_state(runs: Stub, state: int, **fields: Any) -> runs_pb2.Run:
    """A new run brought to `state` through the events a worker would send."""
    run = await create(runs, **fields)
    if state == S.RUN_STATE_PENDING:
        return run
    if state == S.RUN_STATE_ASSIGNED:
        return (await add(runs, run.id, S.EVENT_TYPE_ASSIGNED, payload={"worker_id": "w"})).run
    if state == S.RUN_STATE_CANCELLED:
        return (await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))).run
    run = await start(runs, run.id)
    if state == S.RUN_STATE_RUNNING:
        return run
    if state == S.RUN_STATE_COMPLETED:
        payload = {"outputs": {"result": "ok"}}
        return (await add(runs, run.id, S.EVENT_TYPE_COMPLETED, payload=payload)).run
    if state == S.RUN_STATE_FAILED:
        payload = {"error_message": "boom"}
        return (await add(runs, run.id, S.EVENT_TYPE_FAILED, payload=payload)).run
    raise AssertionError(f"no recipe for state {state}")


async def fails(
    call: Awaitable[Any], code: grpc.StatusCode, details: str | None = None
) -> grpc.aio.AioRpcError:
    """Await `call`, asserting it fails with `code` (and exactly `details`, when given)."""
    try:
        result = await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
        if details is not None:
            assert err.details() == details
        return err
    raise AssertionError(f"expected {code}, the call succeeded with {result!r}")


def violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) of every google.rpc.BadRequest field violation of `err`
    (the detail asserted present, and the google.rpc.Status code asserted to match)."""
    status = rpc_status.from_call(err)
    assert status is not None, "the error carries no google.rpc.Status details"
    assert status.code == err.code().value[0]
    out: list[tuple[str, str]] = []
    found = False
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found = True
            out.extend((v.field, v.description) for v in bad.field_violations)
    assert found, "no google.rpc.BadRequest detail"
    return out


def bad_fields(err: grpc.aio.AioRpcError) -> list[str]:
    """The field names of the google.rpc.BadRequest detail of `err` (asserted present)."""
    return [field for field, _ in violations(err)]


def error_reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no google.rpc.ErrorInfo detail")


async def invalid(call: Awaitable[Any], field: str) -> grpc.aio.AioRpcError:
    """Assert INVALID_ARGUMENT with a BadRequest violation naming `field`."""
    err = await fails(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert field in bad_fields(err), (field, bad_fields(err), err.details())
    return err


async def all_runs(runs: Stub, **filters: Any) -> list[runs_pb2.Run]:
    """Every run matching `filters`, newest first, by paging forward."""
    out: list[runs_pb2.Run] = []
    cursor = ""
    while True:
        page = await runs.ListRuns(
            runs_pb2.ListRunsRequest(limit=100, starting_after=cursor, **filters)
        )
        out.extend(page.data)
        if not page.has_more:
            return out
        cursor = page.data[-1].id
