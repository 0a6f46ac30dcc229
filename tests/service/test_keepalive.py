"""Client keepalive pings never end a quiet watch (issue 16, docs/deploy.md#keepalive).

With grpc's default ping policy a client pinging more often than the server allowed (every 10 s
here before) got GOAWAY "too_many_pings" after two strikes, which grpc-js reports on its open
streams as RESOURCE_EXHAUSTED, a code clients do not retry (grpcio: UNAVAILABLE "Too many
pings"). Now a client pinging every 5 s keeps a quiet stream open indefinitely, and one pinging
every second is tolerated too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.server import GyozaServer
from tests.conftest import served

R = runs_pb2
QUIET_S = 60.0


def pinging_every(ms: int) -> list[tuple[str, int]]:
    """A client that pings every `ms` on a stream that only receives (grpc clients stop
    after two pings without data unless max_pings_without_data is 0)."""
    return [
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@pytest.fixture
async def quiet_server(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    """No watch heartbeat within the test: the streams carry no data at all (keepalive is
    the transport's business: one backend is enough)."""
    async with served(sqlite_url, watch_heartbeat_s=600) as gs:
        yield gs


@pytest.mark.slow
async def test_quiet_watches_survive_client_keepalive_pings(quiet_server: GyozaServer) -> None:
    """Two quiet watches for 60 s, one on a client pinging every 5 s, one every second: both
    still open, and each then gets the event added to its run."""
    async with (
        grpc.aio.insecure_channel(quiet_server.target, options=pinging_every(5000)) as polite,
        grpc.aio.insecure_channel(quiet_server.target, options=pinging_every(1000)) as eager,
    ):
        watches = []
        for channel in (polite, eager):
            runs = runs_pb2_grpc.RunServiceStub(channel)
            run = (await runs.CreateRun(R.CreateRunRequest(image="img"))).run
            call = runs.WatchEvents(R.WatchEventsRequest(run_id=run.id, after=run.last_seq))
            await asyncio.wait_for(call.initial_metadata(), 5)
            watches.append((runs, run, call, asyncio.create_task(call.read())))
        try:
            await asyncio.sleep(QUIET_S)
            for runs, run, _call, reading in watches:
                assert not reading.done(), reading.exception() or reading.result()
                await runs.AddEvent(
                    R.AddEventRequest(run_id=run.id, type=R.EVENT_TYPE_INFO, msg="still here")
                )
                got = await asyncio.wait_for(reading, 10)
                assert got.event.msg == "still here"
        finally:
            for _, _, call, reading in watches:
                reading.cancel()
                call.cancel()
