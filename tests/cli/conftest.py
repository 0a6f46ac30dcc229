"""The CLI as a process (`python -m gyoza_grpc runs ...`) against a real in-process server.

The server runs in the test's event loop, so the CLI is started with asyncio's subprocess
API (a blocking `subprocess.run` would freeze the server it talks to). A server interceptor
records each call's metadata, so tests can see what the CLI sent.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2_grpc
from gyoza_grpc.server import GyozaServer
from tests.conftest import launch
from tests.e2e.process import server_env

CLI_TIMEOUT_S = 60.0


class MetadataRecorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Remembers (method, metadata) of every call the server receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        self.calls.append((details.method, metadata))
        return await continuation(details)

    def keys_sent_to(self, method: str) -> list[str]:
        return [md.get("x-api-key", "") for m, md in self.calls if m.endswith("/" + method)]


@dataclass
class CliServer:
    server: GyozaServer
    recorder: MetadataRecorder
    channel: grpc.aio.Channel
    runs: runs_pb2_grpc.RunServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.runs = runs_pb2_grpc.RunServiceStub(self.channel)

    @property
    def target(self) -> str:
        return self.server.target


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
async def srv(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CliServer]:
    recorder = MetadataRecorder()
    real_server = grpc.aio.server

    def recording_server(*args: Any, interceptors: Any = (), **kwargs: Any) -> Any:
        return real_server(*args, interceptors=[*interceptors, recorder], **kwargs)

    monkeypatch.setattr(grpc.aio, "server", recording_server)
    gs = await launch(sqlite_url)
    try:
        async with grpc.aio.insecure_channel(gs.target) as channel:
            yield CliServer(gs, recorder, channel)
    finally:
        await gs.stop(0)


def cli_env(target: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = server_env({"GYOZA_TARGET": target})
    env.pop("FORCE_COLOR", None)  # the tests check what a pipe gets: no ANSI codes
    env.update(extra or {})
    return env


async def start_cli(
    target: str, *args: str, env: Mapping[str, str] | None = None, stdin: bool = False
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gyoza_grpc",
        *args,
        env=cli_env(target, env),
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, stdin: bytes | None = None) -> Result:
    out, err = await asyncio.wait_for(proc.communicate(stdin), CLI_TIMEOUT_S)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def cli(
    target: str, *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
) -> Result:
    """Run `gyoza-grpc ARGS` to its end."""
    proc = await start_cli(target, *args, env=env, stdin=stdin is not None)
    return await finish(proc, stdin)
