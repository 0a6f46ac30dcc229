"""The client against `gyoza-grpc serve` as a real process: a watch that lives through a
SIGTERM and a SIGKILL of the server (restarted on the same port and database), a create whose
first attempt meets no server, 250 runs paged, the errors' reasons and violations. Each test
runs with the blocking and the async client."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from gyoza_grpc.client import (
    AsyncClient,
    Constraints,
    EventType,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RetryConfig,
    RetryPolicy,
    RunState,
)
from tests.client.conftest import Either, free_port, until
from tests.e2e.process import ServeProcess, serve

pytestmark = pytest.mark.e2e

# Keep trying for as long as a loaded machine may take to start a server (well past it).
THROUGH_RESTARTS = RetryConfig(max_attempts=400, max_backoff=timedelta(milliseconds=250))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server process for the tests that do not stop it."""
    with serve(tmp_path_factory.mktemp("shared"), "--port", "0") as process:
        yield process.wait_serving()
        assert process.stop() == 0, process.log


Start = Callable[[int, str], Awaitable[tuple[ServeProcess, str]]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """`start(port, log_name)`: `serve` on `port` over tmp_path/gyoza.db, waited for; every
    server still running at the end of the test is killed."""
    with ExitStack() as running:

        async def start_one(port: int, log_name: str) -> tuple[ServeProcess, str]:
            process = running.enter_context(
                serve(
                    tmp_path,
                    "--port",
                    str(port),
                    "--database-url",
                    f"sqlite+aiosqlite:///{tmp_path / 'gyoza.db'}",
                    "--shutdown-grace",
                    "1",
                    log_name=log_name,
                )
            )
            return process, await asyncio.to_thread(process.wait_serving)

        yield start_one


def logged(caplog: pytest.LogCaptureFixture, action: str) -> int:
    """How many of the client's log records are of this action."""
    return sum(getattr(r, "action", "") == action for r in caplog.records)


async def test_a_watch_lives_through_server_restarts(
    kind: str, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gyoza_grpc.client")
    port = free_port()
    first, target = await start(port, "first.log")
    async with (
        # The writer waits for the server to be back (its events are not safe to repeat).
        AsyncClient(target, wait_for_ready=True, timeout=timedelta(seconds=120)) as writer,
        Either(kind, target, watch_retry=THROUGH_RESTARTS) as client,
    ):
        run = await writer.create_run("img", retry_policy=RetryPolicy(max_attempts=2))
        watcher = client.start("watch_events", run.id)
        for n in range(5):
            await writer.add_event(run.id, EventType.INFO, msg=f"before {n}")
        await until(lambda: len(watcher.items) == 5)

        # An orderly stop: the server ends the stream with UNAVAILABLE, saying where to resume.
        assert await asyncio.to_thread(first.stop, signal.SIGTERM) == 0, first.log
        second, _ = await start(port, "second.log")
        await writer.add_event(run.id, EventType.STARTED, payload={"worker_id": "w"})
        for n in range(5):
            await writer.add_event(run.id, EventType.PROGRESS, progress=10 * n)
        await writer.add_event(run.id, EventType.FAILED, msg="lost")  # retried: goes on
        await until(lambda: len(watcher.items) == 13)

        # A crash: the connection just drops, nothing says goodbye.
        assert await asyncio.to_thread(second.stop, signal.SIGKILL) == -signal.SIGKILL
        await start(port, "third.log")
        await writer.add_event(run.id, EventType.STARTED, payload={"worker_id": "w"})
        await writer.add_event(run.id, EventType.COMPLETED, payload={"outputs": {"y": 1}})
        events = await watcher.wait(timeout_s=120)

    assert [e.seq for e in events] == list(range(15))  # each once, in order, none missing
    assert [e.type for e in events[-4:]] == [
        EventType.FAILED,
        EventType.RETRIED,
        EventType.STARTED,
        EventType.COMPLETED,
    ]
    assert events[-1].state == RunState.COMPLETED
    assert "resume with after=4" in caplog.text  # what the server said as it shut down
    assert logged(caplog, "resume_watch") >= 2


async def test_a_create_that_first_meets_no_server_makes_one_run(
    kind: str, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gyoza_grpc.client")
    port = free_port()
    image = f"img-{uuid.uuid4()}"
    async with Either(
        kind, f"127.0.0.1:{port}", retry=THROUGH_RESTARTS, timeout=timedelta(seconds=120)
    ) as client:
        create = asyncio.ensure_future(client.call("create_run", image, inputs={"x": 1}))
        # The first attempts find nothing listening; only then does the server start.
        await until(
            lambda: sum(r.__dict__.get("action") == "retry_call" for r in caplog.records) >= 2
        )
        assert not create.done()
        await start(port, "late.log")
        run = await asyncio.wait_for(create, 120)
        assert run.image == image and run.request_id
        listed = await client.collect("list_runs", image=image)
    assert [r.id for r in listed] == [run.id]


async def test_250_runs_are_each_listed_once(kind: str, shared: str) -> None:
    image = f"img-{uuid.uuid4()}"
    async with AsyncClient(shared) as writer:
        made = [(await writer.create_run(image)).id for _ in range(250)]
    async with Either(kind, shared) as client:
        every = await client.collect("list_runs", image=image)
        small_pages = await client.pages("list_runs", image=image, page_size=40)
    assert [r.id for r in every] == made[::-1]  # newest first, each once
    assert [r.id for p in small_pages for r in p.items] == made[::-1]
    assert [len(p.items) for p in small_pages] == [40] * 6 + [10]


async def test_errors_carry_their_reason_and_violations(kind: str, shared: str) -> None:
    async with Either(kind, shared) as client:
        with pytest.raises(InvalidArgument) as bad:
            await client.call("create_run", "img", constraints=Constraints(cpu=-1), priority=5)
        assert bad.value.reason == "INVALID_ARGUMENT"
        assert list(bad.value.violations) == [
            FieldViolation("constraints.cpu", "must be >= 0, got -1")
        ]
        with pytest.raises(NotFound) as missing:
            await client.call("cancel_run", "nope")
        assert (missing.value.reason, missing.value.metadata) == (
            "RUN_NOT_FOUND",
            {"run_id": "nope"},
        )
        run = await client.call("create_run", "img")
        await client.call("cancel_run", run.id)
        with pytest.raises(FailedPrecondition) as locked:
            await client.call("add_event", run.id, EventType.INFO, msg="late")
        assert locked.value.reason == "RUN_LOCKED"
        assert "CANCELLED" in locked.value.message
