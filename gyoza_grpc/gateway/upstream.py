"""Every gRPC call the gateway makes, and nothing else: handlers ask a `Calls` for protobuf
messages and never touch a stub, so that moving the gateway onto another client is this file.

A call that fails raises grpc.aio.AioRpcError; the handlers' middleware turns it into HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from gyoza.v1 import (
    access_pb2,
    access_pb2_grpc,
    definitions_pb2,
    definitions_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
)

Metadata = tuple[tuple[str, str], ...]
# ListEvents answers at most this many events a call.
EVENTS_PAGE = 1000


@dataclass
class Upstream:
    """The gRPC side: one channel for every request, and the open event streams (cancelled
    on shutdown, so that they do not hold the gateway open)."""

    channel: grpc.aio.Channel
    timeout_s: float
    streams: set[grpc.aio.Call] = field(default_factory=set)
    runs: runs_pb2_grpc.RunServiceStub = field(init=False)
    definitions: definitions_pb2_grpc.DefinitionServiceStub = field(init=False)
    workers: workers_pb2_grpc.WorkerServiceStub = field(init=False)
    access: access_pb2_grpc.AccessServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.runs = runs_pb2_grpc.RunServiceStub(self.channel)
        self.definitions = definitions_pb2_grpc.DefinitionServiceStub(self.channel)
        self.workers = workers_pb2_grpc.WorkerServiceStub(self.channel)
        self.access = access_pb2_grpc.AccessServiceStub(self.channel)

    def calls(self, metadata: Metadata) -> Calls:
        return Calls(self, metadata)

    def end_streams(self) -> None:
        for call in list(self.streams):
            call.cancel()


@dataclass(frozen=True)
class Calls:
    """The calls of one HTTP request, all with its metadata (the caller's API key)."""

    up: Upstream
    metadata: Metadata

    @property
    def _opts(self) -> dict[str, object]:
        return {"timeout": self.up.timeout_s, "metadata": self.metadata}

    async def get_run(self, run_id: str) -> runs_pb2.Run:
        """The run with its current attempt's events."""
        req = runs_pb2.GetRunRequest(id=run_id, view=runs_pb2.RUN_VIEW_FULL)
        resp: runs_pb2.GetRunResponse = await self.up.runs.GetRun(req, **self._opts)
        return resp.run

    async def list_runs(
        self, req: runs_pb2.ListRunsRequest, *, with_events: bool = True
    ) -> runs_pb2.ListRunsResponse:
        req.view = runs_pb2.RUN_VIEW_FULL if with_events else runs_pb2.RUN_VIEW_BASIC
        resp: runs_pb2.ListRunsResponse = await self.up.runs.ListRuns(req, **self._opts)
        return resp

    async def create_run(self, req: runs_pb2.CreateRunRequest) -> runs_pb2.Run:
        return await self.with_events((await self.up.runs.CreateRun(req, **self._opts)).run)

    async def update_run(self, req: runs_pb2.UpdateRunRequest) -> runs_pb2.Run:
        return await self.with_events((await self.up.runs.UpdateRun(req, **self._opts)).run)

    async def cancel_run(self, run_id: str) -> runs_pb2.Run:
        req = runs_pb2.CancelRunRequest(id=run_id)
        return await self.with_events((await self.up.runs.CancelRun(req, **self._opts)).run)

    async def retry_run(self, run_id: str) -> runs_pb2.Run:
        req = runs_pb2.RetryRunRequest(id=run_id)
        return await self.with_events((await self.up.runs.RetryRun(req, **self._opts)).run)

    async def add_event(self, req: runs_pb2.AddEventRequest) -> runs_pb2.Run:
        return await self.with_events((await self.up.runs.AddEvent(req, **self._opts)).run)

    async def list_events(
        self, run_id: str, *, after: int | None = None, attempt: int = 0, limit: int = 0
    ) -> runs_pb2.ListEventsResponse:
        req = runs_pb2.ListEventsRequest(run_id=run_id, attempt=attempt, limit=limit)
        if after is not None:
            req.after = after
        resp: runs_pb2.ListEventsResponse = await self.up.runs.ListEvents(req, **self._opts)
        return resp

    async def with_events(self, run: runs_pb2.Run) -> runs_pb2.Run:
        """`run` (a write's answer, which has no events) with its current attempt's events as
        they were right after the write: those up to its last_seq, so an event another
        client adds meanwhile does not show."""
        if run.last_seq < 0 or run.events:
            return run
        after: int | None = None
        while True:
            page = await self.list_events(
                run.id, after=after, attempt=run.current_attempt, limit=EVENTS_PAGE
            )
            kept = [e for e in page.events if e.seq <= run.last_seq]
            run.events.extend(kept)
            if not page.has_more or len(kept) < len(page.events) or not page.events:
                return run
            after = page.events[-1].seq

    async def list_attempts(self, run_id: str) -> Sequence[runs_pb2.Attempt]:
        """Every attempt: the pages of ListAttempts (cut by the server's response budget)."""
        found: list[runs_pb2.Attempt] = []
        while True:
            after = found[-1].attempt if found else 0
            req = runs_pb2.ListAttemptsRequest(run_id=run_id, after=after)
            resp: runs_pb2.ListAttemptsResponse = await self.up.runs.ListAttempts(req, **self._opts)
            found.extend(resp.attempts)
            if not resp.has_more or not resp.attempts:
                return found

    def watch_events(self, run_id: str, after: int | None) -> grpc.aio.UnaryStreamCall:
        """The WatchEvents stream (no deadline), cancelled with the others at shutdown."""
        req = runs_pb2.WatchEventsRequest(run_id=run_id)
        if after is not None:
            req.after = after
        return self._stream(self.up.runs.WatchEvents(req, metadata=self.metadata))

    def watch_runs(self, req: runs_pb2.WatchRunsRequest) -> grpc.aio.UnaryStreamCall:
        """The WatchRuns stream (no deadline), cancelled with the others at shutdown."""
        return self._stream(self.up.runs.WatchRuns(req, metadata=self.metadata))

    def _stream(self, call: grpc.aio.UnaryStreamCall) -> grpc.aio.UnaryStreamCall:
        self.up.streams.add(call)
        call.add_done_callback(lambda _: self.up.streams.discard(call))
        return call

    async def check_run(self, run_id: str) -> None:
        """NOT_FOUND (or the key's refusal) unless the run exists: before a stream's 200."""
        req = runs_pb2.GetRunRequest(id=run_id, view=runs_pb2.RUN_VIEW_BASIC)
        await self.up.runs.GetRun(req, **self._opts)

    async def get_definition(self, name: str, version: str) -> definitions_pb2.Definition:
        req = definitions_pb2.GetDefinitionRequest(name=name, version=version)
        resp: definitions_pb2.GetDefinitionResponse = await self.up.definitions.GetDefinition(
            req, **self._opts
        )
        return resp.definition

    async def create_run_from_definition(
        self, req: definitions_pb2.CreateRunFromDefinitionRequest
    ) -> runs_pb2.Run:
        resp = await self.up.definitions.CreateRunFromDefinition(req, **self._opts)
        return await self.with_events(resp.run)

    async def list_definitions(
        self, limit: int, starting_after: str
    ) -> definitions_pb2.ListDefinitionsResponse:
        req = definitions_pb2.ListDefinitionsRequest(limit=limit, starting_after=starting_after)
        resp: definitions_pb2.ListDefinitionsResponse = await self.up.definitions.ListDefinitions(
            req, **self._opts
        )
        return resp

    async def list_definition_versions(
        self, name: str
    ) -> definitions_pb2.ListDefinitionVersionsResponse:
        req = definitions_pb2.ListDefinitionVersionsRequest(name=name)
        resp: definitions_pb2.ListDefinitionVersionsResponse = (
            await self.up.definitions.ListDefinitionVersions(req, **self._opts)
        )
        return resp

    async def list_workers(self) -> workers_pb2.ListWorkersResponse:
        req = workers_pb2.ListWorkersRequest()
        resp: workers_pb2.ListWorkersResponse = await self.up.workers.ListWorkers(req, **self._opts)
        return resp

    async def get_worker(self, worker_id: str) -> workers_pb2.Worker:
        req = workers_pb2.GetWorkerRequest(worker_id=worker_id)
        resp: workers_pb2.GetWorkerResponse = await self.up.workers.GetWorker(req, **self._opts)
        return resp.worker

    async def get_caller(self) -> access_pb2.GetCallerResponse:
        req = access_pb2.GetCallerRequest()
        resp: access_pb2.GetCallerResponse = await self.up.access.GetCaller(req, **self._opts)
        return resp
