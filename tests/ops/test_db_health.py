"""Health follows the database: NOT_SERVING while PostgreSQL refuses the server's database,
SERVING when it accepts it again; RPCs meanwhile answer UNAVAILABLE, not INTERNAL.

The outage is made on a per-test database (ALLOW_CONNECTIONS false, then its backends
terminated), never by stopping the shared PostgreSQL server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import exc
from sqlalchemy.engine import make_url

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.server import SERVICE_NAMES
from gyoza_grpc.server.store.db_errors import is_database_unreachable, translate
from tests import databases
from tests.conftest import eventually, launch
from tests.ops.helpers import sample, scrape

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await databases.create_postgres_database()
    try:
        yield url
    finally:
        await _allow_connections(url, True)
        await databases.drop_postgres_database(url)


async def _allow_connections(url: str, allow: bool) -> None:
    name = make_url(url).database
    base = databases.postgres_base_url()
    await databases.admin(base, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
    if not allow:
        await databases.admin(
            base,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )


@pytest.mark.postgres
async def test_health_flips_on_a_database_outage_and_back(pg_url: str) -> None:
    gs = await launch(pg_url, db_health_interval_s=0.1, metrics_port=0, metrics_refresh_s=0.1)
    assert gs.metrics is not None
    try:
        async with grpc.aio.insecure_channel(gs.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            runs = runs_pb2_grpc.RunServiceStub(ch)
            run = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))).run
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING

            await _allow_connections(pg_url, False)
            update = await asyncio.wait_for(watch.read(), 30)
            assert update.status == NOT_SERVING
            for name in SERVICE_NAMES:
                check = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert check.status == NOT_SERVING, name
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await runs.GetRun(runs_pb2.GetRunRequest(id=run.id))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            assert sample(await scrape(gs.metrics.port), "gyoza_database_up") == 0

            await _allow_connections(pg_url, True)
            update = await asyncio.wait_for(watch.read(), 30)
            assert update.status == SERVING
            got = await runs.GetRun(runs_pb2.GetRunRequest(id=run.id))
            assert got.run.id == run.id

            async def up() -> bool:
                return sample(await scrape(gs.metrics.port), "gyoza_database_up") == 1

            await eventually(up)
            watch.cancel()
    finally:
        await gs.stop(0)


async def test_stop_cancels_and_awaits_the_monitor(sqlite_url: str) -> None:
    gs = await launch(sqlite_url, db_health_interval_s=0.05, metrics_port=0)
    assert gs.background and not any(t.done() for t in gs.background)
    await gs.stop(0)
    assert all(t.cancelled() for t in gs.background)


class _FakeOrig(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _dbapi(message: str, sqlstate: str) -> exc.DBAPIError:
    return exc.DBAPIError("SELECT 1", {}, _FakeOrig(message, sqlstate))


@pytest.mark.parametrize(
    ("err", "unreachable"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (TimeoutError(), True),
        (exc.OperationalError("BEGIN", {}, Exception("database is locked")), True),
        (_dbapi('database "x" is not currently accepting connections', "55000"), True),
        (_dbapi('database "x" does not exist', "3D000"), True),
        (_dbapi("terminating connection due to administrator command", "57P01"), True),
        (_dbapi("sorry, too many clients already", "53300"), True),
        (_dbapi("could not obtain lock on row", "55P03"), False),
        (exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (_dbapi("syntax error", "42601"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_errors_mean_the_database_is_unreachable(
    err: BaseException, unreachable: bool
) -> None:
    assert is_database_unreachable(err) is unreachable


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (exc.TimeoutError("QueuePool limit reached"), "DATABASE_BUSY"),
        (_dbapi("canceling statement due to statement timeout", "57014"), "DATABASE_TIMEOUT"),
        (_dbapi("could not obtain lock on row", "55P03"), "DATABASE_TIMEOUT"),
        (
            _dbapi("terminating connection due to administrator command", "57P01"),
            "DATABASE_UNAVAILABLE",
        ),
        (ConnectionRefusedError(111, "Connect call failed"), "DATABASE_UNAVAILABLE"),
        (_dbapi("syntax error", "42601"), None),
        (ValueError("a bug"), None),
    ],
)
def test_one_list_decides_the_unavailable_reason(err: BaseException, reason: str | None) -> None:
    mapped = translate(err)
    assert (mapped.reason if mapped is not None else None) == reason
