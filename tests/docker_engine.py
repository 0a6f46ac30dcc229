"""The container engine for the docker tests: the Docker Engine API that DOCKER_HOST (or the
local socket) reaches, with the test images of scripts/build-test-images.sh on it.

Without an engine (or without aiodocker, or busybox to build the images from) the tests skip,
saying why; under CI=true that is a failure, not a skip (.ci/run starts dockerd).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-test-images.sh"
PREFIX = os.environ.get("GYOZA_TEST_IMAGE_PREFIX", "gyoza-test")
_checked: str | None = None  # "" when ready, else why not


def image(name: str) -> str:
    """A test image, e.g. image("echo") -> gyoza-test/echo:1."""
    return f"{PREFIX}/{name}:1"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing container engine is a failure)")
    pytest.skip(reason)


async def _engine_answers() -> str:
    try:
        import aiodocker
    except ImportError:
        return "the docker tests need aiodocker (the dev extra: ./scripts/dev-setup.sh)"
    try:
        docker = aiodocker.Docker()
    except ValueError as err:
        return f"no container engine: {err}"
    try:
        async with asyncio.timeout(5):
            await docker.version()
    except Exception as err:
        return f"the container engine does not answer ({err}); start dockerd (see docs/workers.md)"
    finally:
        await docker.close()
    return ""


def _build_images() -> str:
    if shutil.which("docker") is None:
        return "the docker CLI is missing (apt-get install docker.io)"
    done = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        return f"scripts/build-test-images.sh failed: {done.stderr.strip() or done.stdout}"
    return ""


def require_engine() -> None:
    """Skip (or, under CI, fail) unless the engine answers and the test images are on it."""
    global _checked
    if _checked is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            reason = asyncio.run(_engine_answers())
        else:  # called inside a running loop: ask from a thread of its own
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                reason = pool.submit(lambda: asyncio.run(_engine_answers())).result()
        _checked = reason or _build_images()
    if _checked:
        _unavailable(_checked)


def engine_socket() -> str | None:
    """The engine's Unix socket path, when it is reached through one."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.removeprefix("unix://") if host.startswith("unix://") else None


class SocketProxy:
    """A Unix socket that forwards to the engine's while `up`: an engine the test can take
    away (connections refused, open ones cut) and give back."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def up(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            self._pipes.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                pass

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            self._pipes.discard(task)


def require_python_image() -> str:
    """gyoza-test/python:1 (scripts/build-test-images.sh --python: too slow to build here)."""
    require_engine()
    ref = image("python")
    found = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False)
    if found.returncode != 0:
        _unavailable(f"{ref} is missing: run scripts/build-test-images.sh --python")
    return ref
