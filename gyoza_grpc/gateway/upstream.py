"""Every gRPC call the gateway makes, and nothing else: handlers ask a `Calls` for protobuf
messages and never touch a stub.

The calls go through one `gyoza_grpc.client.AsyncClient` (its channel: keepalive, quick
reconnection, answers up to 64 MiB), seen with each caller's API key (`with_api_key`): each
call's deadline, the retries of the requests that are safe to send twice (reads, and creates
that carry a request_id) and the errors come from it. A call that fails raises the server's
GyozaError class; the handlers' middleware turns it into HTTP (errors.from_rpc).

WatchEvents and WatchRuns are the stub's own streams, not the client's resuming watch: the
browser's EventSource resumes (Last-Event-ID, or a fresh list for the runs feed), and
heartbeats become SSE comments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from gyoza.v1 import access_pb2, definitions_pb2, runs_pb2, workers_pb2
from gyoza_grpc.client import AsyncClient
from gyoza_grpc.client.channel import API_KEY_HEADER

Metadata = tuple[tuple[str, str], ...]
# ListEvents answers at most this many events a call.
EVENTS_PAGE = 1000


@dataclass
class Upstream:
    """The gRPC side: one client (one channel) for every request, and the open event streams
    (cancelled on shutdown, so that they do not hold the gateway open)."""

    client: AsyncClient
    streams: set[grpc.aio.Call] = field(default_factory=set)

    def calls(self, metadata: Metadata) -> Calls:
        """The calls of a request with this metadata (its `x-api-key`, if any)."""
        key = dict(metadata).get(API_KEY_HEADER, "")
        return Calls(self, self.client.with_api_key(key))

    def end_streams(self) -> None:
        for call in list(self.streams):
            call.cancel()


@dataclass(frozen=True)
class Calls:
    """The calls of one HTTP request, all with its API key (`client` is the caller's view)."""

    up: Upstream
    client: AsyncClient

    async def get_run(self, run_id: str) -> runs_pb2.Run:
        """The run with its current attempt's events."""
        return await self.client.get_run(run_id, with_events=True)

    async def list_runs(
        self, req: runs_pb2.ListRunsRequest, *, with_events: bool = True
    ) -> runs_pb2.ListRunsResponse:
        req.view = runs_pb2.RUN_VIEW_FULL if with_events else runs_pb2.RUN_VIEW_BASIC
        return await self.client.call(self.client.run_service.ListRuns, req, retry=True)

    async def count_runs(self, req: runs_pb2.CountRunsRequest) -> runs_pb2.CountRunsResponse:
        return await self.client.call(self.client.run_service.CountRuns, req, retry=True)

    async def create_run(self, req: runs_pb2.CreateRunRequest) -> runs_pb2.Run:
        # With a request_id a repeat returns the first run; without, it could make a second.
        resp = await self.client.call(
            self.client.run_service.CreateRun, req, retry=bool(req.request_id)
        )
        return await self.with_events(resp.run)

    async def update_run(self, req: runs_pb2.UpdateRunRequest) -> runs_pb2.Run:
        resp = await self.client.call(self.client.run_service.UpdateRun, req)
        return await self.with_events(resp.run)

    async def cancel_run(self, run_id: str) -> runs_pb2.Run:
        return await self.with_events(await self.client.cancel_run(run_id))

    async def retry_run(self, run_id: str) -> runs_pb2.Run:
        return await self.with_events(await self.client.retry_run(run_id))

    async def add_event(self, req: runs_pb2.AddEventRequest) -> runs_pb2.Run:
        resp = await self.client.call(self.client.run_service.AddEvent, req)
        return await self.with_events(resp.run)

    async def list_events(
        self, run_id: str, *, after: int | None = None, attempt: int = 0, limit: int = 0
    ) -> runs_pb2.ListEventsResponse:
        req = runs_pb2.ListEventsRequest(run_id=run_id, attempt=attempt, limit=limit)
        if after is not None:
            req.after = after
        return await self.client.call(self.client.run_service.ListEvents, req, retry=True)

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
        """Every attempt (the client reads the pages the server's response budget cut)."""
        return await self.client.list_attempts(run_id)

    def watch_events(self, run_id: str, after: int | None) -> grpc.aio.UnaryStreamCall:
        """The WatchEvents stream (no deadline), cancelled with the others at shutdown."""
        req = runs_pb2.WatchEventsRequest(run_id=run_id)
        if after is not None:
            req.after = after
        return self._stream(self.client.run_service.WatchEvents(req, metadata=self.client.metadata))

    def watch_runs(self, req: runs_pb2.WatchRunsRequest) -> grpc.aio.UnaryStreamCall:
        """The WatchRuns stream (no deadline), cancelled with the others at shutdown."""
        return self._stream(self.client.run_service.WatchRuns(req, metadata=self.client.metadata))

    def _stream(self, call: grpc.aio.UnaryStreamCall) -> grpc.aio.UnaryStreamCall:
        """A stub's own stream: its failure is a grpc.aio.AioRpcError (errors.from_rpc reads
        it too)."""
        self.up.streams.add(call)
        call.add_done_callback(lambda _: self.up.streams.discard(call))
        return call

    async def check_run(self, run_id: str) -> None:
        """NOT_FOUND (or the key's refusal) unless the run exists: before a stream's 200."""
        await self.client.get_run(run_id)

    async def get_definition(self, name: str, version: str) -> definitions_pb2.Definition:
        return await self.client.get_definition(name, version=version)

    async def create_run_from_definition(
        self, req: definitions_pb2.CreateRunFromDefinitionRequest
    ) -> runs_pb2.Run:
        resp = await self.client.call(
            self.client.definition_service.CreateRunFromDefinition,
            req,
            retry=bool(req.request_id),
        )
        return await self.with_events(resp.run)

    async def list_definitions(
        self, limit: int, starting_after: str
    ) -> definitions_pb2.ListDefinitionsResponse:
        req = definitions_pb2.ListDefinitionsRequest(limit=limit, starting_after=starting_after)
        return await self.client.call(
            self.client.definition_service.ListDefinitions, req, retry=True
        )

    async def list_definition_versions(
        self, name: str
    ) -> definitions_pb2.ListDefinitionVersionsResponse:
        req = definitions_pb2.ListDefinitionVersionsRequest(name=name)
        return await self.client.call(
            self.client.definition_service.ListDefinitionVersions, req, retry=True
        )

    async def list_workers(self) -> workers_pb2.ListWorkersResponse:
        req = workers_pb2.ListWorkersRequest()
        return await self.client.call(self.client.worker_service.ListWorkers, req, retry=True)

    async def get_worker(self, worker_id: str) -> workers_pb2.Worker:
        return await self.client.get_worker(worker_id)

    async def get_caller(self) -> access_pb2.GetCallerResponse:
        return await self.client.get_caller()
