"""The gateway in front of a server that requires API keys: X-API-Key passes through, and the
server's UNAUTHENTICATED / PERMISSION_DENIED come back as the original's 401 / 403."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gyoza_grpc.gateway.app import make_app
from gyoza_grpc.server import start_server
from gyoza_grpc.server.api.auth import load_api_keys
from gyoza_grpc.server.config import ServerConfig
from tests import databases
from tests.conftest import TEST_SERVER_OPTIONS
from tests.gateway.schema_check import checked_client

ADMIN = "admin-key-0123456789abcdef"
READER = "reader-key-0123456789abcdef"


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    keys = load_api_keys("", f"admin:{ADMIN},reader:{READER}")
    config = ServerConfig(port=0, database_url=databases.sqlite_url(tmp_path), api_keys=keys)
    gs = await start_server(config, extra_options=TEST_SERVER_OPTIONS)
    try:
        async with checked_client(make_app(gs.target)) as client:
            yield client
    finally:
        await gs.stop(0)


async def test_no_key_is_401_and_names_the_header(http: TestClient[Any, Any]) -> None:
    resp = await http.get("/runs")
    body = await resp.json()
    assert resp.status == 401, body
    assert "x-api-key" in body["detail"]
    assert (body["code"], body["reason"]) == ("UNAUTHENTICATED", "API_KEY_MISSING")


async def test_an_unknown_key_is_401(http: TestClient[Any, Any]) -> None:
    resp = await http.get("/runs", headers={"X-API-Key": "not-a-key-0123456789abcdef"})
    body = await resp.json()
    assert resp.status == 401, body
    assert (body["code"], body["reason"]) == ("UNAUTHENTICATED", "API_KEY_INVALID")
    assert "not-a-key" not in str(body)  # the key is never echoed back


async def test_a_role_that_may_not_write_is_403(http: TestClient[Any, Any]) -> None:
    resp = await http.post("/runs", json={"image": "img"}, headers={"X-API-Key": READER})
    body = await resp.json()
    assert resp.status == 403, body
    assert "CreateRun" in body["detail"]
    assert (body["code"], body["reason"]) == ("PERMISSION_DENIED", "ROLE_FORBIDDEN")
    assert body["metadata"]["role"] == "reader"


async def test_the_right_keys_pass_through(http: TestClient[Any, Any]) -> None:
    created = await http.post("/runs", json={"image": "img"}, headers={"X-API-Key": ADMIN})
    run = await created.json()
    assert created.status == 201, run
    got = await http.get(f"/runs/{run['id']}", headers={"X-API-Key": READER})
    assert got.status == 200
    assert (await got.json())["id"] == run["id"]
