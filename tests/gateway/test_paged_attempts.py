"""GET /runs/{id}/attempts still returns every attempt when ListAttempts pages (issue 16): the
server cuts a ListAttempts answer at its response budget, and the gateway reads the pages."""

from __future__ import annotations

from pathlib import Path

import grpc
from aiohttp.test_utils import TestClient, TestServer

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.domain.limits import Limits
from gyoza_grpc.gateway.app import make_app
from tests import databases
from tests.conftest import served

R = runs_pb2


async def test_every_attempt_comes_back_across_pages(tmp_path: Path) -> None:
    small = Limits(max_response_bytes=4 * 1024)
    async with (
        served(databases.sqlite_url(tmp_path), limits=small) as gs,
        grpc.aio.insecure_channel(gs.target) as channel,
        TestClient(TestServer(make_app(gs.target))) as http,
    ):
        runs = runs_pb2_grpc.RunServiceStub(channel)
        req = R.CreateRunRequest(image="img")
        req.inputs.update({"blob": "x" * 1500})  # each attempt repeats the run's inputs
        run = (await runs.CreateRun(req)).run
        for _ in range(5):
            await runs.UpdateRun(R.UpdateRunRequest(id=run.id, state=R.RUN_STATE_CANCELLED))
            await runs.RetryRun(R.RetryRunRequest(id=run.id))
        first = await runs.ListAttempts(R.ListAttemptsRequest(run_id=run.id))
        assert first.has_more and len(first.attempts) < 6  # the server did cut it
        resp = await http.get(f"/runs/{run.id}/attempts")
        assert resp.status == 200
        assert [a["attempt"] for a in await resp.json()] == [1, 2, 3, 4, 5, 6]
