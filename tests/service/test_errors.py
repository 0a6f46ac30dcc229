"""Errors every RPC shares: unknown and empty ids, bad Structs, unknown enum numbers, NULs.

No client input may ever yield UNKNOWN or INTERNAL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from gyoza.v1 import runs_pb2
from tests.service.helpers import (
    S,
    Stub,
    bad_fields,
    create,
    error_reason,
    fails,
    get,
    in_state,
    invalid,
    struct,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def runs(shared_runs: Stub) -> Stub:
    return shared_runs


Call = Callable[[Stub, str], Awaitable[Any]]

# Every RPC that names a run, called with `run_id`, and the field holding it.
CALLS: dict[str, tuple[Call, str]] = {
    "GetRun": (lambda r, i: r.GetRun(runs_pb2.GetRunRequest(id=i)), "id"),
    "UpdateRun": (lambda r, i: r.UpdateRun(runs_pb2.UpdateRunRequest(id=i, priority=1)), "id"),
    "CancelRun": (lambda r, i: r.CancelRun(runs_pb2.CancelRunRequest(id=i)), "id"),
    "RetryRun": (lambda r, i: r.RetryRun(runs_pb2.RetryRunRequest(id=i)), "id"),
    "AddEvent": (
        lambda r, i: r.AddEvent(runs_pb2.AddEventRequest(run_id=i, type=S.EVENT_TYPE_INFO)),
        "run_id",
    ),
    "ListEvents": (lambda r, i: r.ListEvents(runs_pb2.ListEventsRequest(run_id=i)), "run_id"),
    "ListAttempts": (
        lambda r, i: r.ListAttempts(runs_pb2.ListAttemptsRequest(run_id=i)),
        "run_id",
    ),
}


async def _first_watch_item(runs: Stub, run_id: str) -> Any:
    call = runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=run_id), timeout=5)
    try:
        async for item in call:
            return item
        return None
    finally:
        call.cancel()


@pytest.mark.parametrize("rpc", list(CALLS))
async def test_unknown_run_not_found(runs: Stub, rpc: str) -> None:
    call, _ = CALLS[rpc]
    for run_id in ("no-such-run", "3f1f6a0e-0000-4000-8000-000000000000"):
        err = await fails(
            call(runs, run_id), grpc.StatusCode.NOT_FOUND, f"run '{run_id}' not found"
        )
        assert error_reason(err) == "RUN_NOT_FOUND"


async def test_watch_unknown_run_not_found(runs: Stub) -> None:
    await fails(
        _first_watch_item(runs, "no-such-run"),
        grpc.StatusCode.NOT_FOUND,
        "run 'no-such-run' not found",
    )


@pytest.mark.parametrize("rpc", list(CALLS))
async def test_empty_id_invalid(runs: Stub, rpc: str) -> None:
    call, field = CALLS[rpc]
    await invalid(call(runs, ""), field)


async def test_watch_empty_id_invalid(runs: Stub) -> None:
    await invalid(_first_watch_item(runs, ""), "run_id")


@pytest.mark.parametrize("rpc", list(CALLS))
async def test_nul_in_id_invalid(runs: Stub, rpc: str) -> None:
    call, field = CALLS[rpc]
    await invalid(call(runs, "a\x00b"), field)


@pytest.mark.parametrize("rpc", list(CALLS))
async def test_overlong_id_invalid_not_echoed(runs: Stub, rpc: str) -> None:
    """An id is echoed into NOT_FOUND's message and details: a huge one once pushed the
    trailers past the client's 8 KiB metadata limit (RESOURCE_EXHAUSTED)."""
    call, field = CALLS[rpc]
    err = await invalid(call(runs, "x" * 5000), field)
    assert "xxxxxxxxxx" not in err.details()
    at_limit = "y" * 128
    await fails(call(runs, at_limit), grpc.StatusCode.NOT_FOUND, f"run '{at_limit}' not found")


# -- Structs: NaN, Infinity, NUL ---------------------------------------------------------

BAD_DOCS = {
    "nan": {"x": float("nan")},
    "inf": {"x": float("inf")},
    "-inf": {"nested": {"list": [1, float("-inf")]}},
    "nul-value": {"x": "a\x00b"},
    "nul-key": {"a\x00": 1},
    "nul-deep": {"l": [{"k": ["ok", "\x00"]}]},
}


