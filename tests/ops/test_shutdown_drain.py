"""Graceful shutdown drains unary calls: one in flight when the stop begins completes OK if
it finishes within the grace period, while new calls are refused.

The slow call is a CreateRun waiting for SQLite's write lock, held by another connection
(the test's) until the stop is under way: a real reason for a unary call to take a while.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.server.store.sqlite_transactions import SQLiteTransactions
from tests.conftest import eventually, launch

GRACE_S = 30.0


def _waiting_for_lock(gs: GyozaServer) -> bool:
    transactions = gs.store.transactions
    assert isinstance(transactions, SQLiteTransactions)
    return transactions.waiting_for_lock


async def test_a_unary_call_in_flight_at_stop_completes_within_the_grace(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gyoza.db"
    gs = await launch(f"sqlite+aiosqlite:///{db}")
    stopping: asyncio.Task[None] | None = None
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            runs = runs_pb2_grpc.RunServiceStub(ch)
            first = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="first"))).run
            blocker.execute("BEGIN IMMEDIATE")  # the server's next write waits for this
            slow = asyncio.ensure_future(
                runs.CreateRun(runs_pb2.CreateRunRequest(image="slow"), timeout=60)
            )

            async def in_flight() -> bool:
                # The server's write batch waits for SQLite's lock (on a thread).
                return _waiting_for_lock(gs)

            await eventually(in_flight, timeout_s=20)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            stopping = asyncio.create_task(gs.stop(GRACE_S))

            async def refusing() -> bool:
                try:
                    await runs.GetRun(runs_pb2.GetRunRequest(id=first.id), timeout=5)
                except grpc.aio.AioRpcError as err:
                    return err.code() == grpc.StatusCode.UNAVAILABLE
                return False

            await eventually(refusing, timeout_s=20)  # new calls are refused meanwhile
            assert not slow.done()
            blocker.execute("ROLLBACK")
            created = (await slow).run
            assert (created.image, created.state) == ("slow", runs_pb2.RUN_STATE_PENDING)
            await stopping
            assert loop.time() - t0 < GRACE_S  # drained, not cut off by the grace period
    finally:
        blocker.close()
        if stopping is None:
            await gs.stop(0)
        else:
            await stopping
    # The call that was in flight committed: its run is in the database.
    check = sqlite3.connect(db)
    try:
        images = sorted(r[0] for r in check.execute("SELECT image FROM runs"))
    finally:
        check.close()
    assert images == ["first", "slow"]


async def test_health_is_not_serving_while_draining(tmp_path: Path) -> None:
    db = tmp_path / "gyoza.db"
    gs = await launch(f"sqlite+aiosqlite:///{db}")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            runs = runs_pb2_grpc.RunServiceStub(ch)
            blocker.execute("BEGIN IMMEDIATE")
            slow = asyncio.ensure_future(
                runs.CreateRun(runs_pb2.CreateRunRequest(image="slow"), timeout=60)
            )

            async def in_flight() -> bool:
                return _waiting_for_lock(gs)

            await eventually(in_flight, timeout_s=20)
            stopping = asyncio.create_task(gs.stop(GRACE_S))
            update = await asyncio.wait_for(watch.read(), 20)
            assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not slow.done()  # the unary call still drains after the Watch ended
            blocker.execute("ROLLBACK")
            assert (await slow).run.image == "slow"
            await asyncio.wait_for(stopping, GRACE_S / 2)
    finally:
        blocker.close()
        await gs.stop(0)


async def test_an_open_health_watch_ends_at_stop_without_holding_the_grace(
    sqlite_url: str,
) -> None:
    """grpc.aio would keep a Watch open for the whole grace period; the stop ends it."""
    gs = await launch(sqlite_url)
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            whole = health.Watch(health_pb2.HealthCheckRequest(service=""))
            unknown = health.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"))
            assert (await whole.read()).status == health_pb2.HealthCheckResponse.SERVING
            assert (await unknown.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            stopping = asyncio.create_task(gs.stop(GRACE_S))
            update = await asyncio.wait_for(whole.read(), 10)
            assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
            for call in (whole, unknown):
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await asyncio.wait_for(call.read(), 10)
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                assert ended.value.details() == "server shutting down"
            await asyncio.wait_for(stopping, 10)
            assert loop.time() - t0 < GRACE_S / 3  # not held for the grace period
    finally:
        await gs.stop(0)
