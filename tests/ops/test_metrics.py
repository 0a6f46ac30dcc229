"""/metrics scraped over HTTP after real calls: RPC counts and latency by method and code,
runs by state, the queue, watch streams, workers alive, claim wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.domain.access import ApiKeys, KeyEntry, Role
from gyoza_grpc.server import GyozaServer
from tests.conftest import eventually, launch, served
from tests.ops.helpers import sample, scrape

R = runs_pb2


METRICS: dict[str, Any] = {"metrics_port": 0, "metrics_refresh_s": 0.05}


async def _metrics_server(url: str) -> GyozaServer:
    return await launch(url, **METRICS)


@pytest.fixture
async def gs(database_url: str) -> AsyncIterator[GyozaServer]:
    async with served(database_url, **METRICS) as server:
        yield server


@pytest.fixture
async def sqlite_gs(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    async with served(sqlite_url, **METRICS) as server:
        yield server


def _port(server: GyozaServer) -> int:
    assert server.metrics is not None and server.metrics.port > 0
    return server.metrics.port


async def test_rpc_counts_and_latency_by_method_and_code(sqlite_gs: GyozaServer) -> None:
    port = _port(sqlite_gs)
    async with grpc.aio.insecure_channel(sqlite_gs.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        run = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
        for _ in range(3):
            await runs.GetRun(R.GetRunRequest(id=run.id))
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await runs.GetRun(R.GetRunRequest(id="missing"))
    m = await scrape(port)
    get = "gyoza.v1.RunService/GetRun"
    assert sample(m, "gyoza_rpc_requests_total", method=get, code="OK") == 3
    assert sample(m, "gyoza_rpc_requests_total", method=get, code="NOT_FOUND") == 2
    create = "gyoza.v1.RunService/CreateRun"
    assert sample(m, "gyoza_rpc_requests_total", method=create, code="OK") == 1
    assert sample(m, "gyoza_rpc_duration_seconds_count", method=get, code="OK") == 3
    total = sample(m, "gyoza_rpc_duration_seconds_sum", method=get, code="OK")
    assert total is not None and 0 < total < 30
    inf = sample(m, "gyoza_rpc_duration_seconds_bucket", method=get, code="OK", le="+Inf")
    assert inf == 3


async def test_runs_by_state_and_queue_by_priority(gs: GyozaServer) -> None:
    port = _port(gs)
    async with grpc.aio.insecure_channel(gs.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        made = [
            (await runs.CreateRun(R.CreateRunRequest(image="img", priority=p))).run
            for p in (1, 1, 1, 9, 9)
        ]
        await runs.CancelRun(R.CancelRunRequest(id=made[0].id))
        await runs.CancelRun(R.CancelRunRequest(id=made[3].id))

    async def counted() -> bool:
        m = await scrape(port)
        return sample(m, "gyoza_runs", state="CANCELLED") == 2

    await eventually(counted)
    m = await scrape(port)
    assert sample(m, "gyoza_runs", state="PENDING") == 3
    assert sample(m, "gyoza_runs", state="RUNNING") == 0
    assert sample(m, "gyoza_queue_depth", priority="1") == 2
    assert sample(m, "gyoza_queue_depth", priority="9") == 1
    age = sample(m, "gyoza_queue_oldest_age_seconds", priority="1")
    assert age is not None and 0 <= age < 60
    assert sample(m, "gyoza_database_up") == 1


async def test_watch_streams_gauge_goes_up_then_down(sqlite_gs: GyozaServer) -> None:
    port = _port(sqlite_gs)
    method = "gyoza.v1.RunService/WatchEvents"
    async with grpc.aio.insecure_channel(sqlite_gs.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        run = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
        await runs.AddEvent(R.AddEventRequest(run_id=run.id, type=R.EVENT_TYPE_INFO))
        calls = [runs.WatchEvents(R.WatchEventsRequest(run_id=run.id)) for _ in range(3)]
        for call in calls:
            assert (await call.read()).event.seq == 0
        m = await scrape(port)
        assert sample(m, "gyoza_watch_streams", method=method) == 3
        calls[0].cancel()
        await runs.CancelRun(R.CancelRunRequest(id=run.id))  # the others end with the run

        async def closed() -> bool:
            return sample(await scrape(port), "gyoza_watch_streams", method=method) == 0

        await eventually(closed)
    m = await scrape(port)
    assert sample(m, "gyoza_rpc_requests_total", method=method, code="OK") == 2
    assert sample(m, "gyoza_rpc_requests_total", method=method, code="CANCELLED") == 1
    # Streams are counted, not timed.
    assert sample(m, "gyoza_rpc_duration_seconds_count", method=method, code="OK") is None


async def test_workers_alive_and_claim_wait(gs: GyozaServer) -> None:
    port = _port(gs)
    async with grpc.aio.insecure_channel(gs.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        for worker_id in ("w1", "w2"):
            await workers.Heartbeat(
                workers_pb2.HeartbeatRequest(
                    worker_id=worker_id, resources=workers_pb2.Resources(cpu=4, ram_mb=4000)
                )
            )

        async def two_alive() -> bool:
            return sample(await scrape(port), "gyoza_workers_alive") == 2

        await eventually(two_alive)
        await runs.CreateRun(R.CreateRunRequest(image="img", priority=7))
        claimed = await workers.ClaimRuns(
            workers_pb2.ClaimRunsRequest(
                worker_id="w1", max_runs=1, wait=duration_pb2.Duration(seconds=5)
            )
        )
        assert len(claimed.claims) == 1
    m = await scrape(port)
    assert sample(m, "gyoza_queue_wait_seconds_count", priority="7") == 1
    waited = sample(m, "gyoza_queue_wait_seconds_sum", priority="7")
    assert waited is not None and 0 <= waited < 30


async def test_metrics_are_off_without_a_port(sqlite_url: str) -> None:
    server = await launch(sqlite_url)
    try:
        assert server.metrics is None
    finally:
        await server.stop(0)


async def test_two_servers_in_one_process_count_separately(
    sqlite_gs: GyozaServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('other') / 'g.db'}"
    other = await _metrics_server(other_url)
    try:
        assert _port(other) != _port(sqlite_gs)
        async with grpc.aio.insecure_channel(other.target) as ch:
            await runs_pb2_grpc.RunServiceStub(ch).CreateRun(R.CreateRunRequest(image="img"))
        create = "gyoza.v1.RunService/CreateRun"
        mine = await scrape(_port(sqlite_gs))
        theirs = await scrape(_port(other))
        assert sample(mine, "gyoza_rpc_requests_total", method=create, code="OK") is None
        assert sample(theirs, "gyoza_rpc_requests_total", method=create, code="OK") == 1
    finally:
        await other.stop(0)


async def test_refused_calls_to_unknown_methods_share_one_label(sqlite_url: str) -> None:
    """With keys, a call to a method the server lacks is refused (UNAUTHENTICATED) before
    UNIMPLEMENTED; a client naming endless such methods must not grow the labels."""
    keys = ApiKeys.of([KeyEntry(Role.ADMIN, "admin-key-0123456789abcdef", "admin")])
    async with served(sqlite_url, api_keys=keys, **METRICS) as gs:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            for i in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await ch.unary_unary(f"/gyoza.v1.RunService/NoSuch{i}")(b"")
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert gs.metrics is not None
        m = await scrape(gs.metrics.port)
    assert sample(m, "gyoza_rpc_requests_total", method="unknown", code="UNAUTHENTICATED") == 3
    assert not [k for k in m if "NoSuch" in str(k)]
