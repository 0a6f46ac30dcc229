"""DefinitionService through a real server on both backends: versions and the latest by
semantic-version order, immutability (also under concurrent upserts), validation of every input
type with the exact violations, defaults, inheritance into runs, topic feeds, deletion, request
idempotency, and the NOT_FOUND / INVALID_ARGUMENT answers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2

from gyoza.v1 import (
    definitions_pb2,
    definitions_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
)
from tests.service.helpers import error_reason as reason
from tests.service.helpers import fails, violations

D = definitions_pb2
Stub = definitions_pb2_grpc.DefinitionServiceStub
_UNSET = object()


@pytest.fixture
def defs(channel: grpc.aio.Channel) -> Stub:
    return definitions_pb2_grpc.DefinitionServiceStub(channel)


@pytest.fixture
def topics(channel: grpc.aio.Channel) -> topics_pb2_grpc.TopicServiceStub:
    return topics_pb2_grpc.TopicServiceStub(channel)


# -- helpers ----------------------------------------------------------------------------------


def struct(doc: dict[str, Any] | None = None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if doc:
        s.update(doc)
    return s


def as_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(s)


def spec(type_: int, *, required: bool = False, default: Any = _UNSET) -> D.InputSpec:
    out = D.InputSpec(type=type_, required=required)
    if default is not _UNSET:
        out.default.CopyFrom(json_format.ParseDict(default, struct_pb2.Value()))
    return out


def definition(name: str = "sdxl", version: str = "1.0.0", **fields: Any) -> D.Definition:
    fields.setdefault("image", f"ghcr.io/acme/{name}:{version}")
    return D.Definition(name=name, version=version, **fields)


async def upsert(stub: Stub, d: D.Definition) -> D.UpsertDefinitionResponse:
    return await stub.UpsertDefinition(D.UpsertDefinitionRequest(definition=d))


async def create_from(
    stub: Stub, name: str, inputs: dict[str, Any] | None = None, **fields: Any
) -> runs_pb2.Run:
    req = D.CreateRunFromDefinitionRequest(name=name, inputs=struct(inputs), **fields)
    return (await stub.CreateRunFromDefinition(req)).run


async def invalid(call: Awaitable[Any]) -> list[tuple[str, str]]:
    return violations(await fails(call, grpc.StatusCode.INVALID_ARGUMENT))


async def versions(stub: Stub, name: str) -> list[str]:
    resp = await stub.ListDefinitionVersions(D.ListDefinitionVersionsRequest(name=name))
    return [d.version for d in resp.definitions]


async def latest(stub: Stub, name: str) -> str:
    return (await stub.GetDefinition(D.GetDefinitionRequest(name=name))).definition.version


# -- versions ---------------------------------------------------------------------------------


async def test_versions_latest_by_semver_order(defs: Stub) -> None:
    order = ["1.9.0", "1.10.0", "1.2.0", "1.10.0-rc.1", "1.10.0-beta.11", "1.10.0-beta.2"]
    for v in order:
        resp = await upsert(defs, definition(version=v))
        assert resp.created and resp.definition.version == v
    assert await latest(defs, "sdxl") == "1.10.0"
    assert await versions(defs, "sdxl") == [
        "1.10.0",
        "1.10.0-rc.1",
        "1.10.0-beta.11",
        "1.10.0-beta.2",
        "1.9.0",
        "1.2.0",
    ]
    # A higher pre-release is the latest by semver order.
    await upsert(defs, definition(version="2.0.0-alpha"))
    assert await latest(defs, "sdxl") == "2.0.0-alpha"
    await upsert(defs, definition(version="10.0.0"))
    await upsert(defs, definition(version="9.99.99"))
    assert await latest(defs, "sdxl") == "10.0.0"
    one = await defs.GetDefinition(D.GetDefinitionRequest(name="sdxl", version="1.9.0"))
    assert one.definition.image == "ghcr.io/acme/sdxl:1.9.0"
    assert one.definition.created_at.seconds > 0


async def test_definition_round_trips_every_field(defs: Stub) -> None:
    d = definition(
        description="text to image",
        input_specs={
            "prompt": spec(D.INPUT_TYPE_STRING, required=True),
            "steps": spec(D.INPUT_TYPE_INT, default=30),
            "scale": spec(D.INPUT_TYPE_FLOAT, default=7.5),
            "hires": spec(D.INPUT_TYPE_BOOL, default=False),
            "loras": spec(D.INPUT_TYPE_LIST, default=["a", 1]),
            "extra": spec(D.INPUT_TYPE_OBJECT, default={"k": None}),
            "note": spec(D.INPUT_TYPE_STRING, default=""),
            "seed": spec(D.INPUT_TYPE_INT),
        },
        output_specs={"url": spec(D.INPUT_TYPE_STRING, required=True)},
        constraints=runs_pb2.Constraints(cpu=2, ram_mb=4096, vram_mb=0),
        retry_policy=runs_pb2.RetryPolicy(
            max_attempts=3, initial_backoff=duration_pb2.Duration(seconds=2)
        ),
        event_delivery=runs_pb2.EventDelivery(topic="images", attributes=struct({"team": "ml"})),
    )
    stored = (await upsert(defs, d)).definition
    got = (await defs.GetDefinition(D.GetDefinitionRequest(name="sdxl"))).definition
    assert got == stored
    expected = D.Definition()
    expected.CopyFrom(d)
    expected.created_at.CopyFrom(stored.created_at)
    expected.retry_policy.backoff_multiplier = 1.0  # 0 means 1: returned as 1
    assert got == expected
    assert got.constraints.HasField("vram_mb") and not got.constraints.HasField("gpu_id")
    assert got.input_specs["note"].HasField("default")
    assert not got.input_specs["seed"].HasField("default")


async def test_same_version_same_body_is_a_no_op(defs: Stub) -> None:
    d = definition(input_specs={"n": spec(D.INPUT_TYPE_INT, default=3)})
    first = await upsert(defs, d)
    await asyncio.sleep(0.01)
    again = await upsert(defs, d)
    assert first.created and not again.created
    assert again.definition == first.definition  # created_at included: the first one's
    assert await versions(defs, "sdxl") == ["1.0.0"]


async def test_versions_are_immutable(defs: Stub) -> None:
    await upsert(defs, definition(description="v1"))
    err = await fails(
        upsert(defs, definition(description="changed")),
        grpc.StatusCode.ALREADY_EXISTS,
        "definition 'sdxl' version '1.0.0' already exists with a different body: "
        "versions are immutable, add a new version",
    )
    assert reason(err) == "DEFINITION_VERSION_EXISTS"
    await fails(upsert(defs, definition(image="other")), grpc.StatusCode.ALREADY_EXISTS)
    got = (await defs.GetDefinition(D.GetDefinitionRequest(name="sdxl"))).definition
    assert (got.description, got.image) == ("v1", "ghcr.io/acme/sdxl:1.0.0")
    # A new version is how a definition changes.
    assert (await upsert(defs, definition(version="1.0.1", description="changed"))).created


async def test_concurrent_upserts(defs: Stub) -> None:
    same = definition(version="1.0.0", description="same")
    results = await asyncio.gather(*(upsert(defs, same) for _ in range(20)))
    assert sum(r.created for r in results) == 1
    assert len({r.definition.SerializeToString() for r in results}) == 1

    # Different bodies for one new version: exactly one wins, the others ALREADY_EXISTS.
    async def attempt(i: int) -> str:
        try:
            await upsert(defs, definition(version="2.0.0", description=f"body {i}"))
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
            return "lost"
        return f"won {i}"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(12)))
    winners = [o for o in outcomes if o != "lost"]
    assert len(winners) == 1
    got = (await defs.GetDefinition(D.GetDefinitionRequest(name="sdxl"))).definition
    assert got.description == f"body {winners[0].split()[1]}"

    # Distinct versions concurrently, mixed with runs being made (writers of both stores): all
    # added, every run made.
    made = await asyncio.gather(
        *(upsert(defs, definition(version=f"3.{i}.0")) for i in range(15)),
        *(create_from(defs, "sdxl") for _ in range(15)),
    )
    assert len(await versions(defs, "sdxl")) == 2 + 15
    assert await latest(defs, "sdxl") == "3.14.0"
    assert len({r.id for r in made[15:]}) == 15  # type: ignore[union-attr]


async def test_list_definitions_pages_latest_of_each(defs: Stub) -> None:
    rng = random.Random(3)
    names = [f"op-{i:02d}" for i in range(23)] + ["a_b", "a-b", "ab"]
    expected: dict[str, str] = {}
    for name in rng.sample(names, len(names)):
        vs = ["1.9.0", "1.10.0", "0.1.0"][: rng.randint(1, 3)]
        for v in rng.sample(vs, len(vs)):
            await upsert(defs, definition(name=name, version=v))
        expected[name] = max(vs, key=lambda v: tuple(int(x) for x in v.split(".")))
    # A deleted latest version falls back to the one before; a fully deleted name disappears.
    await upsert(defs, definition(name="op-05", version="5.0.0"))
    await defs.DeleteDefinition(D.DeleteDefinitionRequest(name="op-05", version="5.0.0"))
    await defs.DeleteDefinition(D.DeleteDefinitionRequest(name="op-07"))
    del expected["op-07"]

    seen: list[tuple[str, str]] = []
    cursor = ""
    pages = 0
    while True:
        page = await defs.ListDefinitions(D.ListDefinitionsRequest(limit=7, starting_after=cursor))
        pages += 1
        seen.extend((d.name, d.version) for d in page.definitions)
        if not page.has_more:
            break
        assert len(page.definitions) == 7
        cursor = page.definitions[-1].name
    assert seen == sorted(expected.items())  # byte order: "a-b" < "a_b" < "ab" < "op-00"
    assert [n for n, _ in seen[:3]] == ["a-b", "a_b", "ab"]
    assert pages == 4  # 25 definitions, 7 a page
    default_page = await defs.ListDefinitions(D.ListDefinitionsRequest())
    assert len(default_page.definitions) == 10 and default_page.has_more
    last = await defs.ListDefinitions(D.ListDefinitionsRequest(starting_after="op-21"))
    assert [d.name for d in last.definitions] == ["op-22"] and not last.has_more
    # A cursor need not exist (a name deleted meanwhile still pages on).
    after = await defs.ListDefinitions(D.ListDefinitionsRequest(limit=2, starting_after="op-07"))
    assert [d.name for d in after.definitions] == ["op-08", "op-09"]


# -- validation -------------------------------------------------------------------------------


async def test_upsert_reports_every_problem(defs: Stub) -> None:
    bad = D.Definition(
        name="My Op",
        version="1.0",
        image="",
        constraints=runs_pb2.Constraints(cpu=-1),
        input_specs={
            "n": spec(D.INPUT_TYPE_INT, default=2.5),
            "r": spec(D.INPUT_TYPE_BOOL, required=True, default=True),
        },
        output_specs={"bad name": spec(D.INPUT_TYPE_STRING)},
    )
    assert await invalid(upsert(defs, bad)) == [
        (
            "definition.name",
            "must be 1 to 128 lower-case letters, digits, '-' or '_', got 'My Op'",
        ),
        (
            "definition.version",
            "must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] "
            "(e.g. 1.0.0 or 2.1.0-rc.1), got '1.0'",
        ),
        ("definition.image", "must not be empty"),
        ("definition.constraints.cpu", "must be >= 0, got -1"),
        ("definition.input_specs.n.default", "must be an int, got 2.5 (not a whole number)"),
        ("definition.input_specs.r.default", "a required input cannot have a default"),
        (
            "definition.output_specs.bad name",
            "name must be 1 to 128 letters, digits, '-' or '_', got 'bad name'",
        ),
    ]
    types = definition(
        input_specs={"a": D.InputSpec(), "b": D.InputSpec(type=42)}  # type: ignore[arg-type]
    )
    assert await invalid(upsert(defs, types)) == [
        (
            "definition.input_specs.a.type",
            "must be INPUT_TYPE_STRING, _INT, _FLOAT, _BOOL, _LIST or _OBJECT, "
            "got INPUT_TYPE_UNSPECIFIED",
        ),
        (
            "definition.input_specs.b.type",
            "must be INPUT_TYPE_STRING, _INT, _FLOAT, _BOOL, _LIST or _OBJECT, "
            "got unknown InputType 42",
        ),
    ]
    assert await invalid(defs.UpsertDefinition(D.UpsertDefinitionRequest())) == [
        ("definition", "must be set")
    ]
    nan = definition(input_specs={"f": spec(D.INPUT_TYPE_FLOAT)})
    nan.input_specs["f"].default.number_value = float("nan")
    assert await invalid(upsert(defs, nan)) == [
        ("definition.input_specs.f.default", "numbers must be finite (no NaN or Infinity)")
    ]
    assert await invalid(upsert(defs, definition(version=""))) == [
        ("definition.version", "must not be empty")
    ]
    await fails(defs.GetDefinition(D.GetDefinitionRequest(name="sdxl")), grpc.StatusCode.NOT_FOUND)


TYPED = definition(
    name="typed",
    input_specs={
        "s": spec(D.INPUT_TYPE_STRING, required=True),
        "i": spec(D.INPUT_TYPE_INT, required=True),
        "f": spec(D.INPUT_TYPE_FLOAT, required=True),
        "b": spec(D.INPUT_TYPE_BOOL, required=True),
        "l": spec(D.INPUT_TYPE_LIST, required=True),
        "o": spec(D.INPUT_TYPE_OBJECT, required=True),
    },
)
GOOD = {"s": "x", "i": 3, "f": 1.5, "b": True, "l": [1, "a"], "o": {"k": "v"}}


@pytest.mark.parametrize(
    ("name", "value", "description"),
    [
        ("s", 1, "must be a string, got a number"),
        ("s", None, "must be a string, got null"),
        ("i", 3.5, "must be an int, got 3.5 (not a whole number)"),
        ("i", True, "must be an int, got a bool"),
        ("i", "3", "must be an int, got a string"),
        (
            "i",
            2.0**60,
            "must be an int between -2^53 and 2^53 (a Struct number is a double), "
            "got 1.152921504606847e+18",
        ),
        ("f", "1.5", "must be a float, got a string"),
        ("f", False, "must be a float, got a bool"),
        ("b", 1, "must be a bool, got a number"),
        ("b", "true", "must be a bool, got a string"),
        ("l", {"a": 1}, "must be a list, got an object"),
        ("l", "a,b", "must be a list, got a string"),
        ("o", [1], "must be an object, got a list"),
        ("o", "{}", "must be an object, got a string"),
    ],
)
async def test_each_type_rejects_wrong_values(
    defs: Stub, name: str, value: Any, description: str
) -> None:
    await upsert(defs, TYPED)
    err = await fails(
        create_from(defs, "typed", {**GOOD, name: value}),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"inputs.{name}: {description}",
    )
    assert violations(err) == [(f"inputs.{name}", description)]


async def test_each_type_accepts_its_values(defs: Stub, runs: runs_pb2_grpc.RunServiceStub) -> None:
    await upsert(defs, TYPED)
    run = await create_from(defs, "typed", {**GOOD, "i": 3.0, "f": 2})
    assert as_dict(run.inputs) == {**GOOD, "i": 3, "f": 2.0}
    big = await create_from(defs, "typed", {**GOOD, "i": -(2.0**53), "l": [], "o": {}, "s": ""})
    assert as_dict(big.inputs)["i"] == -(2**53)
    stored = await runs.GetRun(runs_pb2.GetRunRequest(id=run.id))
    assert stored.run.inputs == run.inputs


async def test_every_violation_listed_one_per_input(defs: Stub) -> None:
    await upsert(defs, TYPED)
    err = await fails(
        create_from(defs, "typed", {"i": 3.5, "f": "x", "b": True, "zz": 1, "aa": None}),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    unknown = "unknown input: the definition takes b, f, i, l, o, s"
    expected = [
        ("inputs.aa", unknown),
        ("inputs.f", "must be a float, got a string"),
        ("inputs.i", "must be an int, got 3.5 (not a whole number)"),
        ("inputs.l", "required input is missing"),
        ("inputs.o", "required input is missing"),
        ("inputs.s", "required input is missing"),
        ("inputs.zz", unknown),
    ]
    assert violations(err) == expected
    assert err.details() == "; ".join(f"{f}: {d}" for f, d in expected)
    assert reason(err) == "INVALID_ARGUMENT"


async def test_defaults_filled_in(defs: Stub) -> None:
    await upsert(
        defs,
        definition(
            input_specs={
                "prompt": spec(D.INPUT_TYPE_STRING, required=True),
                "steps": spec(D.INPUT_TYPE_INT, default=30.0),
                "scale": spec(D.INPUT_TYPE_FLOAT, default=7),
                "hires": spec(D.INPUT_TYPE_BOOL, default=False),
                "loras": spec(D.INPUT_TYPE_LIST, default=["x"]),
                "extra": spec(D.INPUT_TYPE_OBJECT, default={"a": {"b": None}}),
                "seed": spec(D.INPUT_TYPE_INT),
            }
        ),
    )
    run = await create_from(defs, "sdxl", {"prompt": "a cat", "steps": 5})
    assert as_dict(run.inputs) == {
        "prompt": "a cat",
        "steps": 5,
        "scale": 7.0,
        "hires": False,
        "loras": ["x"],
        "extra": {"a": {"b": None}},
    }
    stored = (await defs.GetDefinition(D.GetDefinitionRequest(name="sdxl"))).definition
    assert stored.input_specs["steps"].default.number_value == 30
    err = await fails(create_from(defs, "sdxl", {}), grpc.StatusCode.INVALID_ARGUMENT)
    assert violations(err) == [("inputs.prompt", "required input is missing")]


# -- runs made from a definition --------------------------------------------------------------


async def test_run_inherits_the_definition(defs: Stub, runs: runs_pb2_grpc.RunServiceStub) -> None:
    await upsert(
        defs,
        definition(
            version="1.2.0",
            image="ghcr.io/acme/sdxl:1.2",
            constraints=runs_pb2.Constraints(cpu=4, ram_mb=8192, vram_mb=16000, gpu_id=1),
            retry_policy=runs_pb2.RetryPolicy(max_attempts=3),
            event_delivery=runs_pb2.EventDelivery(topic="images", attributes=struct({"t": "ml"})),
        ),
    )
    await upsert(defs, definition(version="1.1.0", image="ghcr.io/acme/sdxl:1.1"))
    run = await create_from(defs, "sdxl")
    assert run.state == runs_pb2.RUN_STATE_PENDING and run.current_attempt == 1
    assert (run.op_definition, run.definition_version) == ("sdxl", "1.2.0")
    assert run.image == "ghcr.io/acme/sdxl:1.2"
    assert run.constraints == runs_pb2.Constraints(cpu=4, ram_mb=8192, vram_mb=16000, gpu_id=1)
    assert run.retry_policy.max_attempts == 3
    assert run.event_delivery.topic == "images"
    assert as_dict(run.event_delivery.attributes) == {"t": "ml"}
    assert run.priority == 5
    # The request's priority overrides the default; an explicit version is used as asked.
    older = await create_from(defs, "sdxl", version="1.1.0", priority=9)
    assert (older.definition_version, older.image, older.priority) == (
        "1.1.0",
        "ghcr.io/acme/sdxl:1.1",
        9,
    )
    assert older.retry_policy.max_attempts == 1 and not older.event_delivery.topic
    zero = await create_from(defs, "sdxl", priority=0)
    assert zero.priority == 0
    got = (await runs.GetRun(runs_pb2.GetRunRequest(id=run.id))).run
    assert got == run

    # ListRuns by op_definition finds exactly the runs made from it.
    await runs.CreateRun(runs_pb2.CreateRunRequest(image="ghcr.io/acme/sdxl:1.2"))
    listed = await runs.ListRuns(runs_pb2.ListRunsRequest(op_definition="sdxl"))
    assert [r.id for r in listed.data] == [zero.id, older.id, run.id]
    assert {r.definition_version for r in listed.data} == {"1.2.0", "1.1.0"}
    assert not (await runs.ListRuns(runs_pb2.ListRunsRequest(op_definition="other"))).data

    # The retry policy is inherited in behaviour too: a failure is retried automatically.
    await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=runs_pb2.EVENT_TYPE_STARTED))
    failed = await runs.AddEvent(
        runs_pb2.AddEventRequest(run_id=run.id, type=runs_pb2.EVENT_TYPE_FAILED)
    )
    assert failed.run.state == runs_pb2.RUN_STATE_PENDING and failed.run.current_attempt == 2


async def test_topic_feed_inherited_from_the_definition(
    defs: Stub, runs: runs_pb2_grpc.RunServiceStub, topics: topics_pb2_grpc.TopicServiceStub
) -> None:
    await upsert(
        defs,
        definition(
            event_delivery=runs_pb2.EventDelivery(
                topic="renders", attributes=struct({"team": "ml", "tier": 2})
            )
        ),
    )
    run = await create_from(defs, "sdxl")
    for type_ in (runs_pb2.EVENT_TYPE_STARTED, runs_pb2.EVENT_TYPE_COMPLETED):
        await runs.AddEvent(runs_pb2.AddEventRequest(run_id=run.id, type=type_))
    feed = await topics.ListTopicEvents(topics_pb2.ListTopicEventsRequest(topic="renders"))
    assert [(te.cursor, te.run_id, te.event.seq) for te in feed.events] == [
        (1, run.id, 0),
        (2, run.id, 1),
    ]
    assert [te.event.type for te in feed.events] == [
        runs_pb2.EVENT_TYPE_STARTED,
        runs_pb2.EVENT_TYPE_COMPLETED,
    ]
    for te in feed.events:
        assert as_dict(te.attributes) == {"team": "ml", "tier": 2}
    by_topic = await runs.ListRuns(runs_pb2.ListRunsRequest(topic="renders"))
    assert [r.id for r in by_topic.data] == [run.id]


async def test_request_id_idempotency(defs: Stub) -> None:
    await upsert(defs, definition(input_specs={"n": spec(D.INPUT_TYPE_INT, default=1)}))
    first = await create_from(defs, "sdxl", {"n": 2}, request_id="req-1")
    again = await create_from(defs, "sdxl", {"n": 2}, request_id="req-1")
    assert again == first
    # Still the first run after a newer version became the latest (the request is the same).
    await upsert(defs, definition(version="1.1.0", input_specs={"n": spec(D.INPUT_TYPE_INT)}))
    assert await create_from(defs, "sdxl", {"n": 2}, request_id="req-1") == first
    err = await fails(
        create_from(defs, "sdxl", {"n": 3}, request_id="req-1"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert reason(err) == "REQUEST_ID_REUSED"
    await fails(
        create_from(defs, "sdxl", {"n": 2}, request_id="req-1", version="1.1.0"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    # Concurrent duplicates make one run.
    made = await asyncio.gather(
        *(create_from(defs, "sdxl", {"n": 5}, request_id="req-2") for _ in range(10))
    )
    assert len({r.id for r in made}) == 1
    assert made[0].definition_version == "1.1.0" and made[0].request_id == "req-2"


# -- deletion ---------------------------------------------------------------------------------


async def test_delete_hides_from_new_runs_existing_runs_keep_working(
    defs: Stub, runs: runs_pb2_grpc.RunServiceStub
) -> None:
    await upsert(defs, definition(version="1.0.0"))
    await upsert(defs, definition(version="1.1.0"))
    made = await create_from(defs, "sdxl")
    assert made.definition_version == "1.1.0"

    deleted = await defs.DeleteDefinition(D.DeleteDefinitionRequest(name="sdxl", version="1.1.0"))
    assert list(deleted.versions) == ["1.1.0"]
    assert await latest(defs, "sdxl") == "1.0.0"
    assert (await create_from(defs, "sdxl")).definition_version == "1.0.0"
    await fails(
        create_from(defs, "sdxl", version="1.1.0"),
        grpc.StatusCode.NOT_FOUND,
        "definition 'sdxl' version '1.1.0' not found",
    )
    await fails(
        defs.DeleteDefinition(D.DeleteDefinitionRequest(name="sdxl", version="1.1.0")),
        grpc.StatusCode.NOT_FOUND,
        "definition 'sdxl' version '1.1.0' not found",
    )

    everything = await defs.DeleteDefinition(D.DeleteDefinitionRequest(name="sdxl"))
    assert list(everything.versions) == ["1.0.0"]
    for call in (
        create_from(defs, "sdxl"),
        defs.GetDefinition(D.GetDefinitionRequest(name="sdxl")),
        defs.ListDefinitionVersions(D.ListDefinitionVersionsRequest(name="sdxl")),
        defs.DeleteDefinition(D.DeleteDefinitionRequest(name="sdxl")),
    ):
        err = await fails(call, grpc.StatusCode.NOT_FOUND, "definition 'sdxl' not found")
        assert reason(err) == "DEFINITION_NOT_FOUND"
    assert not (await defs.ListDefinitions(D.ListDefinitionsRequest())).definitions

    # The run made before keeps working: read, driven to COMPLETED, listed by op_definition.
    for type_ in (runs_pb2.EVENT_TYPE_STARTED, runs_pb2.EVENT_TYPE_COMPLETED):
        resp = await runs.AddEvent(runs_pb2.AddEventRequest(run_id=made.id, type=type_))
    assert resp.run.state == runs_pb2.RUN_STATE_COMPLETED
    got = (await runs.GetRun(runs_pb2.GetRunRequest(id=made.id))).run
    assert (got.op_definition, got.definition_version, got.image) == (
        "sdxl",
        "1.1.0",
        "ghcr.io/acme/sdxl:1.1.0",
    )
    retried = await runs.RetryRun(runs_pb2.RetryRunRequest(id=made.id))
    assert retried.run.state == runs_pb2.RUN_STATE_PENDING
    listed = await runs.ListRuns(runs_pb2.ListRunsRequest(op_definition="sdxl"))
    assert made.id in [r.id for r in listed.data]

    # Versions stay immutable after deletion: the same body restores, another is refused.
    await fails(
        upsert(defs, definition(version="1.1.0", image="new")), grpc.StatusCode.ALREADY_EXISTS
    )
    restored = await upsert(defs, definition(version="1.1.0"))
    assert restored.created and await versions(defs, "sdxl") == ["1.1.0"]
    assert (await create_from(defs, "sdxl")).definition_version == "1.1.0"


# -- NOT_FOUND and INVALID_ARGUMENT -----------------------------------------------------------


async def test_not_found_and_invalid_argument(defs: Stub) -> None:
    nf = grpc.StatusCode.NOT_FOUND
    await fails(
        defs.GetDefinition(D.GetDefinitionRequest(name="nope")), nf, "definition 'nope' not found"
    )
    await fails(
        defs.ListDefinitionVersions(D.ListDefinitionVersionsRequest(name="nope")),
        nf,
        "definition 'nope' not found",
    )
    await fails(create_from(defs, "nope"), nf, "definition 'nope' not found")
    await upsert(defs, definition())
    await fails(
        defs.GetDefinition(D.GetDefinitionRequest(name="sdxl", version="2.0.0")),
        nf,
        "definition 'sdxl' version '2.0.0' not found",
    )
    await fails(
        create_from(defs, "sdxl", version="1.0.0+build"),
        nf,
        "definition 'sdxl' version '1.0.0+build' not found",
    )

    bad_name = "must be 1 to 128 lower-case letters, digits, '-' or '_', got 'SDXL'"
    bad_version = (
        "must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] "
        "(e.g. 1.0.0 or 2.1.0-rc.1), got 'latest'"
    )
    assert await invalid(defs.GetDefinition(D.GetDefinitionRequest(name="SDXL"))) == [
        ("name", bad_name)
    ]
    assert await invalid(defs.GetDefinition(D.GetDefinitionRequest(name=""))) == [
        ("name", "must not be empty")
    ]
    assert await invalid(
        defs.GetDefinition(D.GetDefinitionRequest(name="sdxl", version="latest"))
    ) == [("version", bad_version)]
    assert await invalid(create_from(defs, "SDXL")) == [("name", bad_name)]
    assert await invalid(create_from(defs, "sdxl", version="latest")) == [("version", bad_version)]
    assert await invalid(create_from(defs, "sdxl", request_id="r" * 257)) == [
        ("request_id", "must be at most 256 characters")
    ]
    nan = D.CreateRunFromDefinitionRequest(name="sdxl")
    nan.inputs.fields["x"].number_value = float("inf")
    assert await invalid(defs.CreateRunFromDefinition(nan)) == [
        ("inputs", "numbers must be finite (no NaN or Infinity)")
    ]
    assert await invalid(
        defs.DeleteDefinition(D.DeleteDefinitionRequest(name="sdxl", version="1"))
    ) == [("version", bad_version.replace("'latest'", "'1'"))]
    assert await invalid(defs.ListDefinitionVersions(D.ListDefinitionVersionsRequest())) == [
        ("name", "must not be empty")
    ]
    assert await invalid(defs.ListDefinitions(D.ListDefinitionsRequest(limit=101))) == [
        ("limit", "must be between 1 and 100 (0 means 10)")
    ]
    assert await invalid(defs.ListDefinitions(D.ListDefinitionsRequest(limit=-1))) == [
        ("limit", "must be between 1 and 100 (0 means 10)")
    ]
    assert await invalid(
        defs.ListDefinitions(D.ListDefinitionsRequest(starting_after="Bad Name"))
    ) == [
        (
            "starting_after",
            "a definition name must be 1 to 128 lower-case letters, digits, '-' or '_', "
            "got 'Bad Name'",
        )
    ]
    assert await invalid(upsert(defs, definition(name="a\x00b", image="img"))) == [
        ("definition.name", "must not contain NUL characters")
    ]
