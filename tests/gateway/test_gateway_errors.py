"""What the gateway adds around the calls: X-API-Key passthrough, the gRPC status -> HTTP
mapping, FastAPI-shaped errors, /openapi.json, shutdown with open streams, and the command
without the rest extra."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.cli import main
from gyoza_grpc.gateway.app import HANDLERS, make_app
from gyoza_grpc.gateway.dashboard import PAGES, STATIC
from gyoza_grpc.gateway.openapi import ROUTES, document
from tests.conftest import TEST_SERVER_OPTIONS
from tests.gateway.conftest import Gateway
from tests.gateway.schema_check import checked_client
from tests.gateway.test_event_stream import next_frame


class KeyedRuns(runs_pb2_grpc.RunServiceServicer):
    """A RunService that records the x-api-key it is called with and answers like the auth
    of the server would: no key UNAUTHENTICATED, a key other than "good" PERMISSION_DENIED.
    A run id "code-NAME" fails with that status; "slow" outlives the gateway's deadline;
    "blip" answers UNAVAILABLE the first time (a server restarting)."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self.blips = 0

    async def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> runs_pb2.GetRunResponse:
        key = dict(context.invocation_metadata() or ()).get("x-api-key")
        self.seen.append(key)  # type: ignore[arg-type]
        if key is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing x-api-key")
        if key != "good":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "key may not read runs")
        if request.id.startswith("code-"):
            code = grpc.StatusCode[request.id.removeprefix("code-")]
            await context.abort(code, f"told to fail with {code.name}")
        if request.id == "slow":
            await asyncio.sleep(30)
        if request.id == "blip":
            self.blips += 1
            if self.blips == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        run = runs_pb2.Run(
            id=request.id, state=runs_pb2.RUN_STATE_RUNNING, current_attempt=1, last_seq=-1
        )
        return runs_pb2.GetRunResponse(run=run)


@pytest.fixture
async def keyed() -> AsyncIterator[tuple[TestClient[Any, Any], KeyedRuns]]:
    servicer = KeyedRuns()
    server = grpc.aio.server(options=TEST_SERVER_OPTIONS)
    runs_pb2_grpc.add_RunServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        app = make_app(f"127.0.0.1:{port}", timeout_s=3.0)
        async with checked_client(app) as http:
            yield http, servicer
    finally:
        await server.stop(0)


async def test_x_api_key_is_passed_through(keyed: tuple[TestClient[Any, Any], KeyedRuns]) -> None:
    http, servicer = keyed
    resp = await http.get("/runs/r1", headers={"X-API-Key": "good"})
    assert resp.status == 200
    assert (await resp.json())["state"] == "RUNNING"
    resp = await http.get("/runs/r1")
    assert resp.status == 401
    assert await resp.json() == {"detail": "missing x-api-key", "code": "UNAUTHENTICATED"}
    resp = await http.get("/runs/r1", headers={"X-API-Key": "bad"})
    assert resp.status == 403
    assert (await resp.json())["code"] == "PERMISSION_DENIED"
    # The event stream's calls carry the key too.
    resp = await http.get("/runs/r2/events/stream", headers={"X-API-Key": "other"})
    assert resp.status == 403
    assert servicer.seen == ["good", None, "bad", "other"]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("INVALID_ARGUMENT", 400),
        ("OUT_OF_RANGE", 400),
        ("FAILED_PRECONDITION", 400),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("ABORTED", 409),
        ("RESOURCE_EXHAUSTED", 429),
        ("UNIMPLEMENTED", 501),
        ("UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", 504),
        ("INTERNAL", 500),
        ("UNKNOWN", 500),
    ],
)
async def test_status_mapping(
    keyed: tuple[TestClient[Any, Any], KeyedRuns], code: str, status: int
) -> None:
    http, _ = keyed
    resp = await http.get(f"/runs/code-{code}", headers={"X-API-Key": "good"})
    assert resp.status == status
    assert await resp.json() == {"detail": f"told to fail with {code}", "code": code}


async def test_deadline_is_504(keyed: tuple[TestClient[Any, Any], KeyedRuns]) -> None:
    http, _ = keyed
    resp = await http.get("/runs/slow", headers={"X-API-Key": "good"})
    assert resp.status == 504
    assert (await resp.json())["code"] == "DEADLINE_EXCEEDED"


async def test_a_read_is_tried_again_through_a_restart(
    keyed: tuple[TestClient[Any, Any], KeyedRuns],
) -> None:
    http, servicer = keyed
    resp = await http.get("/runs/blip", headers={"X-API-Key": "good"})
    assert resp.status == 200 and (await resp.json())["id"] == "blip"
    assert servicer.blips == 2 and servicer.seen == ["good", "good"]  # the key both times


async def test_server_down_is_503() -> None:
    with_nothing_there = make_app("127.0.0.1:1", timeout_s=5.0)
    async with checked_client(with_nothing_there) as http:
        resp = await http.get("/runs")
        assert resp.status == 503
        assert (await resp.json())["code"] == "UNAVAILABLE"


async def test_routing_errors_are_json(gateway: Gateway) -> None:
    resp = await gateway.http.get("/nowhere")
    assert (resp.status, await resp.json()) == (404, {"detail": "Not Found"})
    resp = await gateway.http.delete("/runs")
    assert (resp.status, await resp.json()) == (405, {"detail": "Method Not Allowed"})
    assert set(resp.headers["Allow"].split(",")) == {"GET", "POST"}


