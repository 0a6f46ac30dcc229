"""A real headless Chromium (Debian's, driven by Playwright) against a real server and the
gateway serving the dashboard on a loopback port, all in the test's event loop.

Without Chromium or the playwright package these tests skip, saying why; under CI=true that is
a failure (.ci/run installs Debian's chromium). Each test saves screenshots of the pages it saw
under ARTIFACTS (git-ignored), named in the summary at the end of the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web

from gyoza.v1 import (
    definitions_pb2_grpc,
    runs_pb2_grpc,
    workers_pb2_grpc,
)
from gyoza_grpc.domain.access import ApiKeys
from gyoza_grpc.gateway.app import make_app
from gyoza_grpc.gateway.runner import GatewayRunner
from gyoza_grpc.server import GyozaServer
from tests import databases
from tests.conftest import launch

CHROMIUM_ENV = "GYOZA_TEST_CHROMIUM"
ARTIFACTS = (
    Path(
        os.environ.get("GYOZA_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
    ).resolve()
    / "dashboard"
)
VIEWPORT = {"width": 1400, "height": 900}
_saved: list[Path] = []


def chromium_path() -> str:
    """Debian's Chromium (or GYOZA_TEST_CHROMIUM); skip without it, fail under CI=true."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    problem = ""
    if not Path(path).exists():
        problem = f"no Chromium at {path} (apt-get install chromium, or set {CHROMIUM_ENV})"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -e '.[dev]')"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests: {problem} (CI=true: that is a failure)")
        pytest.skip(f"browser tests: {problem}")
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _saved:
        terminalreporter.write_line(f"dashboard screenshots ({len(_saved)}): {ARTIFACTS}")


@dataclass
class Stack:
    """The server, the gateway in front of it, and stubs to the server."""

    server: GyozaServer
    base: str  # the gateway's http://127.0.0.1:PORT
    channel: grpc.aio.Channel
    runs: runs_pb2_grpc.RunServiceStub
    workers: workers_pb2_grpc.WorkerServiceStub
    definitions: definitions_pb2_grpc.DefinitionServiceStub


async def stack(tmp_path: Path, keys: ApiKeys | None = None) -> AsyncIterator[Stack]:
    overrides: dict[str, Any] = {"watch_heartbeat_s": 1.0}
    if keys is not None:
        overrides["api_keys"] = keys
    gs = await launch(databases.sqlite_url(tmp_path), **overrides)
    runner = GatewayRunner(make_app(gs.target), handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with grpc.aio.insecure_channel(gs.target) as ch:
            yield Stack(
                gs,
                f"http://{host}:{port}",
                ch,
                runs_pb2_grpc.RunServiceStub(ch),
                workers_pb2_grpc.WorkerServiceStub(ch),
                definitions_pb2_grpc.DefinitionServiceStub(ch),
            )
    finally:
        await runner.cleanup()
        await gs.stop(0)


@pytest.fixture
async def open_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A server without API keys."""
    async for s in stack(tmp_path):
        yield s


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    path = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (its own session storage); any script error fails the test."""
    context = await browser.new_context(viewport=VIEWPORT)
    pg = await context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    try:
        yield pg
    finally:
        await context.close()
    assert not errors, f"script errors on the page: {errors}"


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    _saved.append(path)
    return path
