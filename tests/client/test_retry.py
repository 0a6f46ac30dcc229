"""Retries: the pure backoff, and which calls are tried again after UNAVAILABLE (a scripted
RunService on a real grpc.aio server answers UNAVAILABLE on demand)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.client import NO_RETRY, AsyncClient, RetryConfig, Unavailable
from tests.client.conftest import Either, until
from tests.conftest import TEST_SERVER_OPTIONS

FAST = RetryConfig(initial_backoff=timedelta(milliseconds=1), max_backoff=timedelta(0))


@pytest.mark.parametrize(
    ("failures", "rand", "expected"),
    [
        (1, 0.5, 0.1),  # the first wait: initial_backoff
        (2, 0.5, 0.2),
        (4, 0.5, 0.8),
        (7, 0.5, 5.0),  # capped by max_backoff
        (9, 0.5, 5.0),
        (1, 0.0, 0.08),  # jitter 0.2: 0.8x ...
        (1, 0.999999, 0.12),  # ... to 1.2x
        (10, 0.5, None),  # max_attempts 10: no attempt after the tenth
        (11, 0.5, None),
    ],
)
def test_backoff(failures: int, rand: float, expected: float | None) -> None:
    got = RetryConfig().backoff_s(failures, rand)
    assert got == (None if expected is None else pytest.approx(expected, rel=1e-5))


def test_backoff_past_a_float_and_bad_configs() -> None:
    huge = RetryConfig(max_attempts=5000, multiplier=10.0)
    assert huge.backoff_s(4000, 0.5) == 5.0  # 10.0 ** 3999 overflows; the cap holds
    assert RetryConfig(initial_backoff=timedelta(0)).backoff_s(3, 0.5) == 0.0
    assert NO_RETRY.backoff_s(1, 0.5) is None
    for bad in (
        {"max_attempts": 0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"initial_backoff": timedelta(seconds=-1)},
    ):
        with pytest.raises(ValueError):
            RetryConfig(**bad)
    with pytest.raises(ValueError):
        RetryConfig().backoff_s(0, 0.5)


class Flaky(runs_pb2_grpc.RunServiceServicer):
    """Answers UNAVAILABLE the first N times for GetRun "flaky-N" (always for "down"), and
    always for CancelRun and CreateRun; counts every attempt by request."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.request_ids: list[str] = []
        self.keys: list[str | None] = []

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: Any) -> Any:
        self.attempts[f"get {request.id}"] += 1
        self.keys.append(dict(context.invocation_metadata() or ()).get("x-api-key"))
        fails = 10**9 if request.id == "down" else int(request.id.rpartition("-")[2])
        if self.attempts[f"get {request.id}"] <= fails:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return runs_pb2.GetRunResponse(run=runs_pb2.Run(id=request.id))

    async def CancelRun(self, request: runs_pb2.CancelRunRequest, context: Any) -> Any:
        self.attempts["cancel"] += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    async def CreateRun(self, request: runs_pb2.CreateRunRequest, context: Any) -> Any:
        self.attempts["create"] += 1
        self.request_ids.append(request.request_id)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, Flaky]]:
    servicer = Flaky()
    server = grpc.aio.server(options=TEST_SERVER_OPTIONS)
    runs_pb2_grpc.add_RunServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


async def test_safe_calls_are_tried_again_and_others_are_not(
    kind: str, flaky: tuple[str, Flaky]
) -> None:
    target, servicer = flaky
    async with Either(kind, target, retry=FAST) as client:
        assert (await client.call("get_run", "flaky-3")).id == "flaky-3"
        assert servicer.attempts["get flaky-3"] == 4

        with pytest.raises(Unavailable, match="restarting"):
            await client.call("get_run", "down")
        assert servicer.attempts["get down"] == FAST.max_attempts

        with pytest.raises(Unavailable):
            await client.call("cancel_run", "r")  # a repeat could be refused RUN_LOCKED
        assert servicer.attempts["cancel"] == 1

        with pytest.raises(Unavailable):  # with its own key: every attempt sends that key
            await client.call("create_run", "img")
        assert servicer.attempts["create"] == FAST.max_attempts
        assert len(set(servicer.request_ids)) == 1 and servicer.request_ids[0]

        with pytest.raises(Unavailable):  # no key: a repeat could create a second run
            await client.call("create_run", "img", request_id="")
        assert servicer.attempts["create"] == FAST.max_attempts + 1

    async with Either(kind, target, retry=NO_RETRY) as client:
        with pytest.raises(Unavailable):
            await client.call("get_run", "flaky-1")
        assert servicer.attempts["get flaky-1"] == 1


async def test_a_request_made_by_hand_gets_the_same_key_retries_and_errors(
    flaky: tuple[str, Flaky],
) -> None:
    target, servicer = flaky
    async with AsyncClient(target, retry=FAST) as client:
        view = client.with_api_key("caller-key")
        request = runs_pb2.GetRunRequest(id="flaky-2")
        got = await view.call(view.run_service.GetRun, request, retry=True)
        assert got.run.id == "flaky-2" and servicer.attempts["get flaky-2"] == 3
        assert servicer.keys == ["caller-key"] * 3
        with pytest.raises(Unavailable, match="restarting"):  # not repeated unless told
            await client.call(client.run_service.GetRun, runs_pb2.GetRunRequest(id="flaky-1"))
        assert servicer.attempts["get flaky-1"] == 1 and servicer.keys[-1] is None


async def test_the_deadline_covers_every_attempt(kind: str, flaky: tuple[str, Flaky]) -> None:
    target, servicer = flaky
    patient = RetryConfig(max_attempts=10_000, initial_backoff=timedelta(milliseconds=50))
    async with Either(kind, target, retry=patient, timeout=timedelta(seconds=1)) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):  # the last failure, not DEADLINE_EXCEEDED
            await client.call("get_run", "down")
        assert time.monotonic() - started < 20  # a bound for a busy machine: ~1 s expected
    assert servicer.attempts["get down"] >= 2


async def test_cancelling_a_call_that_waits_to_try_again_ends_it(
    flaky: tuple[str, Flaky],
) -> None:
    target, servicer = flaky
    slow = RetryConfig(initial_backoff=timedelta(seconds=30), max_backoff=timedelta(seconds=30))
    async with Either("async", target, retry=slow, timeout=None) as client:
        task = asyncio.ensure_future(client.call("get_run", "down"))
        await until(lambda: servicer.attempts["get down"] >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
