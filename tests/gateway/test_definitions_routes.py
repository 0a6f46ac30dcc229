"""GET /definitions/{name} and POST /definitions/{name}/runs through the gateway: a run
made from a definition inherits it, and its inputs are checked (400) with defaults filled."""

from __future__ import annotations

from google.protobuf import struct_pb2

from gyoza.v1 import definitions_pb2 as D
from gyoza.v1 import runs_pb2
from tests.gateway.conftest import Gateway


def _value(doc: object) -> struct_pb2.Value:
    v = struct_pb2.Value()
    v.number_value = float(doc)  # type: ignore[arg-type]
    return v


async def deploy(gateway: Gateway, version: str, image: str) -> None:
    d = D.Definition(
        name="double",
        version=version,
        image=image,
        description="doubles x",
        input_specs={
            "x": D.InputSpec(type=D.INPUT_TYPE_INT, required=True),
            "factor": D.InputSpec(type=D.INPUT_TYPE_FLOAT, default=_value(2)),
        },
        output_specs={"y": D.InputSpec(type=D.INPUT_TYPE_INT)},
        constraints=runs_pb2.Constraints(cpu=2),
        retry_policy=runs_pb2.RetryPolicy(max_attempts=3),
    )
    await gateway.definitions.UpsertDefinition(D.UpsertDefinitionRequest(definition=d))


async def test_get_definition_latest_and_by_version(gateway: Gateway) -> None:
    await deploy(gateway, "1.0.0", "double:1")
    await deploy(gateway, "1.10.0", "double:110")
    latest = await gateway.call("GET", "/definitions/double", 200)
    assert latest["id"] == "double"
    assert latest["version"] == "1.10.0"
    assert latest["image"] == "double:110"
    assert latest["input_specs"] == {
        "factor": {"type": "float", "required": False, "default": 2},
        "x": {"type": "int", "required": True},
    }
    assert latest["output_specs"] == {"y": {"type": "int", "required": False}}
    assert latest["constraints"]["cpu"] == 2
    assert latest["retry_policy"]["max_attempts"] == 3
    assert latest["created_at"] is not None
    old = await gateway.call("GET", "/definitions/double?version=1.0.0", 200)
    assert old["image"] == "double:1"
    await gateway.call("GET", "/definitions/double?version=9.9.9", 404)
    await gateway.call("GET", "/definitions/nothing", 404)
    body = await gateway.call("GET", "/definitions/double?version=latest", 400)
    assert body["code"] == "INVALID_ARGUMENT"


async def test_create_run_from_definition(gateway: Gateway) -> None:
    await deploy(gateway, "1.0.0", "double:1")
    await deploy(gateway, "2.0.0", "double:2")
    run = await gateway.call(
        "POST", "/definitions/double/runs", 201, json={"inputs": {"x": 21}, "priority": 7}
    )
    assert run["state"] == "PENDING"
    assert run["op_definition"] == "double"
    assert run["definition_version"] == "2.0.0"
    assert run["image"] == "double:2"
    assert run["inputs"] == {"x": 21, "factor": 2}  # the default filled in
    assert run["priority"] == 7
    assert run["constraints"]["cpu"] == 2
    assert run["retry_policy"]["max_attempts"] == 3
    pinned = await gateway.call(
        "POST", "/definitions/double/runs", 201, json={"inputs": {"x": 1}, "version": "1.0.0"}
    )
    assert (pinned["image"], pinned["priority"]) == ("double:1", 5)
    listed = await gateway.call("GET", "/runs?op_definition=double", 200)
    assert [r["id"] for r in listed["data"]] == [pinned["id"], run["id"]]


async def test_create_run_from_definition_refusals(gateway: Gateway) -> None:
    await deploy(gateway, "1.0.0", "double:1")
    # The original: a missing required input or a wrong type is a 400.
    body = await gateway.call("POST", "/definitions/double/runs", 400, json={"inputs": {}})
    assert "inputs.x" in body["detail"]
    body = await gateway.call(
        "POST", "/definitions/double/runs", 400, json={"inputs": {"x": "twenty"}}
    )
    assert "inputs.x" in [e["field"] for e in body["errors"]]
    await gateway.call("POST", "/definitions/nothing/runs", 404, json={"inputs": {"x": 1}})
    await gateway.call("POST", "/definitions/double/runs", 422, json={"inputs": [1]})
