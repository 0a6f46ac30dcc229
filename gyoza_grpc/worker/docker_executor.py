"""The docker executor: each attempt runs the run's image in a container of its own, on a
Docker Engine API (dockerd, or podman's socket), through aiodocker.

An attempt's container goes through:
- staging, while the run is ASSIGNED (`stage`): the image is pulled as `pull` says (`missing`:
  only when the engine lacks it; `always`; `never`), with an INFO "pulling IMAGE" event first,
  then the container is created (`container_spec`). A pull or create the engine refuses fails
  the run with the engine's reason; an engine that does not answer hands the run back
  (`NotReady`) and stops the worker's claims until it answers again (`engine.py`).
- running (`__call__`): stdout and stderr are attached, the container started, the inputs
  written to stdin and stdin closed; stdout is read up to the outputs cap and stderr line by
  line (`op_io`, the contract every executor shares). Exit 0 completes the run; an OOM kill
  (`State.OOMKilled`) fails it as "out of memory (limit N MB)"; any other exit fails it with
  the code and the tail of stderr.
- stopping, when the attempt is cancelled (a stop order, lease loss, shutdown): SIGTERM, then
  SIGKILL after `stop_grace_s` (the engine's stop), and always, however the attempt ends:
- removal. Containers are labelled with the attempt and the worker id; at start (and after an
  engine outage) `sweep` removes the worker's containers that belong to no attempt it runs, so
  none outlives a worker that was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.stream import Stream
from yarl import URL

from gyoza_grpc.worker.capacity import Key
from gyoza_grpc.worker.container_spec import (
    LABEL_ATTEMPT,
    LABEL_RUN_ID,
    LABEL_WORKER_ID,
    container_config,
    container_name,
)
from gyoza_grpc.worker.context import RunContext
from gyoza_grpc.worker.execution import NotReady, Say
from gyoza_grpc.worker.op_io import (
    DEFAULT_MAX_OUTPUT_BYTES,
    OpFailed,
    OutputBuffer,
    StderrReader,
    exit_message,
    over_cap_message,
    parse_outputs,
)

log = logging.getLogger("gyoza_grpc.worker.docker")

PullPolicy = Literal["missing", "always", "never"]
PULL_POLICIES: tuple[PullPolicy, ...] = ("missing", "always", "never")
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# Engine calls that should take a moment (create, inspect, remove); pulls and waits have none.
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5)
_CHECK_TIMEOUT_S = 5.0
_DOCKER_UNREACHABLE = 900  # aiodocker's status for a connection that failed
_STDOUT, _STDERR = 1, 2


class ContainerFailed(OpFailed):
    """The container (or its image) failed the run: the message says how."""


class EngineUnreachable(NotReady):
    """The engine did not answer: nothing can run now."""


def _is_unreachable(err: BaseException) -> bool:
    if isinstance(err, aiodocker.DockerError):
        return err.status == _DOCKER_UNREACHABLE
    return isinstance(err, aiohttp.ClientConnectionError | TimeoutError | OSError)


def _engine_message(err: BaseException) -> str:
    if isinstance(err, aiodocker.DockerError):
        return err.message.strip()
    return str(err) or type(err).__name__


class DockerHandler:
    """Runs each attempt in a container of the run's image (see the module notes)."""

    def __init__(
        self,
        *,
        docker_host: str | None = None,
        pull: PullPolicy = "missing",
        network: str = "none",
        stop_grace_s: float = 10.0,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        pull_timeout_s: float = 1800.0,
        info_per_s: float = 2.0,
        info_burst: int = 20,
    ) -> None:
        if pull not in PULL_POLICIES:
            raise ValueError(f"pull must be one of {', '.join(PULL_POLICIES)}, got {pull!r}")
        if stop_grace_s < 0:
            raise ValueError("stop_grace_s must not be negative")
        self.docker_host = docker_host or None
        self.pull = pull
        self.network = network
        self.stop_grace_s = stop_grace_s
        self.labels = dict(labels or {})
        self.env = dict(env or {})
        self.max_output_bytes = max_output_bytes
        self.pull_timeout_s = pull_timeout_s
        self.info_per_s = info_per_s
        self.info_burst = info_burst
        self._docker: aiodocker.Docker | None = None
        self._staged: dict[Key, DockerContainer] = {}
        # Removals started as soon as a container exited, awaited when the attempt ends.
        self._removing: dict[Key, asyncio.Task[None]] = {}
        self._not_ready = ""

    @property
    def engine_address(self) -> str:
        return self.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.docker_host, timeout=_CALL_TIMEOUT)
        return self._docker

    def _unreachable(self, err: BaseException) -> EngineUnreachable:
        """Remember that the engine does not answer (the worker stops claiming at once)."""
        self._not_ready = (
            f"docker engine unreachable at {self.engine_address}: {_engine_message(err)}"
        )
        return EngineUnreachable(self._not_ready)

    # -- the engine, for the worker (engine.Engine) ---------------------------------------

    @property
    def not_ready_reason(self) -> str:
        return self._not_ready

    async def check(self) -> str:
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT_S):
                await self._client().version()
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError) as err:
            self._unreachable(err)
        except ValueError as err:  # no DOCKER_HOST and no local socket at all
            self._not_ready = f"no docker engine: {err}"
        else:
            self._not_ready = ""
        return self._not_ready

    async def sweep(self, worker_id: str, keep: set[Key]) -> int:
        """Remove this worker's containers that belong to no attempt in `keep`."""
        docker = self._client()
        filters = json.dumps({"label": [f"{LABEL_WORKER_ID}={worker_id}"]})
        try:
            found = await docker.containers.list(all=True, filters=filters)
        except aiodocker.DockerError as err:
            if _is_unreachable(err):
                raise self._unreachable(err) from err
            raise
        removed = 0
        for container in found:
            labels = container["Labels"] or {}
            try:
                key = (labels.get(LABEL_RUN_ID, ""), int(labels.get(LABEL_ATTEMPT, "0")))
            except ValueError:
                key = ("", 0)
            if key in keep:
                continue
            log.warning(
                "removing container %s of run %s attempt %s: left by an earlier process of "
                "worker %s",
                container.id[:12],
                *key,
                worker_id,
                extra={"action": "remove_orphan", "run_id": key[0], "attempt": key[1]},
            )
            with contextlib.suppress(aiodocker.DockerError):  # gone meanwhile
                await container.delete(force=True)
                removed += 1
        return removed

    async def close(self) -> None:
        if self._removing:
            await asyncio.wait(list(self._removing.values()), timeout=_CALL_TIMEOUT.total)
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    # -- staging: the image and the container ---------------------------------------------

    @contextlib.asynccontextmanager
    async def stage(self, ctx: RunContext, say: Say) -> AsyncIterator[None]:
        key = (ctx.run_id, ctx.attempt)
        container: DockerContainer | None = None
        try:
            container = await self._create(ctx, say)
            self._staged[key] = container
            yield
        finally:
            self._staged.pop(key, None)
            removing = self._removing.pop(key, None) or asyncio.ensure_future(
                self._remove(ctx, container)
            )
            # However the attempt ended (a second cancellation included): no container stays.
            await asyncio.shield(removing)

    async def _create(self, ctx: RunContext, say: Say) -> DockerContainer:
        claim = ctx.claim
        image = claim.image
        if not image:
            raise ContainerFailed("the run names no image")
        docker = self._client()
        config = container_config(
            claim, ctx.worker_id, network=self.network, labels=self.labels, env=self.env
        )
        if self.pull == "always":
            await self._pull(image, say)
        for tries_left in (1, 0):
            try:
                return await docker.containers.create(config, name=container_name(claim))
            except aiodocker.DockerError as err:
                if _is_unreachable(err):
                    raise self._unreachable(err) from err
                missing = err.status == 404
                if missing and self.pull == "missing" and tries_left:
                    await self._pull(image, say)
                    continue
                if missing and self.pull == "never":
                    raise ContainerFailed(
                        f"image {image!r} is not on the engine and the worker's pull policy "
                        f"is 'never': {_engine_message(err)}"
                    ) from err
                raise ContainerFailed(
                    f"cannot create a container of image {image!r}: {_engine_message(err)}"
                ) from err
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                raise self._unreachable(err) from err
        raise AssertionError("unreachable")

    async def _pull(self, image: str, say: Say) -> None:
        await say(f"pulling {image}")
        log.info("pulling %s", image, extra={"action": "pull_image", "image": image})
        try:
            async with asyncio.timeout(self.pull_timeout_s):
                await self._client().images.pull(image)
        except TimeoutError as err:
            raise ContainerFailed(
                f"cannot pull image {image!r}: no answer within {self.pull_timeout_s:g}s"
            ) from err
        except aiodocker.DockerError as err:
            if _is_unreachable(err):
                raise self._unreachable(err) from err
            raise ContainerFailed(f"cannot pull image {image!r}: {_engine_message(err)}") from err
        except (aiohttp.ClientError, OSError) as err:
            raise self._unreachable(err) from err

    async def _remove(self, ctx: RunContext, container: DockerContainer | None) -> None:
        try:
            if container is not None:
                await container.delete(force=True)
                return
            # Staging ended without a container id: a create in flight may have landed.
            docker = self._client()
            labels = [
                f"{LABEL_RUN_ID}={ctx.run_id}",
                f"{LABEL_ATTEMPT}={ctx.attempt}",
                f"{LABEL_WORKER_ID}={ctx.worker_id}",
            ]
            for found in await docker.containers.list(
                all=True, filters=json.dumps({"label": labels})
            ):
                await found.delete(force=True)
        except aiodocker.DockerError as err:
            if err.status == 404:
                return  # already gone
            # Left for the sweep at the next start (or when the engine answers again).
            log.warning(
                "could not remove the container of run %s attempt %s: %s",
                ctx.run_id,
                ctx.attempt,
                _engine_message(err),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            log.warning(
                "could not remove the container of run %s attempt %s: %s",
                ctx.run_id,
                ctx.attempt,
                _engine_message(err),
            )

    # -- running --------------------------------------------------------------------------

    def _attach(self, container: DockerContainer, *, stdin: bool) -> Stream:
        """An attach stream to the created (not yet started) container: stdin alone, or
        stdout and stderr (no TTY, so they arrive apart)."""
        params = {
            "stream": 1,
            "stdin": int(stdin),
            "stdout": int(not stdin),
            "stderr": int(not stdin),
            "logs": 0,
        }
        url = URL(f"containers/{container.id}/attach").with_query(params)

        async def setup() -> tuple[URL, bytes | None, bool]:
            return url, None, False

        return Stream(self._client(), setup)

    async def __call__(self, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        container = self._staged.get((ctx.run_id, ctx.attempt))
        if container is None:
            raise RuntimeError("the docker executor runs only attempts it staged")
        stderr = StderrReader(ctx, info_per_s=self.info_per_s, info_burst=self.info_burst)
        stdout = OutputBuffer(self.max_output_bytes)
        try:
            code = await self._run(container, inputs, stdout, stderr)
            oom = False
            if code != 0 or ctx.claim.constraints.ram_mb:
                oom = await _oom_killed(container, code)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(container))
            raise
        except aiodocker.DockerError as err:
            if _is_unreachable(err):
                raise self._lost(err) from err
            raise ContainerFailed(f"the container engine refused: {_engine_message(err)}") from err
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise self._lost(err) from err
        finally:
            # At once, beside the final report (which may take long when the server is away).
            key = (ctx.run_id, ctx.attempt)
            self._removing[key] = asyncio.ensure_future(self._remove(ctx, container))
        stderr.finish()
        tail = stderr.tail_text()
        if oom:
            limit = ctx.claim.constraints.ram_mb
            cap = f" (limit {limit} MB)" if limit else ""
            raise ContainerFailed(f"out of memory{cap}" + (f": {tail}" if tail else ""))
        if stdout.over:
            raise ContainerFailed(over_cap_message(self.max_output_bytes))
        if code != 0:
            raise ContainerFailed(exit_message("container", code, tail))
        return parse_outputs(stdout.value(), ContainerFailed)

    def _lost(self, err: BaseException) -> ContainerFailed:
        self._unreachable(err)
        return ContainerFailed(
            f"lost the docker engine at {self.engine_address} while the container ran: "
            f"{_engine_message(err)}"
        )

    async def _run(
        self,
        container: DockerContainer,
        inputs: dict[str, Any],
        stdout: OutputBuffer,
        stderr: StderrReader,
    ) -> int:
        """Start the container with its inputs, read its output to the end; its exit code."""
        output = self._attach(container, stdin=False)
        feed = self._attach(container, stdin=True)
        async with output, feed:
            try:
                await container.start()
            except aiodocker.DockerError as err:
                if _is_unreachable(err):
                    raise
                raise ContainerFailed(
                    f"cannot start the container: {_engine_message(err)}"
                ) from err
            with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
                # An op that exits without reading its stdin is not an error by itself.
                await feed.write_in(json.dumps(inputs).encode() + b"\n")
            await feed.close()  # closes the container's stdin (StdinOnce)
            while (message := await output.read_out()) is not None:
                if message.stream == _STDERR:
                    stderr.feed(message.data)
                elif message.stream == _STDOUT and not stdout.add(message.data):
                    await self._stop(container)  # past the cap: its outputs are lost anyway
                    break
        result = await container.wait()
        return int(result.get("StatusCode", -1))

    async def _stop(self, container: DockerContainer) -> None:
        """SIGTERM, then SIGKILL after the grace (the engine's own stop)."""
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, OSError):
            await container.stop(t=math.ceil(self.stop_grace_s))


# The engine learns of an OOM kill and of the container's exit by separate events, in either
# order: a container killed by SIGKILL (exit 137) may show OOMKilled after its exit, later on a
# busy engine. Only an exit 137 the worker did not cause waits (about 3 s at most).
_OOM_SETTLE_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


async def _oom_killed(container: DockerContainer, code: int) -> bool:
    """Whether the kernel killed a process of the container for memory (State.OOMKilled)."""
    for delay in (0.0, *(_OOM_SETTLE_S if code == 137 else ())):
        await asyncio.sleep(delay)
        if (await container.show())["State"].get("OOMKilled"):
            return True
    return False
