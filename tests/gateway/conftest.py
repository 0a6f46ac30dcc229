"""The gateway in front of a real gRPC server (SQLite) on loopback, and an HTTP client whose
every answer is checked against /openapi.json (schema_check.py).

The server runs on a stepping clock (each reading 1 ms after the last, from a time a test can
set), so created_at filters can be tested to the second without sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from gyoza.v1 import definitions_pb2_grpc, runs_pb2_grpc
from gyoza_grpc.gateway.app import make_app
from gyoza_grpc.server import GyozaServer, start_server
from gyoza_grpc.server.config import ServerConfig
from tests import databases
from tests.conftest import TEST_SERVER_OPTIONS
from tests.gateway.schema_check import checked_client

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class SteppingClock:
    """Each reading is 1 ms after the last; `set()` jumps to a given time."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start

    def set(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        self.t += timedelta(milliseconds=1)
        return self.t


@dataclass
class Gateway:
    """A gateway client, the gRPC server behind it, and stubs to that server."""

    http: TestClient[Any, Any]
    server: GyozaServer
    clock: SteppingClock
    runs: runs_pb2_grpc.RunServiceStub
    definitions: definitions_pb2_grpc.DefinitionServiceStub

    async def call(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        """One request, asserting its HTTP status; returns the JSON body."""
        resp: ClientResponse = await self.http.request(method, path, **kwargs)
        body = await resp.json()
        assert resp.status == status, (method, path, resp.status, body)
        return body

    async def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("image", "img")
        return await self.call("POST", "/runs", 201, json=body)  # type: ignore[no-any-return]

    async def event(self, run_id: str, type_: str, status: int = 200, **body: Any) -> Any:
        return await self.call(
            "POST", f"/runs/{run_id}/events", status, json={"type": type_, **body}
        )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    clock = SteppingClock()
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        database_url=databases.sqlite_url(tmp_path),
        watch_heartbeat_s=0.2,
    )
    gs = await start_server(config, clock=clock, extra_options=TEST_SERVER_OPTIONS)
    try:
        async with (
            checked_client(make_app(gs.target)) as http,
            grpc.aio.insecure_channel(gs.target) as channel,
        ):
            yield Gateway(
                http,
                gs,
                clock,
                runs_pb2_grpc.RunServiceStub(channel),
                definitions_pb2_grpc.DefinitionServiceStub(channel),
            )
    finally:
        await gs.stop(0)
