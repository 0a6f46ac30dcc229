"""The routes the dashboard reads besides the original's: workers with their GPUs and holdings,
definitions and their versions, the caller's role, runs without their events, and the live
feed of run changes (GET /runs/stream). Every answer and frame is checked against
/openapi.json (schema_check.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from gyoza.v1 import definitions_pb2, workers_pb2, workers_pb2_grpc
from gyoza_grpc.gateway.app import make_app
from gyoza_grpc.server import start_server
from gyoza_grpc.server.api.auth import load_api_keys
from gyoza_grpc.server.config import ServerConfig
from tests import databases
from tests.conftest import TEST_SERVER_OPTIONS
from tests.gateway.conftest import Gateway
from tests.gateway.schema_check import checked_client
from tests.gateway.test_event_stream import Frame, next_frame

W = workers_pb2


async def heartbeat(gateway: Gateway, worker_id: str, **resources: Any) -> None:
    async with grpc.aio.insecure_channel(gateway.server.target) as ch:
        await workers_pb2_grpc.WorkerServiceStub(ch).Heartbeat(
            W.HeartbeatRequest(
                worker_id=worker_id, resources=W.Resources(**resources), tags=["gpu", "eu"]
            )
        )


async def claim(gateway: Gateway, worker_id: str) -> W.ClaimRunsResponse:
    async with grpc.aio.insecure_channel(gateway.server.target) as ch:
        resp: W.ClaimRunsResponse = await workers_pb2_grpc.WorkerServiceStub(ch).ClaimRuns(
            W.ClaimRunsRequest(worker_id=worker_id, max_runs=5)
        )
        return resp


async def test_workers_with_their_gpus_what_is_free_and_what_they_hold(
    gateway: Gateway,
) -> None:
    gpus = [W.Gpu(gpu_id=0, vram_mb=24000), W.Gpu(gpu_id=1, vram_mb=16000)]
    await heartbeat(gateway, "w1", cpu=8, ram_mb=32000, gpus=gpus)
    run = await gateway.create(constraints={"vram_mb": 10000, "cpu": 2, "ram_mb": 4000})
    claims = await claim(gateway, "w1")
    assert [c.run.id for c in claims.claims] == [run["id"]]
    gpu = claims.claims[0].gpu_id
    listed = (await gateway.call("GET", "/workers", 200))["workers"]
    assert [w["worker_id"] for w in listed] == ["w1"]
    w = listed[0]
    assert w["state"] == "ALIVE" and w["tags"] == ["gpu", "eu"]
    assert w["resources"] == {
        "cpu": 8,
        "ram_mb": 32000,
        "gpus": [{"gpu_id": 0, "vram_mb": 24000}, {"gpu_id": 1, "vram_mb": 16000}],
    }
    free_vram = {g["gpu_id"]: g["vram_mb"] for g in w["free"]["gpus"]}
    assert free_vram[gpu] == {0: 24000, 1: 16000}[gpu] - 10000
    assert (w["free"]["cpu"], w["free"]["ram_mb"]) == (6, 28000)
    assert w["held"] == [{"run_id": run["id"], "attempt": 1}]
    assert w["last_heartbeat"] and w["lease_expires_at"] > w["last_heartbeat"]
    assert await gateway.call("GET", "/workers/w1", 200) == w
    missing = await gateway.call("GET", "/workers/nobody", 404)
    assert missing["code"] == "NOT_FOUND"


async def test_definitions_paged_by_name_and_their_versions(gateway: Gateway) -> None:
    for name, version in (("b-op", "1.0.0"), ("a-op", "1.0.0"), ("a-op", "1.2.0"), ("c", "2.0.0")):
        await gateway.definitions.UpsertDefinition(
            definitions_pb2.UpsertDefinitionRequest(
                definition=definitions_pb2.Definition(
                    name=name,
                    version=version,
                    image=f"{name}:{version}",
                    input_specs={"n": definitions_pb2.InputSpec(type=2, required=True)},
                )
            )
        )
    page = await gateway.call("GET", "/definitions?limit=2", 200)
    assert [(d["id"], d["version"]) for d in page["definitions"]] == [
        ("a-op", "1.2.0"),
        ("b-op", "1.0.0"),
    ]
    assert page["has_more"] is True
    assert page["definitions"][0]["input_specs"] == {"n": {"type": "int", "required": True}}
    rest = await gateway.call("GET", "/definitions?limit=2&starting_after=b-op", 200)
    assert [d["id"] for d in rest["definitions"]] == ["c"] and rest["has_more"] is False
    versions = await gateway.call("GET", "/definitions/a-op/versions", 200)
    assert [d["version"] for d in versions["definitions"]] == ["1.2.0", "1.0.0"]
    await gateway.call("GET", "/definitions/nope/versions", 404)
    await gateway.call("GET", "/definitions?limit=0", 422)


async def test_runs_without_their_events(gateway: Gateway) -> None:
    run = await gateway.create()
    await gateway.event(run["id"], "STARTED", payload={"worker_id": "w1"})
    full = (await gateway.call("GET", "/runs", 200))["data"][0]
    basic = (await gateway.call("GET", "/runs?view=basic", 200))["data"][0]
    assert len(full["events"]) == 1 and basic["events"] == []
    assert {**full, "events": []} == basic
    await gateway.call("GET", "/runs?view=everything", 422)


async def test_access_without_keys(gateway: Gateway) -> None:
    caller = await gateway.call("GET", "/access", 200)
    assert caller["keys_required"] is False and caller["role"] is None
    assert "/gyoza.v1.RunService/CancelRun" in caller["methods"]


async def stream_frames(resp: ClientResponse) -> AsyncIterator[Frame]:
    """Each frame with fields (heartbeats skipped)."""
    while True:
        frame = await next_frame(resp)
        assert frame is not None, "the stream ended"
        if frame.fields:
            yield frame


async def open_runs_stream(http: TestClient[Any, Any], **kwargs: Any) -> ClientResponse:
    resp = await http.get("/runs/stream", **kwargs)
    assert resp.status == 200, await resp.text()
    first = await next_frame(resp)
    assert first is not None and first.fields["event"] == "ready"
    return resp


async def test_runs_stream_sends_new_runs_and_their_changes(gateway: Gateway) -> None:
    before = await gateway.create(image="old")
    resp = await open_runs_stream(gateway.http)
    filtered = await open_runs_stream(gateway.http, params={"image": "wanted"})
    run = await gateway.create(image="wanted")
    await gateway.create(image="other")
    await gateway.event(run["id"], "STARTED", payload={"worker_id": "w7"})
    await gateway.event(run["id"], "PROGRESS", msg=30)
    frames = stream_frames(resp)
    got: list[dict[str, Any]] = []
    while len(got) < 4:
        frame = await anext(frames)
        assert frame.fields["event"] == "run"
        got.append(frame.data)
    assert [(r["image"], r["state"], r["progress"]) for r in got] == [
        ("wanted", "PENDING", 0),
        ("other", "PENDING", 0),
        ("wanted", "RUNNING", 0),
        ("wanted", "RUNNING", 30),
    ]
    assert before["id"] not in {r["id"] for r in got}  # nothing replayed
    # A copy is the run as GET /runs/{id} shows it, without events.
    now = await gateway.call("GET", f"/runs/{run['id']}", 200)
    assert got[-1] == {**now, "events": []}
    only = stream_frames(filtered)
    images = [(await anext(only)).data["image"] for _ in range(3)]
    assert images == ["wanted"] * 3
    resp.close()
    filtered.close()


async def test_runs_stream_refuses_a_filter_the_server_refuses(gateway: Gateway) -> None:
    body = await gateway.call("GET", "/runs/stream?image=a%00b", 400)
    assert body["code"] == "INVALID_ARGUMENT"


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    keys = load_api_keys("", f"admin:{ADMIN},reader:{READER},worker:{WORKER}")
    config = ServerConfig(port=0, database_url=databases.sqlite_url(tmp_path), api_keys=keys)
    gs = await start_server(config, extra_options=TEST_SERVER_OPTIONS)
    try:
        async with checked_client(make_app(gs.target)) as client:
            yield client
    finally:
        await gs.stop(0)


ADMIN = "admin-key-0123456789abcdef"
READER = "reader-key-0123456789abcdef"
WORKER = "worker-key-0123456789abcdef"


async def test_access_names_the_role_of_the_key(keyed: TestClient[Any, Any]) -> None:
    for key, role, can_cancel in ((ADMIN, "admin", True), (READER, "reader", False)):
        resp = await keyed.get("/access", headers={"X-API-Key": key})
        caller = await resp.json()
        assert resp.status == 200, caller
        assert (caller["keys_required"], caller["role"]) == (True, role)
        assert ("/gyoza.v1.RunService/CancelRun" in caller["methods"]) == can_cancel
        assert "/gyoza.v1.RunService/WatchRuns" in caller["methods"]
    resp = await keyed.get("/access")
    assert resp.status == 401


async def test_runs_stream_needs_a_key_that_may_watch(keyed: TestClient[Any, Any]) -> None:
    resp = await keyed.get("/runs/stream")
    assert resp.status == 401 and (await resp.json())["code"] == "UNAUTHENTICATED"
    resp = await keyed.get("/runs/stream", headers={"X-API-Key": WORKER})
    assert resp.status == 403 and "WatchRuns" in (await resp.json())["detail"]
    stream = await open_runs_stream(keyed, headers={"X-API-Key": READER})
    created = await keyed.post("/runs", json={"image": "i"}, headers={"X-API-Key": ADMIN})
    run = await created.json()
    frame = await anext(stream_frames(stream))
    assert frame.data["id"] == run["id"]
    stream.close()
