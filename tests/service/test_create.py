"""CreateRun: defaults, validation, request_id idempotency; GetRun and its views."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from gyoza.v1 import runs_pb2
from tests.service.helpers import (
    S,
    Stub,
    add,
    all_runs,
    as_dict,
    bad_fields,
    create,
    error_reason,
    fails,
    get,
    invalid,
    struct,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def runs(shared_runs: Stub) -> Stub:
    """One server per backend for the module: each test counts runs before and after."""
    return shared_runs


async def _count(runs: Stub) -> int:
    return len(await all_runs(runs))


def _rid(name: str) -> str:
    """A request_id no other test uses (the database is shared by the module)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_new_run_defaults(runs: Stub) -> None:
    run = await create(runs, "repo/op:1")
    assert run.id
    assert run.image == "repo/op:1"
    assert run.state == S.RUN_STATE_PENDING
    assert run.current_attempt == 1
    assert run.progress == 0
    assert run.priority == 5
    assert run.retry_policy.max_attempts == 1
    assert run.op_definition == ""
    assert run.request_id == ""
    assert run.last_seq == -1
    assert as_dict(run.outputs) == {}
    assert run.execution_summary == runs_pb2.ExecutionSummary()
    assert run.created_at.seconds > 0
    assert run.created_at == run.updated_at
    assert list(run.events) == []
    for name in ("cpu", "ram_mb", "vram_mb", "gpu_id"):
        assert not run.constraints.HasField(name)


async def test_every_field_is_kept(runs: Stub) -> None:
    req = runs_pb2.CreateRunRequest(
        image="img:2",
        priority=9,
        inputs=struct({"n": 3, "name": "x", "nested": {"list": [1, "a", None, True]}}),
        constraints=runs_pb2.Constraints(cpu=2, ram_mb=4096, vram_mb=0, gpu_id=1),
        retry_policy=runs_pb2.RetryPolicy(max_attempts=3),
        event_delivery=runs_pb2.EventDelivery(topic="t1", attributes=struct({"k": "v"})),
    )
    run = (await runs.CreateRun(req)).run
    assert run.priority == 9
    assert as_dict(run.inputs) == {"n": 3, "name": "x", "nested": {"list": [1, "a", None, True]}}
    assert run.constraints == runs_pb2.Constraints(cpu=2, ram_mb=4096, vram_mb=0, gpu_id=1)
    assert run.constraints.HasField("vram_mb")
    assert run.retry_policy.max_attempts == 3
    assert run.event_delivery.topic == "t1"
    assert as_dict(run.event_delivery.attributes) == {"k": "v"}
    assert await get(runs, run.id) == run


async def test_explicit_priority_zero_is_kept(runs: Stub) -> None:
    run = await create(runs, priority=0)
    assert run.priority == 0
    assert (await get(runs, run.id)).priority == 0


async def test_max_attempts_zero_means_one(runs: Stub) -> None:
    run = await create(runs, retry_policy=runs_pb2.RetryPolicy(max_attempts=0))
    assert run.retry_policy.max_attempts == 1


@pytest.mark.parametrize("image", ["", "   "])
async def test_empty_image_is_invalid(runs: Stub, image: str) -> None:
    before = await _count(runs)
    err = await invalid(runs.CreateRun(runs_pb2.CreateRunRequest(image=image)), "image")
    assert bad_fields(err) == ["image"]
    assert "image" in err.details()
    assert await _count(runs) == before


@pytest.mark.parametrize("name", ["cpu", "ram_mb", "vram_mb", "gpu_id"])
async def test_negative_constraint_is_invalid(runs: Stub, name: str) -> None:
    before = await _count(runs)
    req = runs_pb2.CreateRunRequest(image="img", constraints=runs_pb2.Constraints(**{name: -1}))
    await invalid(runs.CreateRun(req), f"constraints.{name}")
    assert await _count(runs) == before


async def test_negative_max_attempts_is_invalid(runs: Stub) -> None:
    req = runs_pb2.CreateRunRequest(image="img", retry_policy=runs_pb2.RetryPolicy(max_attempts=-2))
    await invalid(runs.CreateRun(req), "retry_policy.max_attempts")


async def test_every_violation_is_reported_at_once(runs: Stub) -> None:
    req = runs_pb2.CreateRunRequest(image="", constraints=runs_pb2.Constraints(cpu=-1, ram_mb=-5))
    err = await fails(runs.CreateRun(req), grpc.StatusCode.INVALID_ARGUMENT)
    assert sorted(bad_fields(err)) == ["constraints.cpu", "constraints.ram_mb", "image"]


# -- request_id --------------------------------------------------------------------------


def _idempotent(request_id: str, **overrides: object) -> runs_pb2.CreateRunRequest:
    fields: dict[str, object] = {
        "image": "img",
        "priority": 3,
        "inputs": struct({"a": 1}),
        "request_id": request_id,
    }
    fields.update(overrides)
    return runs_pb2.CreateRunRequest(**fields)  # type: ignore[arg-type]


async def test_same_request_id_same_body_returns_first_run(runs: Stub) -> None:
    rid = _rid("same")
    before = await _count(runs)
    first = (await runs.CreateRun(_idempotent(rid))).run
    assert first.request_id == rid
    again = (await runs.CreateRun(_idempotent(rid))).run
    assert again == first
    assert await _count(runs) == before + 1
    # Unset priority and priority 5 are the same body.
    rid = _rid("default")
    a = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="i", request_id=rid))).run
    b = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="i", priority=5, request_id=rid))).run
    assert a.id == b.id


