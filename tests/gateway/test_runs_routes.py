"""The original router's documented behaviour, replayed through the gateway against a real
server: create (201), get, patch, retry, cancel, events, attempts, and its 400/404/422s."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.gateway.conftest import Gateway

UNKNOWN = "00000000-0000-0000-0000-000000000000"
JSON = {"Content-Type": "application/json"}


async def test_create_returns_201_and_the_originals_shape(gateway: Gateway) -> None:
    run = await gateway.create(
        image="geoiahub/my_product:latest",
        priority=4,
        inputs={"param": "value", "n": 3, "ratio": 0.5, "nested": {"k": [1, 2]}},
        constraints={"ram_mb": 4096},
        retry_policy={"max_attempts": 3},
        event_delivery={"topic": "jobs", "attributes": {"team": "geo"}},
    )
    assert run["state"] == "PENDING"
    assert run["priority"] == 4
    assert run["image"] == "geoiahub/my_product:latest"
    # Whole numbers come back as integers, not the doubles a Struct carries.
    assert run["inputs"] == {"param": "value", "n": 3, "ratio": 0.5, "nested": {"k": [1, 2]}}
    assert run["constraints"] == {"cpu": None, "ram_mb": 4096, "vram_mb": None, "gpu_id": None}
    assert run["retry_policy"]["max_attempts"] == 3
    assert run["event_delivery"] == {"topic": "jobs", "attributes": {"team": "geo"}}
    assert run["op_definition"] is None  # an ad-hoc run
    assert run["current_attempt"] == 1
    assert run["progress"] == 0
    assert run["outputs"] == {}
    assert run["events"] == []
    assert datetime.fromisoformat(run["created_at"]) == datetime.fromisoformat(run["updated_at"])
    # What was created is what GET returns.
    got = await gateway.call("GET", f"/runs/{run['id']}", 200)
    assert got == run


async def test_create_defaults(gateway: Gateway) -> None:
    run = await gateway.create(image="img")
    assert run["priority"] == 5
    assert run["inputs"] == {}
    assert run["event_delivery"] is None
    assert run["retry_policy"]["max_attempts"] == 1


async def test_create_refusals(gateway: Gateway) -> None:
    # What the server refuses is a 400 naming the field ...
    body = await gateway.call("POST", "/runs", 400, json={"image": "  "})
    assert body["code"] == "INVALID_ARGUMENT"
    assert "image" in body["detail"]
    assert [e["field"] for e in body["errors"]] == ["image"]
    # ... and what the schema declares out of bounds is FastAPI's 422, as a model with those
    # bounds would have answered.
    body = await gateway.call("POST", "/runs", 422, json={"image": "i", "constraints": {"cpu": -1}})
    assert body["detail"][0]["loc"] == ["body", "constraints", "cpu"]
    assert body["detail"][0]["ctx"] == {"ge": 0}
    # ... a body of the wrong JSON types is FastAPI's 422, listing every bad field.
    body = await gateway.call(
        "POST", "/runs", 422, json={"image": 5, "priority": "high", "constraints": {"cpu": "x"}}
    )
    assert [e["loc"] for e in body["detail"]] == [
        ["body", "image"],
        ["body", "priority"],
        ["body", "constraints", "cpu"],
    ]
    body = await gateway.call(
        "POST", "/runs", 422, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert body["detail"][0]["type"] == "json_invalid"
    await gateway.call("POST", "/runs", 422, json=["image"])
    # A number no double can hold cannot travel in a Struct.
    huge = b'{"image": "i", "inputs": {"n": 1' + b"0" * 400 + b"}}"
    body = await gateway.call("POST", "/runs", 422, data=huge, headers=JSON)
    assert body["detail"][0]["loc"] == ["body", "inputs"]


async def test_request_id_is_idempotent_and_409_on_another_body(gateway: Gateway) -> None:
    first = await gateway.create(image="img", request_id="req-1")
    again = await gateway.create(image="img", request_id="req-1")
    assert again["id"] == first["id"]
    body = await gateway.call("POST", "/runs", 409, json={"image": "other", "request_id": "req-1"})
    assert body["code"] == "ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("POST", "/retry"),
        ("POST", "/cancel"),
        ("GET", "/events"),
        ("POST", "/events"),
        ("GET", "/attempts"),
        ("GET", "/events/stream"),
    ],
)
async def test_unknown_run_is_404(gateway: Gateway, method: str, suffix: str) -> None:
    body = {"type": "INFO", "msg": "x"} if suffix == "/events" else {"priority": 1}
    kwargs = {"json": body} if method != "GET" else {}
    resp = await gateway.call(method, f"/runs/{UNKNOWN}{suffix}", 404, **kwargs)
    assert UNKNOWN in resp["detail"]
    assert resp["code"] == "NOT_FOUND"


async def test_a_worker_timeline_through_events(gateway: Gateway) -> None:
    run = await gateway.create(retry_policy={"max_attempts": 1})
    rid = run["id"]
    started = await gateway.event(rid, "STARTED", msg="go", payload={"worker_id": "w1"})
    assert started["state"] == "RUNNING"
    assert started["execution_summary"]["worker_id"] == "w1"
    progressed = await gateway.event(rid, "PROGRESS", msg=40)  # msg: an int, as the original
    assert progressed["progress"] == 40
    await gateway.event(rid, "INFO", msg="half way")
    done = await gateway.event(rid, "COMPLETED", payload={"outputs": {"result": 42}})
    assert done["state"] == "COMPLETED"
    assert done["outputs"] == {"result": 42}
    assert done["progress"] == 100

    events = (await gateway.call("GET", f"/runs/{rid}/events", 200))["events"]
    assert [(e["id"], e["type"]) for e in events] == [
        (0, "STARTED"),
        (1, "PROGRESS"),
        (2, "INFO"),
        (3, "COMPLETED"),
    ]
    assert events[1]["msg"] == 40
    assert events[2]["msg"] == "half way"
    assert events[0]["payload"] == {"worker_id": "w1"}
    # The original's poll: every event shows the run's current state.
    assert [e["state"] for e in events] == ["COMPLETED"] * 4
    assert all(datetime.fromisoformat(e["t"]).tzinfo is not None for e in events)
    # after=N: only the events after that id.
    later = (await gateway.call("GET", f"/runs/{rid}/events?after=1", 200))["events"]
    assert [e["id"] for e in later] == [2, 3]
    # The run-wide timeline: each event with the run's state right after it.
    timeline = await gateway.call("GET", f"/runs/{rid}/events?scope=run", 200)
    states = [e["state"] for e in timeline["events"]]
    assert states == ["RUNNING", "RUNNING", "RUNNING", "COMPLETED"]
    assert timeline["has_more"] is False
    # GET /runs/{id} and the event's own answer show the same events.
    got = await gateway.call("GET", f"/runs/{rid}", 200)
    assert got["events"] == timeline["events"] == done["events"]
    # A locked run refuses events with the original's 400.
    body = await gateway.event(rid, "INFO", 400, msg="late")
    assert body["reason"] == "RUN_LOCKED"


async def test_event_refusals(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    body = await gateway.event(rid, "EXPLODED", 400)
    assert "Invalid event type 'EXPLODED'" in body["detail"]
    body = await gateway.event(rid, "PROGRESS", 400, msg=140)
    assert "between 0 and 100" in body["detail"]
    await gateway.event(rid, "COMPLETED", 400)  # PENDING -> COMPLETED is no transition
    body = await gateway.call("POST", f"/runs/{rid}/events", 422, json={"msg": "no type"})
    assert body["detail"][0]["loc"] == ["body", "type"]
    await gateway.call("GET", f"/runs/{rid}/events?after=two", 422)


async def test_failed_with_attempts_left_is_retried_automatically(gateway: Gateway) -> None:
    rid = (await gateway.create(retry_policy={"max_attempts": 2}))["id"]
    await gateway.event(rid, "STARTED", payload={"worker_id": "w1"})
    run = await gateway.event(rid, "FAILED", payload={"error_message": "boom"})
    assert run["state"] == "PENDING"
    assert run["current_attempt"] == 2
    attempts = await gateway.call("GET", f"/runs/{rid}/attempts", 200)
    assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "FAILED"), (2, "PENDING")]
    first = attempts[0]
    assert first["op_run_id"] == rid
    assert first["execution_summary"]["error_message"] == "boom"
    assert first["started_at"] is not None and first["finished_at"] is not None
    assert attempts[1]["started_at"] is None


async def test_cancel_then_retry(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    body = await gateway.call("POST", f"/runs/{rid}/retry", 400)  # only a terminal run
    assert body["code"] == "FAILED_PRECONDITION"
    cancelled = await gateway.call("POST", f"/runs/{rid}/cancel", 200)
    assert cancelled["state"] == "CANCELLED"
    # The original: "400 if run is already in a terminal state".
    body = await gateway.call("POST", f"/runs/{rid}/cancel", 400)
    assert "terminal state CANCELLED" in body["detail"]
    retried = await gateway.call("POST", f"/runs/{rid}/retry", 200)
    assert retried["state"] == "PENDING"
    assert retried["current_attempt"] == 2
    # The original's poll: the current (second) attempt's events; the timeline: every one.
    events = (await gateway.call("GET", f"/runs/{rid}/events", 200))["events"]
    assert [(e["id"], e["type"], e["msg"]) for e in events] == [(0, "RETRIED", "Manual retry")]
    assert events[0]["payload"] == {"force": True}
    assert retried["events"] == (await gateway.call("GET", f"/runs/{rid}", 200))["events"]
    timeline = (await gateway.call("GET", f"/runs/{rid}/events?scope=run", 200))["events"]
    assert [(e["id"], e["type"], e["attempt"]) for e in timeline] == [
        (0, "CANCELLED", 1),
        (1, "RETRIED", 2),
    ]


async def test_patch_state_outputs_priority(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    run = await gateway.call("PATCH", f"/runs/{rid}", 200, json={"priority": 9})
    assert run["priority"] == 9
    assert run["state"] == "PENDING"
    run = await gateway.call("PATCH", f"/runs/{rid}", 200, json={"state": "RUNNING"})
    assert run["state"] == "RUNNING"
    run = await gateway.call(
        "PATCH", f"/runs/{rid}", 200, json={"state": "COMPLETED", "outputs": {"x": 1}}
    )
    assert (run["state"], run["outputs"]) == ("COMPLETED", {"x": 1})
    # Emergency-only mutation of a terminal run's outputs and priority is still allowed ...
    run = await gateway.call("PATCH", f"/runs/{rid}", 200, json={"outputs": {"x": 2}})
    assert run["outputs"] == {"x": 2}
    # ... a state change is not (locked), nor is a state that does not exist.
    body = await gateway.call("PATCH", f"/runs/{rid}", 400, json={"state": "RUNNING"})
    assert body["reason"] == "RUN_LOCKED"
    body = await gateway.call("PATCH", f"/runs/{rid}", 400, json={"state": "DONE"})
    assert body["detail"] == "Invalid state 'DONE'"
    await gateway.call("PATCH", f"/runs/{rid}", 422, json={"priority": "top"})
    # null means "not given"; nothing given is the run unchanged, as in the original.
    unchanged = await gateway.call("PATCH", f"/runs/{rid}", 200, json={"priority": None})
    assert unchanged == await gateway.call("GET", f"/runs/{rid}", 200) == run