def _bad(name: str) -> struct_pb2.Struct:
    return struct(BAD_DOCS[name])


@pytest.mark.parametrize("doc", list(BAD_DOCS))
async def test_bad_struct_in_create_invalid(runs: Stub, doc: str) -> None:
    await invalid(runs.CreateRun(runs_pb2.CreateRunRequest(image="i", inputs=_bad(doc))), "inputs")
    await invalid(
        runs.CreateRun(
            runs_pb2.CreateRunRequest(
                image="i", event_delivery=runs_pb2.EventDelivery(topic="t", attributes=_bad(doc))
            )
        ),
        "event_delivery.attributes",
    )


@pytest.mark.parametrize("doc", list(BAD_DOCS))
async def test_bad_struct_in_update_invalid(runs: Stub, doc: str) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    await invalid(
        runs.UpdateRun(runs_pb2.UpdateRunRequest(id=run.id, outputs=_bad(doc))), "outputs"
    )
    assert (await get(runs, run.id)) == run


@pytest.mark.parametrize("doc", list(BAD_DOCS))
@pytest.mark.parametrize(
    "type_", [S.EVENT_TYPE_INFO, S.EVENT_TYPE_COMPLETED, S.EVENT_TYPE_STARTED], ids=str
)
async def test_bad_struct_in_event_payload_invalid(runs: Stub, doc: str, type_: int) -> None:
    run = await in_state(runs, S.RUN_STATE_ASSIGNED)
    payload = _bad(doc)
    if type_ == S.EVENT_TYPE_COMPLETED:
        payload = struct()
        payload.get_or_create_struct("outputs").CopyFrom(_bad(doc))
        run = (
            await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_STARTED))
        ).run
    await invalid(
        runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=type_, payload=payload)),
        "payload",
    )
    assert (await get(runs, run.id)) == run


async def test_finite_extremes_are_fine(runs: Stub) -> None:
    doc = {"big": 1.7976931348623157e308, "tiny": 5e-324, "neg": -1e300, "u": "ünï €"}
    run = await create(runs, inputs=doc)
    assert dict(run.inputs.items()) == doc
    assert (await get(runs, run.id)).inputs == run.inputs


async def test_nested_struct_roundtrip(runs: Stub) -> None:
    doc: dict[str, Any] = {"leaf": 1}
    for i in range(20):
        doc = {f"k{i}": doc} if i % 2 else {"l": [doc, i]}
    run = await create(runs, inputs=doc)
    assert (await get(runs, run.id)).inputs == struct(doc)


# -- NUL characters in strings -----------------------------------------------------------


async def test_nul_in_strings_invalid(runs: Stub) -> None:
    await invalid(runs.CreateRun(runs_pb2.CreateRunRequest(image="a\x00b")), "image")
    await invalid(
        runs.CreateRun(runs_pb2.CreateRunRequest(image="i", request_id="r\x00")), "request_id"
    )
    await invalid(
        runs.CreateRun(
            runs_pb2.CreateRunRequest(
                image="i", event_delivery=runs_pb2.EventDelivery(topic="t\x00")
            )
        ),
        "event_delivery.topic",
    )
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    await invalid(
        runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_INFO, msg="\x00")),
        "msg",
    )
    await invalid(runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id, reason="x\x00")), "reason")
    assert (await get(runs, run.id)) == run


# -- unknown enum numbers ----------------------------------------------------------------


async def test_unknown_enum_numbers_invalid(runs: Stub) -> None:
    run = await create(runs)
    await invalid(runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=99)), "type")
    await invalid(runs.UpdateRun(runs_pb2.UpdateRunRequest(id=run.id, state=42)), "state")
    await invalid(runs.ListRuns(runs_pb2.ListRunsRequest(state=42)), "state")
    await invalid(runs.GetRun(runs_pb2.GetRunRequest(id=run.id, view=5)), "view")
    await invalid(runs.ListRuns(runs_pb2.ListRunsRequest(view=-1)), "view")
    assert (await get(runs, run.id)) == run


# -- out-of-range numbers ----------------------------------------------------------------


