"""Two `gyoza-grpc serve` processes over one PostgreSQL database: a watcher on replica B gets
every event written through replica A, in order, quickly; a claim long-polling on B wakes when
a run is created on A; killing both listeners' connections only delays delivery."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy.engine import make_url

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from gyoza_grpc.server.streams.pg_wakeup import LISTENER_APPLICATION_NAME
from tests import databases
from tests.e2e.process import serve

pytestmark = pytest.mark.e2e

S = runs_pb2
W = workers_pb2
# Generous for a loaded 2-core machine; the measured figures are printed.
EVENT_BOUND_S = 2.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    databases.postgres_base_url()  # skip (or fail under CI) without a server
    url = asyncio.run(databases.create_postgres_database())
    try:
        yield url
    finally:
        asyncio.run(databases.drop_postgres_database(url))


def _serve_args(url: str, catchup_s: float) -> tuple[str, ...]:
    return ("--port", "0", "--database-url", url, "--catchup-interval", str(catchup_s))


def _watch(target: str, run_id: str, got: list[tuple[int, float]], stop_after: int) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = runs_pb2_grpc.RunServiceStub(channel)
        for item in stub.WatchEvents(S.WatchEventsRequest(run_id=run_id), timeout=60):
            if item.HasField("event"):
                got.append((item.event.seq, time.monotonic()))
                if item.event.seq >= stop_after:
                    return


def _terminate_listeners(url: str) -> int:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(False)

    async def run() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE $1",
                f"{LISTENER_APPLICATION_NAME}%",
            )
            return len(rows)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_two_serve_processes_share_events_and_claims(tmp_path: Path, pg_url: str) -> None:
    # A slow catch-up: what arrives quickly came through NOTIFY.
    with (
        serve(tmp_path, *_serve_args(pg_url, 600), log_name="a.log") as pa,
        serve(tmp_path, *_serve_args(pg_url, 0.5), log_name="b.log") as pb,
    ):
        a, b = pa.wait_serving(), pb.wait_serving()
        with grpc.insecure_channel(a) as ch_a, grpc.insecure_channel(b) as ch_b:
            runs_a = runs_pb2_grpc.RunServiceStub(ch_a)
            workers_b = workers_pb2_grpc.WorkerServiceStub(ch_b)
            run = runs_a.CreateRun(S.CreateRunRequest(image="img"), timeout=10).run
            n = 30
            got: list[tuple[int, float]] = []
            watcher = threading.Thread(target=_watch, args=(b, run.id, got, n + 1), daemon=True)
            watcher.start()
            time.sleep(0.5)  # let B subscribe (events before that arrive through its backlog)
            sent: dict[int, float] = {}
            runs_a.AddEvent(S.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_STARTED), timeout=10)
            for i in range(1, n + 1):
                req = S.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_PROGRESS, progress=i)
                resp = runs_a.AddEvent(req, timeout=10)
                sent[resp.event.seq] = time.monotonic()
                time.sleep(0.02)

            # Both listeners lose their connections; an event written meanwhile still arrives.
            assert _terminate_listeners(pg_url) == 2
            req = S.AddEventRequest(run_id=run.id, type=S.EVENT_TYPE_INFO, msg="after the kill")
            runs_a.AddEvent(req, timeout=10)
            watcher.join(15)
            assert not watcher.is_alive(), f"B's watcher got {[s for s, _ in got]}"
            assert [seq for seq, _ in got] == list(range(n + 2))
            lat = sorted((t - sent[seq]) * 1000 for seq, t in got if seq in sent)
            print(
                f"\ntwo processes, WatchEvents on B for writes on A: n={len(lat)} "
                f"p50={statistics.median(lat):.1f}ms max={lat[-1]:.1f}ms"
            )
            assert lat[-1] < EVENT_BOUND_S * 1000

            # A long-poll on B wakes when A creates a run (B's listener has reconnected by now,
            # or its catch-up finds the run: either way long before the 30 s poll ends).
            workers_b.Heartbeat(
                W.HeartbeatRequest(worker_id="w1", resources=W.Resources(cpu=4, ram_mb=4000)),
                timeout=10,
            )
            wait = duration_pb2.Duration(seconds=30)
            poll = workers_b.ClaimRuns.future(
                W.ClaimRunsRequest(worker_id="w1", wait=wait), timeout=40
            )
            time.sleep(0.5)
            created_at = time.monotonic()
            new = runs_a.CreateRun(S.CreateRunRequest(image="img"), timeout=10).run
            claims = poll.result(timeout=15).claims
            woke_ms = (time.monotonic() - created_at) * 1000
            print(f"two processes, ClaimRuns on B woken by CreateRun on A: {woke_ms:.1f}ms")
            assert [c.run.id for c in claims] == [new.id]
            assert woke_ms < EVENT_BOUND_S * 1000
        assert pa.stop() == 0 and pb.stop() == 0, pa.log + pb.log
    assert "Traceback" not in pa.log + pb.log, pa.log + pb.log
    assert "wake-up listener" in pb.log  # it noticed the lost connection and reconnected
