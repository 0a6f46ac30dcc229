"""The heartbeat task: registration, interval from the lease, stop orders, retries."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gyoza_grpc.client import GyozaError
from gyoza_grpc.domain.placement import Capacity
from gyoza_grpc.worker.heartbeat import Heartbeat
from tests.worker.helpers import FakeClient, beat, rpc_error, wait_for


def heartbeat(client: FakeClient, stops: list[tuple[str, int, str]], **kw: float) -> Heartbeat:
    def stop(run_id: str, attempt: int, reason: str) -> bool:
        stops.append((run_id, attempt, reason))
        return True

    return Heartbeat(
        client,  # type: ignore[arg-type]
        "w",
        Capacity(cpu=1),
        ["t"],
        running=lambda: [("a", 1), ("b", 2)],
        stop=stop,
        **kw,  # type: ignore[arg-type]
    )


async def test_the_first_beat_registers_and_stop_orders_are_carried_out() -> None:
    client = FakeClient(replies=[beat(lease_s=30, stop=[("b", 2, "cancelled")])])
    stops: list[tuple[str, int, str]] = []
    hb = heartbeat(client, stops)
    assert hb.interval_s == 1.0  # before the lease is known: the retry pace
    await hb.beat()
    assert hb.registered.is_set() and hb.lease_s == 30 and hb.interval_s == 10
    assert client.heartbeats == [[("a", 1), ("b", 2)]]
    assert stops == [("b", 2, "cancelled")]
    assert heartbeat(client, stops, interval_s=0.5).interval_s == 0.5


async def test_the_loop_retries_while_unreachable_and_answers_a_poke() -> None:
    client = FakeClient(
        replies=[
            rpc_error(grpc.StatusCode.UNAVAILABLE),
            beat(lease_s=600),  # next beat in 200 s unless poked
        ]
    )
    hb = heartbeat(client, [], retry_s=0.05)
    task = asyncio.create_task(hb.run())
    try:
        await asyncio.wait_for(hb.registered.wait(), 2)
        assert len(client.heartbeats) == 2
        hb.poke()
        await wait_for(lambda: len(client.heartbeats) == 3, timeout_s=2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_refused_registration_ends_the_loop() -> None:
    client = FakeClient(replies=[rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "cpu")])
    with pytest.raises(GyozaError, match="cpu"):
        await asyncio.wait_for(heartbeat(client, []).run(), 2)
