"""Shared fixtures: a real grpc.aio server on loopback over a real database, and stubs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2_grpc
from gyoza_grpc.server import GyozaServer, start_server
from gyoza_grpc.server.config import ServerConfig
from gyoza_grpc.server.ops.log_format import ACCESS_LOGGER
from tests import databases

TEST_SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    databases.drop_template()


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs `gyoza-grpc serve`'s main() installs configure_logging's handler on
    pytest's capture of that test's stderr; left in place, every later log line would go to a
    closed file (and print a traceback each). Put the root logger back after every test."""
    root = logging.getLogger()
    access = logging.getLogger(ACCESS_LOGGER)
    saved, level, access_level = root.handlers[:], root.level, access.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)
    access.setLevel(access_level)


@pytest.fixture(params=databases.BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, migrated database of each backend."""
    if request.param == "sqlite":
        yield databases.sqlite_url(tmp_path)
        return
    url = await databases.create_postgres_database()
    try:
        yield url
    finally:
        await databases.drop_postgres_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return databases.sqlite_url(tmp_path)


async def launch(database_url: str, **overrides: Any) -> GyozaServer:
    config = ServerConfig(host="127.0.0.1", port=0, database_url=database_url, **overrides)
    return await start_server(config, extra_options=TEST_SERVER_OPTIONS)


@asynccontextmanager
async def served(database_url: str, **overrides: Any) -> AsyncIterator[GyozaServer]:
    """`launch(...)` for the block, stopped (grace 0) however it ends: for fixtures."""
    gs = await launch(database_url, **overrides)
    try:
        yield gs
    finally:
        await gs.stop(0)


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[GyozaServer]:
    """A server over each backend; a module where the database plays no part overrides
    `database_url` with `sqlite_url` (see tests/ops/test_access_log.py)."""
    async with served(database_url) as gs:
        yield gs


@pytest.fixture
async def channel(server: GyozaServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture
def runs(channel: grpc.aio.Channel) -> runs_pb2_grpc.RunServiceStub:
    return runs_pb2_grpc.RunServiceStub(channel)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 5.0, interval_s: float = 0.02
) -> None:
    """Wait until `check()` is true, failing after `timeout_s`: never sleep-and-hope."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
