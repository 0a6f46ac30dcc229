"""The bounded executor and one attempt's life, against a fake server client: events in
order with the attempt, failures, stops and fences, shutdown, and the bound on concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
import pytest

from gyoza_grpc.domain.placement import Capacity, Gpu
from gyoza_grpc.worker.capacity import LocalCapacity
from gyoza_grpc.worker.context import RunContext
from gyoza_grpc.worker.execution import Handler
from gyoza_grpc.worker.executor import Executor
from tests.worker.helpers import FakeClient, Sent, make_claim, rpc_error, wait_for

DEFAULT_CAPACITY = Capacity(cpu=4, ram_mb=1000, gpus=(Gpu(0, 1000),))


def executor(
    client: FakeClient,
    handler: Handler,
    *,
    max_concurrency: int = 4,
    capacity: Capacity = DEFAULT_CAPACITY,
    lost: list[int] | None = None,
) -> Executor:
    return Executor(
        client,  # type: ignore[arg-type]
        "w1",
        handler,
        LocalCapacity(capacity),
        max_concurrency,
        retry_delays_s=(0.01, 0.01),
        on_lost_report=lambda: None if lost is None else lost.append(1),
    )


async def finished(ex: Executor) -> None:
    await wait_for(lambda: len(ex) == 0)


async def test_a_coroutine_handler_reports_started_notes_and_completed() -> None:
    client = FakeClient()

    async def handler(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        ctx.progress(10)
        ctx.info("working")
        await asyncio.sleep(0.01)
        ctx.progress(90)
        return {"y": inputs["x"] * 2}

    ex = executor(client, handler)
    ex.submit(make_claim("r", 3, inputs={"x": 2}, gpu_id=0, vram_mb=100))
    await finished(ex)
    assert client.types() == ["STARTED", "PROGRESS", "INFO", "PROGRESS", "COMPLETED"]
    assert {e.attempt for e in client.events} == {3}
    assert client.events[0].payload == {"worker_id": "w1", "gpu_id": 0}
    assert [e.progress for e in client.events if e.type == "PROGRESS"] == [10, 90]
    assert client.events[-1].payload == {"outputs": {"y": 4}}


async def test_a_plain_function_runs_in_a_thread_and_its_exception_fails_the_run() -> None:
    client = FakeClient()
    threads: list[str] = []

    def handler(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        ctx.progress(50)
        raise RuntimeError("disk full")

    ex = executor(client, handler)
    ex.submit(make_claim("r"))
    await finished(ex)
    assert threads and threads[0] != threading.main_thread().name
    assert client.types() == ["STARTED", "PROGRESS", "FAILED"]
    assert client.events[-1].payload == {"error_message": "disk full", "error_type": "RuntimeError"}


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        (None, ("COMPLETED", {"outputs": {}})),
        ([1, 2], ("FAILED", {"error_message": "the handler returned list, not a JSON object"})),
    ],
)
async def test_what_a_handler_returns(outputs: Any, expected: tuple[str, Any]) -> None:
    client = FakeClient()
    ex = executor(client, lambda inputs, ctx: outputs)
    ex.submit(make_claim("r"))
    await finished(ex)
    assert (client.events[-1].type, client.events[-1].payload) == expected


@pytest.mark.parametrize(
    ("outputs", "why"),
    [
        ({"when": object()}, "not JSON"),
        # A Struct holds a number as a double: the server would keep another number.
        ({"id": 2**60}, "outputs.id: 1152921504606846976 is past 2**53"),
    ],
)
async def test_outputs_json_cannot_carry_fail_the_run(outputs: Any, why: str) -> None:
    client = FakeClient()
    ex = executor(client, lambda inputs, ctx: outputs)
    ex.submit(make_claim("r"))
    await finished(ex)
    assert client.events[-1].type == "FAILED"
    assert why in client.events[-1].payload["error_message"]


async def test_never_more_than_max_concurrency_or_the_cpus() -> None:
    client = FakeClient()
    running: set[str] = set()
    peak = {"runs": 0, "cpu": 0}
    cpus = {f"r{i}": 1 + i % 2 for i in range(10)}

    async def handler(inputs: dict[str, Any], ctx: RunContext) -> None:
        running.add(ctx.run_id)
        peak["runs"] = max(peak["runs"], len(running))
        peak["cpu"] = max(peak["cpu"], sum(cpus[r] for r in running))
        await asyncio.sleep(0.02)
        running.discard(ctx.run_id)

    ex = executor(client, handler, max_concurrency=3, capacity=Capacity(cpu=4))
    queue = [make_claim(r, cpu=c) for r, c in cpus.items()]
    while queue:  # what the claim loop does
        room = await asyncio.wait_for(ex.wait_for_room(), 5)
        assert 1 <= room <= 3
        for _ in range(min(room, len(queue))):
            ex.submit(queue.pop(0))
    await finished(ex)
    assert client.types().count("COMPLETED") == 10
    assert peak["runs"] <= 3 and peak["cpu"] <= 4


async def test_a_stop_cancels_a_coroutine_handler_and_sends_nothing_more() -> None:
    client = FakeClient()
    seen: list[bool] = []
    started = asyncio.Event()

    async def handler(inputs: dict[str, Any], ctx: RunContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            seen.append(ctx.cancelled)

    ex = executor(client, handler)
    ex.submit(make_claim("r", 2))
    await started.wait()
    assert ex.held() == [("r", 2)]
    assert not ex.stop("r", 1, "superseded")  # another attempt: not this one
    assert ex.stop("r", 2, "cancelled")
    await finished(ex)
    assert seen == [True]
    assert client.types() == ["STARTED"]


async def test_a_stopped_thread_keeps_its_resources_until_it_returns() -> None:
    client = FakeClient()
    release = threading.Event()
    saw_cancel = threading.Event()

    def handler(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        if ctx.wait_cancelled(5):
            saw_cancel.set()
        release.wait(5)
        return {"late": True}

    ex = executor(client, handler, capacity=Capacity(cpu=1))
    ex.submit(make_claim("r", cpu=1))
    await wait_for(lambda: client.types() == ["STARTED"])
    ex.stop("r", 1, "cancelled")
    await wait_for(saw_cancel.is_set)
    await asyncio.sleep(0.05)
    assert len(ex) == 1 and ex.capacity.free.cpu == 0  # the thread still runs
    release.set()
    await finished(ex)
    assert ex.capacity.free.cpu == 1
    assert client.types() == ["STARTED"]  # its result is dropped


async def test_a_fenced_note_stops_the_attempt() -> None:
    client = FakeClient()
    cancelled = asyncio.Event()

    async def handler(inputs: dict[str, Any], ctx: RunContext) -> None:
        client.fail_next.append(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "stale"))
        ctx.progress(5)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    ex = executor(client, handler)
    ex.submit(make_claim("r"))
    await finished(ex)
    assert cancelled.is_set() and client.types() == ["STARTED"]


async def test_the_final_report_survives_a_late_stop() -> None:
    client = FakeClient()
    reporting = asyncio.Event()
    proceed = asyncio.Event()

    async def slow_final(sent: Sent) -> None:
        if sent.type == "COMPLETED":
            reporting.set()
            await proceed.wait()

    client.before_event = slow_final
    ex = executor(client, lambda inputs, ctx: {"ok": True})
    ex.submit(make_claim("r"))
    await reporting.wait()
    ex.stop("r", 1, "run is COMPLETED")
    await asyncio.sleep(0.01)
    proceed.set()
    await ex.finals.wait(1)
    assert client.types() == ["STARTED", "COMPLETED"]


async def test_drain_lets_short_runs_finish_and_fails_the_rest() -> None:
    client = FakeClient()

    async def handler(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        await asyncio.sleep(inputs["s"])
        return {"slept": inputs["s"]}

    ex = executor(client, handler)
    ex.submit(make_claim("short", inputs={"s": 0.05}))
    ex.submit(make_claim("long", inputs={"s": 60}))
    await wait_for(lambda: client.types().count("STARTED") == 2)
    t0 = time.monotonic()
    assert await ex.drain(0.5) == 1
    assert 0.4 < time.monotonic() - t0 < 3
    assert client.types("short") == ["STARTED", "COMPLETED"]
    assert client.types("long") == ["STARTED", "FAILED"]
    assert client.events[-1].payload == {
        "error_message": "worker w1 stopped before the run finished"
    }


async def test_drain_ends_early_when_forced() -> None:
    client = FakeClient()

    async def handler(inputs: dict[str, Any], ctx: RunContext) -> None:
        await asyncio.sleep(60)

    ex = executor(client, handler)
    ex.submit(make_claim("r"))
    await wait_for(lambda: client.types() == ["STARTED"])
    force = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, force.set)
    t0 = time.monotonic()
    assert await ex.drain(30, force) == 1
    assert time.monotonic() - t0 < 3


async def test_a_claim_that_can_never_fit_fails_and_a_lost_start_is_flagged() -> None:
    client = FakeClient()
    lost: list[int] = []
    ex = executor(client, lambda inputs, ctx: {}, capacity=Capacity(cpu=1), lost=lost)
    ex.submit(make_claim("big", cpu=2))
    await finished(ex)
    assert client.types() == ["FAILED"]
    assert "cannot run it" in client.events[0].payload["error_message"]
    client.fail_next.extend([rpc_error(grpc.StatusCode.UNAVAILABLE)] * 3)
    ex.submit(make_claim("r"))
    await finished(ex)
    assert lost == [1] and client.types("r") == []
