"""Route by route, every path of the original router (000_6ab4db75cca1258f.txt) as its source
and FastAPI/pydantic's defaults answer it: status, body shape and `detail` text.

Where the original raised an HTTPException the `detail` is its text; where FastAPI refused
the request, the body is FastAPI's 422 list, item for item. The gateway may add the gRPC
status to an error (`code`, `reason`, `metadata`, `errors`); `detail` is always the original's.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import Gateway

UNKNOWN = "00000000-0000-0000-0000-000000000000"
JSON = {"Content-Type": "application/json"}
RUN_KEYS = {
    "id",
    "state",
    "priority",
    "image",
    "inputs",
    "outputs",
    "constraints",
    "retry_policy",
    "event_delivery",
    "op_definition",
    "definition_version",
    "progress",
    "current_attempt",
    "execution_summary",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "request_id",
    "last_event_id",
    "events",
}
INT_PARSING = "Input should be a valid integer, unable to parse string as an integer"


def not_found(run_id: str) -> str:
    return f"OpRun '{run_id}' not found"


def missing(loc: list[Any], value: Any) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": value}


# -- GET /runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["2", " 2 ", "+2", "002", "2.0", "2.00", "0_2"])
async def test_list_limit_is_read_as_pydantic_reads_an_int(gateway: Gateway, limit: str) -> None:
    for _ in range(3):
        await gateway.create()
    body = await gateway.call("GET", "/runs", 200, params={"limit": limit})
    assert len(body["data"]) == 2
    assert body["has_more"] is True


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        ("0", ("greater_than_equal", "Input should be greater than or equal to 1", {"ge": 1})),
        ("-0", ("greater_than_equal", "Input should be greater than or equal to 1", {"ge": 1})),
        ("101", ("less_than_equal", "Input should be less than or equal to 100", {"le": 100})),
        ("abc", ("int_parsing", INT_PARSING, None)),
        ("", ("int_parsing", INT_PARSING, None)),
        ("2.5", ("int_parsing", INT_PARSING, None)),
        ("1e1", ("int_parsing", INT_PARSING, None)),
    ],
)
async def test_list_limit_refusals_are_fastapis_422(
    gateway: Gateway, limit: str, error: tuple[str, str, dict[str, int] | None]
) -> None:
    kind, msg, ctx = error
    want: dict[str, Any] = {"type": kind, "loc": ["query", "limit"], "msg": msg, "input": limit}
    if ctx:
        want["ctx"] = ctx
    body = await gateway.call("GET", "/runs", 422, params={"limit": limit})
    assert body == {"detail": [want]}


async def test_list_a_repeated_parameter_is_its_last(gateway: Gateway) -> None:
    for _ in range(3):
        await gateway.create()
    body = await gateway.call("GET", "/runs?limit=abc&limit=2", 200)
    assert len(body["data"]) == 2
    body = await gateway.call("GET", "/runs?limit=2&limit=abc", 422)
    assert body["detail"][0]["input"] == "abc"


async def test_list_every_parameter_error_at_once(gateway: Gateway) -> None:
    body = await gateway.call("GET", "/runs?created[gt]=soon&limit=0", 422)
    assert [(e["loc"], e["type"]) for e in body["detail"]] == [
        (["query", "limit"], "greater_than_equal"),
        (["query", "created[gt]"], "int_parsing"),
    ]


async def test_list_envelope_and_the_originals_400s(gateway: Gateway) -> None:
    run = await gateway.create()
    body = await gateway.call("GET", "/runs", 200)
    assert set(body) == {"object", "data", "has_more", "url"}
    assert (body["object"], body["url"], body["has_more"]) == ("list", "/runs", False)
    assert set(body["data"][0]) == RUN_KEYS
    assert body["data"][0]["id"] == run["id"]
    # An empty state is no filter (`state or status`).
    assert len((await gateway.call("GET", "/runs?state=&status=", 200))["data"]) == 1
    # The original's checks, in its order.
    mismatch = "state and status must match when both are provided"
    for query, detail in [
        ("state=PENDING&status=RUNNING", mismatch),
        ("state=DONE&status=RUNNING", mismatch),
        ("state=DONE", "Invalid state 'DONE'"),
        ("status=pending", "Invalid state 'pending'"),
        ("state=DONE&created[gte]=999999999999", "Invalid state 'DONE'"),
        ("created[gte]=999999999999", "Invalid created timestamp"),
        ("created[lte]=-99999999999", "Invalid created timestamp"),
        (f"created[lt]={10**30}", "Invalid created timestamp"),
    ]:
        assert await gateway.call("GET", f"/runs?{query}", 400) == {"detail": detail}
    # The range datetime.fromtimestamp holds is accepted.
    await gateway.call("GET", "/runs?created[gte]=-62135596800&created[lte]=253402300799", 200)


# -- POST /runs -------------------------------------------------------------------------------


async def test_create_answers_201_with_the_run_and_its_events(gateway: Gateway) -> None:
    run = await gateway.create(image="img", priority="7", constraints={"cpu": True})
    assert set(run) == RUN_KEYS
    assert (run["priority"], run["constraints"]["cpu"], run["events"]) == (7, 1, [])
    run = await gateway.create(image="img", priority=3.0)
    assert run["priority"] == 3


@pytest.mark.parametrize(
    ("sent", "detail"),
    [
        ({}, [missing(["body"], None)]),  # no body at all
        ({"data": b"null", "headers": JSON}, [missing(["body"], None)]),
        ({"json": {}}, [missing(["body", "image"], {})]),
        (
            {"json": []},
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": [],
                }
            ],
        ),
        (
            # A body that is not declared JSON is not read as JSON.
            {"data": b'{"image": "i"}', "headers": {"Content-Type": "text/plain"}},
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": '{"image": "i"}',
                }
            ],
        ),
        (
            {"data": b"{bad", "headers": JSON},
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 1],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting property name enclosed in double quotes"},
                }
            ],
        ),
        (
            {"json": {"image": 5, "priority": "high", "inputs": None, "constraints": [1]}},
            [
                {
                    "type": "string_type",
                    "loc": ["body", "image"],
                    "msg": "Input should be a valid string",
                    "input": 5,
                },
                {
                    "type": "int_parsing",
                    "loc": ["body", "priority"],
                    "msg": INT_PARSING,
                    "input": "high",
                },
                {
                    "type": "model_attributes_type",
                    "loc": ["body", "constraints"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": [1],
                },
            ],
        ),
        (
            {"json": {"image": "i", "priority": 7.5}},
            [
                {
                    "type": "int_from_float",
                    "loc": ["body", "priority"],
                    "msg": "Input should be a valid integer, got a number with a fractional part",
                    "input": 7.5,
                }
            ],
        ),
    ],
)
async def test_create_refusals_are_fastapis(
    gateway: Gateway, sent: dict[str, Any], detail: list[dict[str, Any]]
) -> None:
    assert await gateway.call("POST", "/runs", 422, **sent) == {"detail": detail}


async def test_create_body_rules_of_fastapi(gateway: Gateway) -> None:
    # No content type, or a JSON one with a suffix: read as JSON.
    resp = await gateway.http.post(
        "/runs", data=b'{"image": "i"}', skip_auto_headers=["Content-Type"]
    )
    assert resp.status == 201
    headers = {"Content-Type": "application/vnd.api+json; charset=utf-8"}
    await gateway.call("POST", "/runs", 201, data=b'{"image": "i"}', headers=headers)
    # Bytes that are not text.
    body = await gateway.call("POST", "/runs", 400, data=b'{"image": "\xff"}', headers=JSON)
    assert body == {"detail": "There was an error parsing the body"}


# -- the routes of one run --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "sent"),
    [
        ("GET", "", {}),
        ("PATCH", "", {"json": {"priority": 1}}),
        ("PATCH", "", {"json": {}}),
        ("PATCH", "", {"json": {"state": "DONE"}}),  # looked up before the state is read
        ("POST", "/retry", {}),
        ("POST", "/cancel", {}),
        ("GET", "/events", {}),
        ("GET", "/events?after=-5", {}),
        ("POST", "/events", {"json": {"type": "INFO"}}),
        ("POST", "/events", {"json": {"type": "EXPLODED"}}),
        ("GET", "/attempts", {}),
    ],
)
@pytest.mark.parametrize("run_id", [UNKNOWN, "x" * 300, "nope"])
async def test_an_unknown_run_is_the_originals_404(
    gateway: Gateway, method: str, suffix: str, sent: dict[str, Any], run_id: str
) -> None:
    body = await gateway.call(method, f"/runs/{run_id}{suffix}", 404, **sent)
    assert body["detail"] == not_found(run_id)


async def test_a_request_fastapi_cannot_read_is_422_before_the_run_is_looked_up(
    gateway: Gateway,
) -> None:
    body = await gateway.call("PATCH", f"/runs/{UNKNOWN}", 422, json={"priority": "x"})
    assert body["detail"][0]["loc"] == ["body", "priority"]
    body = await gateway.call("PATCH", f"/runs/{UNKNOWN}", 422)
    assert body == {"detail": [missing(["body"], None)]}
    body = await gateway.call("POST", f"/runs/{UNKNOWN}/events", 422, json={"msg": "x"})
    assert body == {"detail": [missing(["body", "type"], {"msg": "x"})]}
    body = await gateway.call("GET", f"/runs/{UNKNOWN}/events?after=two", 422)
    assert body == {
        "detail": [
            {"type": "int_parsing", "loc": ["query", "after"], "msg": INT_PARSING, "input": "two"}
        ]
    }


async def test_patch_answers_the_run_with_its_events(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    await gateway.event(rid, "ASSIGNED", payload={"worker_id": "w"})
    before = await gateway.call("GET", f"/runs/{rid}", 200)
    # The original skipped None fields: nothing given is the run, unchanged.
    for body in ({}, {"state": None, "outputs": None, "priority": None}, {"other": 1}):
        assert await gateway.call("PATCH", f"/runs/{rid}", 200, json=body) == before
    run = await gateway.call("PATCH", f"/runs/{rid}", 200, json={"priority": "9"})
    assert run["priority"] == 9
    assert run["events"] == before["events"] and len(run["events"]) == 1
    body = await gateway.call("PATCH", f"/runs/{rid}", 400, json={"state": "DONE"})
    assert body == {"detail": "Invalid state 'DONE'"}


async def test_cancel_retry_and_events_answer_the_run_with_its_events(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    run = await gateway.event(rid, "INFO", msg="hello")
    assert [(e["type"], e["msg"]) for e in run["events"]] == [("INFO", "hello")]
    run = await gateway.call("POST", f"/runs/{rid}/cancel", 200)
    assert [e["type"] for e in run["events"]] == ["INFO", "CANCELLED"]
    assert set(run) == RUN_KEYS
    # The original's words for a run already terminal.
    body = await gateway.call("POST", f"/runs/{rid}/cancel", 400)
    assert body["detail"] == "Run is already in terminal state CANCELLED"
    run = await gateway.call("POST", f"/runs/{rid}/retry", 200)
    assert (run["state"], run["current_attempt"]) == ("PENDING", 2)
    assert [e["type"] for e in run["events"]] == ["RETRIED"]
    # A route without a body ignores one.
    await gateway.call("POST", f"/runs/{rid}/cancel", 200, data=b"{bad", headers=JSON)


async def test_add_event_reads_msg_as_str_or_int(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    await gateway.event(rid, "STARTED", payload={"worker_id": "w"})
    assert (await gateway.event(rid, "PROGRESS", msg=True))["progress"] == 1
    assert (await gateway.event(rid, "PROGRESS", msg=30.0))["progress"] == 30
    assert (await gateway.event(rid, "PROGRESS", msg="40"))["progress"] == 40
    body = await gateway.event(rid, "PROGRESS", 422, msg=7.5)
    assert [(e["loc"], e["type"]) for e in body["detail"]] == [
        (["body", "msg", "str"], "string_type"),
        (["body", "msg", "int"], "int_from_float"),
    ]
    body = await gateway.event(rid, "EXPLODED", 400)
    assert body["detail"].startswith("Invalid event type 'EXPLODED'")


async def test_poll_is_the_originals_current_attempt_by_index(gateway: Gateway) -> None:
    rid = (await gateway.create(retry_policy={"max_attempts": 1}))["id"]
    for type_ in ("STARTED", "INFO", "FAILED"):
        await gateway.event(rid, type_, msg=type_.lower())
    await gateway.call("POST", f"/runs/{rid}/retry", 200)
    await gateway.event(rid, "ASSIGNED", payload={"worker_id": "w"})
    await gateway.event(rid, "INFO", msg="second")

    async def poll(query: str = "") -> list[tuple[int, str]]:
        body = await gateway.call("GET", f"/runs/{rid}/events{query}", 200)
        assert set(body) == {"events"}
        assert {e["state"] for e in body["events"]} <= {"ASSIGNED"}  # the run's state
        for e in body["events"]:
            assert set(e) == {"id", "type", "t", "msg", "state", "payload"}
        return [(e["id"], e["msg"]) for e in body["events"]]

    # The second attempt: RETRIED, ASSIGNED, INFO, numbered from 0.
    assert await poll() == [(0, "Manual retry"), (1, ""), (2, "second")]
    assert await poll("?after=0") == [(1, ""), (2, "second")]
    assert await poll("?after=2") == []
    assert await poll(f"?after={10**30}") == []
    # A negative `after` is a Python slice from the end, numbered from where it starts.
    assert await poll("?after=-1") == [(0, "Manual retry"), (1, ""), (2, "second")]
    assert await poll("?after=-3") == [(-2, ""), (-1, "second")]
    assert await poll("?after=-10") == [(-9, "Manual retry"), (-8, ""), (-7, "second")]
    # The run-wide timeline, behind scope=run.
    body = await gateway.call("GET", f"/runs/{rid}/events?scope=run&after=3", 200)
    assert [(e["id"], e["attempt"], e["type"]) for e in body["events"]] == [
        (4, 2, "ASSIGNED"),
        (5, 2, "INFO"),
    ]
    body = await gateway.call("GET", f"/runs/{rid}/events?scope=everything", 422)
    assert body["detail"][0]["type"] == "literal_error"


async def test_attempts_in_order(gateway: Gateway) -> None:
    rid = (await gateway.create())["id"]
    await gateway.call("POST", f"/runs/{rid}/cancel", 200)
    await gateway.call("POST", f"/runs/{rid}/retry", 200)
    attempts = await gateway.call("GET", f"/runs/{rid}/attempts", 200)
    assert [(a["attempt"], a["state"], a["op_run_id"]) for a in attempts] == [
        (1, "CANCELLED", rid),
        (2, "PENDING", rid),
    ]


# -- what is not a route ----------------------------------------------------------------------


async def test_routing_answers_are_starlettes(gateway: Gateway) -> None:
    assert await gateway.call("GET", "/nowhere", 404) == {"detail": "Not Found"}
    assert await gateway.call("PUT", "/runs", 405) == {"detail": "Method Not Allowed"}
    # A trailing slash: a 307 to the route without it, query kept.
    resp = await gateway.http.get("/runs/?limit=2", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (307, "/runs?limit=2")
    await gateway.call("GET", "/runs/?limit=2", 200)


@pytest.mark.parametrize("where", ["path", "query", "header"])
async def test_a_request_line_or_header_over_8190_bytes_is_a_json_400(
    gateway: Gateway, where: str
) -> None:
    long = "x" * 9000
    path, headers = "/runs", {}
    if where == "path":
        path = f"/runs/{long}"
    elif where == "query":
        path = f"/runs?image={long}"
    else:
        headers = {"X-Padding": long}
    resp = await gateway.http.get(path, headers=headers)
    assert resp.status == 400
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body == {"detail": "Bad Request: a request line or header over 8190 bytes"}