async def test_request_id_repeat_after_the_run_moved_returns_it_as_it_is(runs: Stub) -> None:
    rid = _rid("moved")
    first = (await runs.CreateRun(_idempotent(rid))).run
    await add(runs, first.id, S.EVENT_TYPE_ASSIGNED, payload={"worker_id": "w"})
    before = await _count(runs)
    again = (await runs.CreateRun(_idempotent(rid))).run
    assert again.id == first.id
    assert again.state == S.RUN_STATE_ASSIGNED
    assert await _count(runs) == before


@pytest.mark.parametrize(
    "overrides",
    [
        {"image": "other"},
        {"priority": 4},
        {"inputs": struct({"a": 2})},
        {"retry_policy": runs_pb2.RetryPolicy(max_attempts=2)},
        {"constraints": runs_pb2.Constraints(cpu=1)},
        {"event_delivery": runs_pb2.EventDelivery(topic="t")},
    ],
    ids=["image", "priority", "inputs", "retry_policy", "constraints", "event_delivery"],
)
async def test_same_request_id_different_body_already_exists(
    runs: Stub, overrides: dict[str, object]
) -> None:
    rid = _rid("diff")
    first = (await runs.CreateRun(_idempotent(rid))).run
    before = await _count(runs)
    err = await fails(runs.CreateRun(_idempotent(rid, **overrides)), grpc.StatusCode.ALREADY_EXISTS)
    assert rid in err.details() and first.id in err.details()
    assert error_reason(err) == "REQUEST_ID_REUSED"
    assert await _count(runs) == before
    # The first body still gets the first run.
    assert (await runs.CreateRun(_idempotent(rid))).run.id == first.id


async def test_different_request_ids_make_different_runs(runs: Stub) -> None:
    before = await _count(runs)
    a = (await runs.CreateRun(_idempotent(_rid("a")))).run
    b = (await runs.CreateRun(_idempotent(_rid("b")))).run
    assert a.id != b.id
    assert await _count(runs) == before + 2


async def test_without_request_id_every_create_is_new(runs: Stub) -> None:
    before = await _count(runs)
    a = await create(runs)
    b = await create(runs)
    assert a.id != b.id
    assert await _count(runs) == before + 2


async def test_concurrent_creates_with_one_request_id_make_one_run(runs: Stub) -> None:
    rid = _rid("race")
    before = await _count(runs)
    results = await asyncio.gather(*(runs.CreateRun(_idempotent(rid)) for _ in range(10)))
    ids = {r.run.id for r in results}
    assert len(ids) == 1
    assert await _count(runs) == before + 1
    assert [r.id for r in await all_runs(runs, image="img") if r.request_id == rid] == list(ids)


async def test_concurrent_creates_with_one_request_id_and_different_bodies(runs: Stub) -> None:
    rid = _rid("mixed")
    before = await _count(runs)
    results = await asyncio.gather(
        *(runs.CreateRun(_idempotent(rid, priority=i)) for i in range(10)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, runs_pb2.CreateRunResponse)]
    errors = [r for r in results if not isinstance(r, runs_pb2.CreateRunResponse)]
    assert len(ok) == 1
    assert all(
        isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.ALREADY_EXISTS
        for e in errors
    ), errors
    assert await _count(runs) == before + 1


# -- GetRun ------------------------------------------------------------------------------


async def test_get_unknown_run_not_found(runs: Stub) -> None:
    err = await fails(
        runs.GetRun(runs_pb2.GetRunRequest(id="no-such-run")),
        grpc.StatusCode.NOT_FOUND,
        "run 'no-such-run' not found",
    )
    assert error_reason(err) == "RUN_NOT_FOUND"


async def test_get_empty_id_invalid(runs: Stub) -> None:
    await invalid(runs.GetRun(runs_pb2.GetRunRequest(id="")), "id")


async def test_full_view_returns_current_attempt_events_basic_none(runs: Stub) -> None:
    run = await create(runs)
    await add(runs, run.id, S.EVENT_TYPE_ASSIGNED, payload={"worker_id": "w"})
    await add(runs, run.id, S.EVENT_TYPE_INFO, msg="hello")
    for view in (S.RUN_VIEW_UNSPECIFIED, S.RUN_VIEW_BASIC):
        got = (await runs.GetRun(runs_pb2.GetRunRequest(id=run.id, view=view))).run
        assert list(got.events) == []
    full = await get(runs, run.id, full=True)
    assert [(e.seq, e.type) for e in full.events] == [
        (0, S.EVENT_TYPE_ASSIGNED),
        (1, S.EVENT_TYPE_INFO),
    ]
    assert full.events[1].msg == "hello"
    assert all(e.run_id == run.id for e in full.events)
    assert full.last_seq == 1

    # After a retry, FULL shows only the new attempt's events.
    await runs.CancelRun(runs_pb2.CancelRunRequest(id=run.id))
    await runs.RetryRun(runs_pb2.RetryRunRequest(id=run.id))
    full = await get(runs, run.id, full=True)
    assert full.current_attempt == 2
    assert [(e.seq, e.type, e.attempt) for e in full.events] == [(3, S.EVENT_TYPE_RETRIED, 2)]


async def test_get_unknown_view_invalid(runs: Stub) -> None:
    run = await create(runs)
    await invalid(runs.GetRun(runs_pb2.GetRunRequest(id=run.id, view=7)), "view")