def _nested(levels: int) -> Any:
    """JSON `levels` deep, objects and arrays in turn."""
    doc: Any = 1
    for n in range(levels):
        doc = {"a": doc} if n % 2 else [doc]
    return doc


@pytest.mark.parametrize(
    ("method", "path", "body", "kind"),
    [
        ("POST", "/runs", b'{"image": "\\ud800"}', "string_unicode"),
        ("POST", "/runs", b'{"image": "img", "inputs": {"\\udfff": 1}}', "string_unicode"),
        ("POST", "/runs/RUN/events", b'{"type": "INFO", "msg": "a\\ud800"}', "string_unicode"),
        ("PATCH", "/runs/RUN", b'{"outputs": {"k": ["\\ud800"]}}', "string_unicode"),
        ("POST", "/runs", {"image": "img", "inputs": {"x": _nested(31)}}, "json_invalid"),
        ("POST", "/runs", {"image": "img", "inputs": {"x": _nested(200)}}, "json_invalid"),
        ("POST", "/runs/RUN/events", {"type": "INFO", "payload": _nested(40)}, "json_invalid"),
        ("POST", "/definitions/d/runs", {"inputs": {"x": _nested(40)}}, "json_invalid"),
    ],
)
async def test_bodies_no_protobuf_message_can_hold_are_422_not_500(
    gateway: Gateway, method: str, path: str, body: bytes | dict[str, Any], kind: str
) -> None:
    """A lone surrogate (not UTF-8) or JSON deeper than protobuf decodes: FastAPI's 422."""
    run = await gateway.create()
    path = path.replace("RUN", run["id"])
    sent: dict[str, Any] = {"json": body}
    if isinstance(body, bytes):
        sent = {"data": body, "headers": {"Content-Type": "application/json"}}
    got = await gateway.call(method, path, 422, **sent)
    assert [(e["loc"], e["type"]) for e in got["detail"]] == [(["body"], kind)]
    after = await gateway.call("GET", f"/runs/{run['id']}", 200)
    assert (after["events"], after["outputs"]) == ([], {})


async def test_the_deepest_accepted_body_makes_a_run_every_client_can_read(
    gateway: Gateway,
) -> None:
    inputs = {"x": _nested(30)}  # the body: 32 levels, one more is 422 (above)
    run = await gateway.create(inputs=inputs)
    assert run["inputs"] == inputs
    got = await gateway.runs.GetRun(runs_pb2.GetRunRequest(id=run["id"]), timeout=10)
    assert got.run.id == run["id"]
    assert (await gateway.call("GET", "/runs", 200))["data"][0]["inputs"] == inputs


def test_a_route_without_a_handler_or_a_handler_without_a_route_fails_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_app("127.0.0.1:1")  # every route has its handler
    count_runs = HANDLERS["count_runs"]
    monkeypatch.delitem(HANDLERS, "count_runs")
    with pytest.raises(RuntimeError, match=r"routes without a handler: \['count_runs'\]"):
        make_app("127.0.0.1:1")
    monkeypatch.setitem(HANDLERS, "count_runs", count_runs)
    monkeypatch.setitem(HANDLERS, "no_such_route", count_runs)
    with pytest.raises(RuntimeError, match=r"handlers without a route: \['no_such_route'\]"):
        make_app("127.0.0.1:1")


async def test_openapi_document_is_valid_and_lists_every_route(gateway: Gateway) -> None:
    doc = await gateway.call("GET", "/openapi.json", 200)
    assert doc == document()
    validate(doc)
    served = {
        (r.method, r.resource.canonical)
        for r in gateway.http.app.router.routes()  # type: ignore[union-attr]
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    dashboard = {
        ("GET", "/ui"),
        *(("GET", path) for path in PAGES),
        ("GET", STATIC),
    }
    assert served == documented | {("GET", "/openapi.json")} | dashboard
    assert len(documented) == len(ROUTES)  # no two routes share a method and path


async def test_gateway_shutdown_ends_open_streams(tmp_path: Any) -> None:
    from gyoza_grpc.server import start_server
    from gyoza_grpc.server.config import ServerConfig
    from tests import databases

    config = ServerConfig(host="127.0.0.1", port=0, database_url=databases.sqlite_url(tmp_path))
    gs = await start_server(config, extra_options=TEST_SERVER_OPTIONS)
    try:
        http = checked_client(make_app(gs.target))
        await http.start_server()
        try:
            created = await http.post("/runs", json={"image": "img"})
            rid = (await created.json())["id"]
            resp = await http.get(f"/runs/{rid}/events/stream")
            assert resp.status == 200
            await asyncio.wait_for(http.server.close(), 10)  # does not wait for the stream
            frame = await next_frame(resp)
            assert frame is not None and frame.fields["event"] == "error"
            assert frame.data["status"] == 503
        finally:
            await http.close()
    finally:
        await gs.stop(0)


def test_gateway_command_without_the_rest_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # an import of it fails
    for name in ("gyoza_grpc.gateway.app", "gyoza_grpc.gateway.sse"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert main(["gateway", "--port", "0"]) == 2
    assert "pip install 'gyoza-grpc[rest]'" in capsys.readouterr().err