async def test_update_mask_garbage_paths(runs: Stub) -> None:
    run = await create(runs)
    for paths in (["id"], [""], ["outputs.x"], ["STATE"]):
        req = runs_pb2.UpdateRunRequest(
            id=run.id, priority=1, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        err = await fails(runs.UpdateRun(req), grpc.StatusCode.INVALID_ARGUMENT)
        assert bad_fields(err) == ["update_mask"]


async def test_extreme_numbers_never_internal(runs: Stub) -> None:
    run = await in_state(runs, S.RUN_STATE_RUNNING)
    pending = await create(runs)
    calls = [
        runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_PROGRESS, progress=2**31 - 1)
        ),
        runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_PROGRESS, msg="9" * 40)
        ),
        runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_INFO, attempt=-(2**31))
        ),
        runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run.id, limit=-(2**31))),
        runs.ListRuns(runs_pb2.ListRunsRequest(limit=2**31 - 1)),
        runs.CreateRun(
            runs_pb2.CreateRunRequest(
                image="i", retry_policy=runs_pb2.RetryPolicy(max_attempts=-(2**31))
            )
        ),
        runs.AddEvent(
            runs_pb2.AddEventRequest(
                run_id=pending.id, type=S.EVENT_TYPE_STARTED, payload=struct({"gpu_id": 1e300})
            )
        ),
    ]
    for call in calls:
        await fails(call, grpc.StatusCode.INVALID_ARGUMENT)
    # Very large (but legal) values are stored and returned exactly.
    big = await create(
        runs,
        priority=2**31 - 1,
        constraints=runs_pb2.Constraints(cpu=2**31 - 1, ram_mb=2**31 - 1),
        retry_policy=runs_pb2.RetryPolicy(max_attempts=2**31 - 1),
    )
    got = await get(runs, big.id)
    assert got.priority == 2**31 - 1 and got.constraints.ram_mb == 2**31 - 1
    assert got.retry_policy.max_attempts == 2**31 - 1
    events_after = await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run.id, after=2**63 - 1))
    assert list(events_after.events) == []
    events_before = await runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run.id, after=-(2**63)))
    assert len(events_before.events) == 1


async def test_most_negative_priority_never_internal(runs: Stub) -> None:
    # The spec sets no bounds on priority: whatever the server decides, it is never INTERNAL.
    try:
        run = await create(runs, priority=-(2**31))
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    else:
        assert (await get(runs, run.id)).priority == -(2**31)


# -- requests protobuf itself cannot decode ----------------------------------------------


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, by hand (the client library refuses to build
    messages deeper than its own decoder allows)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | 0x80 if n else b)
            if not n:
                return bytes(out)

    return varint((field << 3) | 2) + varint(len(payload)) + payload


def _deep_struct(depth: int) -> bytes:
    struct_ = _ld(1, _ld(1, b"leaf") + _ld(2, b"\x08\x00"))  # {"leaf": null}
    for _ in range(depth):
        struct_ = _ld(1, _ld(1, b"k") + _ld(2, _ld(5, struct_)))  # {"k": struct_}
    return struct_


async def _raw_create(channel: grpc.aio.Channel, body: bytes) -> bytes:
    call = channel.unary_unary(
        "/gyoza.v1.RunService/CreateRun",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    result: bytes = await call(body)
    return result


async def test_raw_request_encoding_is_accepted(shared_channel: grpc.aio.Channel) -> None:
    """The hand encoding is right: a shallow request decodes and creates a run."""
    body = _ld(1, b"raw-img") + _ld(3, _deep_struct(3))
    resp = runs_pb2.CreateRunResponse.FromString(await _raw_create(shared_channel, body))
    assert resp.run.image == "raw-img"
    assert resp.run.inputs == struct({"k": {"k": {"k": {"leaf": None}}}})


@pytest.mark.parametrize(
    "body",
    [
        _ld(1, b"img") + _ld(3, _deep_struct(60)),  # deeper than protobuf's decoder allows
        b"\x0a\xff\xff\xff\x0f",  # a string field longer than the message
        b"\x0a\x02\xff\xfe",  # image that is not UTF-8
    ],
    ids=["too-deep", "truncated", "bad-utf8"],
)
async def test_undecodable_request_invalid_argument(
    shared_channel: grpc.aio.Channel, body: bytes
) -> None:
    """Bytes that do not decode as the request are the client's fault: INVALID_ARGUMENT,
    never UNKNOWN (what grpc.aio answers when the request deserializer raises)."""
    await fails(_raw_create(shared_channel, body), grpc.StatusCode.INVALID_ARGUMENT)
