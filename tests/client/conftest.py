"""One test body for both clients: `Either` makes each call through `AsyncClient` or through
the blocking `Client`, by the `kind` parameter.

The blocking client's calls run in a worker thread (asyncio.to_thread), so the test's event
loop, which may be running the server, keeps running while they wait.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gyoza_grpc.client import AsyncClient, Client
from gyoza_grpc.server import GyozaServer
from tests.conftest import served

KINDS = ("async", "blocking")


class Collector:
    """Items of a pager or a stream as they arrive (`items`), until `wait()`."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.task: asyncio.Future[None] | None = None

    async def wait(self, timeout_s: float = 60.0) -> list[Any]:
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout_s)
        return self.items


class Either:
    """An AsyncClient or a Client with the same options, called the same way."""

    def __init__(self, kind: str, target: str | None = None, **options: Any) -> None:
        self.kind = kind
        self.client: AsyncClient | Client = (
            AsyncClient(target, **options) if kind == "async" else Client(target, **options)
        )

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.client, name)
        if self.kind == "async":
            return await method(*args, **kwargs)
        return await asyncio.to_thread(method, *args, **kwargs)

    def start(self, name: str, *args: Any, take: int | None = None, **kwargs: Any) -> Collector:
        """Iterate `name(*args, **kwargs)` (a pager or a stream) in the background, keeping
        each item; stop after `take` items (else at the end)."""
        collector = Collector()
        method = getattr(self.client, name)
        if self.kind == "async":

            async def run() -> None:
                async for item in method(*args, **kwargs):
                    collector.items.append(item)
                    if take is not None and len(collector.items) >= take:
                        break

            collector.task = asyncio.ensure_future(run())
        else:

            def run_blocking() -> None:
                for item in method(*args, **kwargs):
                    collector.items.append(item)
                    if take is not None and len(collector.items) >= take:
                        break

            collector.task = asyncio.ensure_future(asyncio.to_thread(run_blocking))
        return collector

    async def collect(self, name: str, *args: Any, take: int | None = None, **kw: Any) -> list[Any]:
        return await self.start(name, *args, take=take, **kw).wait()

    async def pages(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Every page of a pager."""
        pager = getattr(self.client, name)(*args, **kwargs)
        if self.kind == "async":
            return [page async for page in pager.pages()]
        return await asyncio.to_thread(lambda: list(pager.pages()))

    async def close(self) -> None:
        if isinstance(self.client, AsyncClient):
            await self.client.close()
        else:
            await asyncio.to_thread(self.client.close)

    async def __aenter__(self) -> Either:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    """An in-process server over SQLite (the client tests are about the client)."""
    async with served(sqlite_url) as gs:
        yield gs


@pytest.fixture
async def client(kind: str, server: GyozaServer) -> AsyncIterator[Either]:
    async with Either(kind, server.target) as either:
        yield either


def free_port() -> int:
    """A port nothing listens on now (for a server started later on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait until `check()` is true, failing after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.02)
