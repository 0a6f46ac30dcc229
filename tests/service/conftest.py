"""A server shared by every test of a module, on each backend.

A fresh PostgreSQL database costs about 0.3 s; modules whose tests each make their own runs
and never look at all runs (state machine, events, validation) share one server per backend
instead. Such a module sets `pytestmark = pytest.mark.asyncio(loop_scope="module")` and
overrides `runs` with `shared_runs`. Tests that count or page through every run keep the
function-scoped `runs` of tests/conftest.py (a fresh database each).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from gyoza.v1 import runs_pb2_grpc
from tests import databases
from tests.conftest import launch


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=databases.BACKENDS)
async def shared_channel(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a server (and database) shared by every test of the module."""
    if request.param == "sqlite":
        url = databases.sqlite_url(tmp_path_factory.mktemp("shared"))
    else:
        url = await databases.create_postgres_database()
    try:
        gs = await launch(url)
        try:
            async with grpc.aio.insecure_channel(gs.target) as ch:
                yield ch
        finally:
            await gs.stop(0)
    finally:
        if request.param != "sqlite":
            await databases.drop_postgres_database(url)


@pytest.fixture(scope="module")
def shared_runs(shared_channel: grpc.aio.Channel) -> runs_pb2_grpc.RunServiceStub:
    return runs_pb2_grpc.RunServiceStub(shared_channel)
