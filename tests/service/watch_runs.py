"""A WatchRuns stream read in the background, for tests: the runs (and resyncs) it sent."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests.conftest import eventually


class RunsWatcher:
    def __init__(self, runs: runs_pb2_grpc.RunServiceStub, **filters: Any) -> None:
        self.call = runs.WatchRuns(runs_pb2.WatchRunsRequest(**filters))
        self.items: list[runs_pb2.WatchRunsResponse] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunsWatcher:
        # The headers come once the server has subscribed: from then on nothing is missed.
        await self.call.initial_metadata()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.call.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for item in self.call:
                self.items.append(item)
        except grpc.aio.AioRpcError as err:
            self.error = err

    def runs(self, run_id: str | None = None) -> list[runs_pb2.Run]:
        return [
            i.run
            for i in self.items
            if i.HasField("run") and (run_id is None or i.run.id == run_id)
        ]

    def latest(self, run_id: str) -> runs_pb2.Run | None:
        """The newest copy of the run received (the highest last_seq, then updated_at)."""
        copies = self.runs(run_id)
        if not copies:
            return None
        return max(copies, key=lambda r: (r.last_seq, r.updated_at.ToNanoseconds()))

    def resyncs(self) -> list[runs_pb2.RunsResync]:
        return [i.resync for i in self.items if i.HasField("resync")]

    def heartbeats(self) -> int:
        return sum(1 for i in self.items if i.HasField("heartbeat"))

    async def until(self, run_id: str, state: int, *, timeout_s: float = 5.0) -> runs_pb2.Run:
        """Wait for a copy of the run in `state`."""

        async def seen() -> bool:
            latest = self.latest(run_id)
            return latest is not None and latest.state == state

        await eventually(seen, timeout_s=timeout_s)
        latest = self.latest(run_id)
        assert latest is not None
        return latest
