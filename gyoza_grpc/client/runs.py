"""RunService's calls: create, read, list, change and watch runs and their events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2

from gyoza.v1 import runs_pb2
from gyoza_grpc.client.convert import JsonObject, to_struct, to_timestamp
from gyoza_grpc.client.enums import EventType, RunState
from gyoza_grpc.client.paging import AsyncPager, Page
from gyoza_grpc.client.transport import Transport
from gyoza_grpc.client.watching import Resumable

RUNS_PAGE_SIZE = 100  # the most ListRuns answers at once
EVENTS_PAGE_SIZE = 1000  # the most ListEvents answers at once


def new_request_id() -> str:
    """An idempotency key for a create that the caller gave none."""
    return str(uuid.uuid4())


def _view(with_events: bool) -> runs_pb2.RunView.ValueType:
    return runs_pb2.RUN_VIEW_FULL if with_events else runs_pb2.RUN_VIEW_BASIC


def _set_filters(
    request: runs_pb2.ListRunsRequest | runs_pb2.CountRunsRequest,
    state: RunState | None,
    definition: str,
    image: str,
    topic: str,
    *created: datetime | None,
) -> None:
    """The filters ListRuns and CountRuns share (fields of the same names in both)."""
    request.state = runs_pb2.RunState.ValueType(state or RunState.UNSPECIFIED)
    request.op_definition = definition
    request.image = image
    request.topic = topic
    for name, bound in zip(
        ("created_gte", "created_gt", "created_lte", "created_lt"), created, strict=True
    ):
        if bound is not None:
            getattr(request, name).CopyFrom(to_timestamp(bound, name))


class RunCalls:
    """The RunService half of `AsyncClient` (and, through it, of `Client`)."""

    _transport: Transport

    async def create_run(
        self,
        image: str,
        *,
        inputs: JsonObject | None = None,
        priority: int | None = None,
        constraints: runs_pb2.Constraints | None = None,
        retry_policy: runs_pb2.RetryPolicy | None = None,
        topic: str = "",
        attributes: JsonObject | None = None,
        request_id: str | None = None,
        timeout: timedelta | None = None,
    ) -> runs_pb2.Run:
        """Create a PENDING ad-hoc run of `image`.

        Args:
            image: the container image to run.
            inputs: the run's inputs, a JSON object.
            priority: higher runs first (the server's default: 5).
            constraints: the resources the run needs (`Constraints(cpu=2, vram_mb=8000)`).
            retry_policy: attempts and backoff (`RetryPolicy(max_attempts=3)`).
            topic: publish the run's events to this topic's feed.
            attributes: attached to every event published to `topic`.
            request_id: the idempotency key: the same key and body return the first run.
                When None, the client makes one, so that its own retries never create a
                second run; the key is on the run (`run.request_id`).
            timeout: this call's deadline (default: the client's).
        """
        request = runs_pb2.CreateRunRequest(
            image=image,
            priority=priority,
            inputs=to_struct(inputs or {}, "inputs"),
            constraints=constraints,
            retry_policy=retry_policy,
            event_delivery=runs_pb2.EventDelivery(
                topic=topic, attributes=to_struct(attributes or {}, "attributes")
            ),
            request_id=new_request_id() if request_id is None else request_id,
        )
        resp = await self._transport.unary(
            self._transport.stubs.runs.CreateRun,
            request,
            timeout=timeout,
            retry=bool(request.request_id),  # a repeat with the key returns the first run
        )
        run: runs_pb2.Run = resp.run
        return run

    async def get_run(
        self, run_id: str, *, with_events: bool = False, timeout: timedelta | None = None
    ) -> runs_pb2.Run:
        """One run; `with_events` adds its current attempt's events (`run.events`)."""
        request = runs_pb2.GetRunRequest(id=run_id, view=_view(with_events))
        resp = await self._transport.unary(
            self._transport.stubs.runs.GetRun, request, timeout=timeout, retry=True
        )
        run: runs_pb2.Run = resp.run
        return run

    def list_runs(
        self,
        *,
        state: RunState | None = None,
        definition: str = "",
        image: str = "",
        topic: str = "",
        created_gte: datetime | None = None,
        created_gt: datetime | None = None,
        created_lte: datetime | None = None,
        created_lt: datetime | None = None,
        with_events: bool = False,
        starting_after: str = "",
        ending_before: str = "",
        page_size: int = RUNS_PAGE_SIZE,
        limit: int | None = None,
        timeout: timedelta | None = None,
    ) -> AsyncPager[runs_pb2.Run]:
        """Runs that match every filter given, newest first, read lazily page by page.

        Args:
            state, definition, image, topic: only runs in this state, made from this op
                definition, of this image, publishing to this topic.
            created_gte, created_gt, created_lte, created_lt: bounds on the creation time
                (aware datetimes).
            with_events: each run with its current attempt's events.
            starting_after: start after this run id (older runs).
            ending_before: page towards newer runs, starting before this run id (each page
                is still newest first).
            page_size: runs per call (1..100; 0: the server's default, 10).
            limit: stop after this many runs (None: every one).
            timeout: the deadline of each page's call.
        """
        if starting_after and ending_before:
            raise ValueError("give starting_after or ending_before, not both")
        template = runs_pb2.ListRunsRequest(view=_view(with_events))
        _set_filters(
            template,
            state,
            definition,
            image,
            topic,
            created_gte,
            created_gt,
            created_lte,
            created_lt,
        )
        backwards = bool(ending_before)

        async def fetch(previous: Sequence[runs_pb2.Run] | None, size: int) -> Page[runs_pb2.Run]:
            request = runs_pb2.ListRunsRequest()
            request.CopyFrom(template)
            request.limit = size
            if backwards:
                request.ending_before = ending_before if previous is None else previous[0].id
            else:
                request.starting_after = starting_after if previous is None else previous[-1].id
            resp = await self._transport.unary(
                self._transport.stubs.runs.ListRuns, request, timeout=timeout, retry=True
            )
            return Page(list(resp.data), resp.has_more)

        return AsyncPager(fetch, page_size=page_size, limit=limit)

    async def count_runs(
        self,
        *,
        state: RunState | None = None,
        definition: str = "",
        image: str = "",
        topic: str = "",
        created_gte: datetime | None = None,
        created_gt: datetime | None = None,
        created_lte: datetime | None = None,
        created_lt: datetime | None = None,
        timeout: timedelta | None = None,
    ) -> runs_pb2.CountRunsResponse:
        """How many runs match every filter given (`list_runs`' filters): `total`, and
        without `state` `by_state`, every state's count in RunState order (zeros included).
        A lower `created_*` bound after an upper one raises InvalidArgument."""
        request = runs_pb2.CountRunsRequest()
        _set_filters(
            request,
            state,
            definition,
            image,
            topic,
            created_gte,
            created_gt,
            created_lte,
            created_lt,
        )
        resp: runs_pb2.CountRunsResponse = await self._transport.unary(
            self._transport.stubs.runs.CountRuns, request, timeout=timeout, retry=True
        )
        return resp

    async def update_run(
        self,
        run_id: str,
        *,
        state: RunState | None = None,
        outputs: JsonObject | None = None,
        priority: int | None = None,
        timeout: timedelta | None = None,
    ) -> runs_pb2.Run:
        """Change a run's state (through a legal transition), outputs or priority: only what
        is given (an `outputs={}` empties them). Not retried (it is not idempotent)."""
        request = runs_pb2.UpdateRunRequest(id=run_id)
        paths = []
        if state is not None:
            request.state = runs_pb2.RunState.ValueType(state)
            paths.append("state")
        if outputs is not None:
            request.outputs.CopyFrom(to_struct(outputs, "outputs"))
            paths.append("outputs")
        if priority is not None:
            request.priority = priority
            paths.append("priority")
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        resp = await self._transport.unary(
            self._transport.stubs.runs.UpdateRun, request, timeout=timeout, retry=False
        )
        run: runs_pb2.Run = resp.run
        return run

    async def cancel_run(
        self, run_id: str, *, reason: str = "", timeout: timedelta | None = None
    ) -> runs_pb2.Run:
        """Cancel a run that has not ended; `reason` is the CANCELLED event's message.
        Not retried: a repeat of a cancel that got through is refused (RUN_LOCKED)."""
        request = runs_pb2.CancelRunRequest(id=run_id, reason=reason)
        resp = await self._transport.unary(
            self._transport.stubs.runs.CancelRun, request, timeout=timeout, retry=False
        )
        run: runs_pb2.Run = resp.run
        return run

    async def retry_run(self, run_id: str, *, timeout: timedelta | None = None) -> runs_pb2.Run:
        """Start a new attempt of an ended run (forced: past `max_attempts`). Not retried: a
        repeat would start another attempt."""
        request = runs_pb2.RetryRunRequest(id=run_id)
        resp = await self._transport.unary(
            self._transport.stubs.runs.RetryRun, request, timeout=timeout, retry=False
        )
        run: runs_pb2.Run = resp.run
        return run

    async def add_event(
        self,
        run_id: str,
        type: EventType,
        *,
        msg: str = "",
        progress: int | None = None,
        payload: JsonObject | None = None,
        attempt: int | None = None,
        timeout: timedelta | None = None,
    ) -> runs_pb2.AddEventResponse:
        """Append an event to the run's current attempt and apply its effect; the answer
        holds the run after it and the event appended. `attempt` fences a worker that no
        longer holds the run (STALE_ATTEMPT). Not retried: a repeat appends another event."""
        request = runs_pb2.AddEventRequest(
            run_id=run_id,
            type=runs_pb2.EventType.ValueType(type),
            msg=msg,
            progress=progress,
            payload=to_struct(payload or {}, "payload"),
            attempt=attempt,
        )
        resp: runs_pb2.AddEventResponse = await self._transport.unary(
            self._transport.stubs.runs.AddEvent, request, timeout=timeout, retry=False
        )
        return resp

    def list_events(
        self,
        run_id: str,
        *,
        after: int | None = None,
        attempt: int | None = None,
        page_size: int = EVENTS_PAGE_SIZE,
        limit: int | None = None,
        timeout: timedelta | None = None,
    ) -> AsyncPager[runs_pb2.Event]:
        """A run's events in seq order, read lazily: after seq `after`, of one attempt
        (`attempt`; all when None), `page_size` per call (1..1000), at most `limit` in all."""

        async def fetch(
            previous: Sequence[runs_pb2.Event] | None, size: int
        ) -> Page[runs_pb2.Event]:
            request = runs_pb2.ListEventsRequest(
                run_id=run_id,
                after=after if previous is None else previous[-1].seq,
                attempt=attempt or 0,
                limit=size,
            )
            resp = await self._transport.unary(
                self._transport.stubs.runs.ListEvents, request, timeout=timeout, retry=True
            )
            return Page(list(resp.events), resp.has_more)

        return AsyncPager(fetch, page_size=page_size, limit=limit)

    async def list_attempts(
        self, run_id: str, *, timeout: timedelta | None = None
    ) -> list[runs_pb2.Attempt]:
        """Every attempt of a run, the first first (one call, or more when the server cut
        the answer at its response budget: the rest comes after the last attempt read)."""
        found: list[runs_pb2.Attempt] = []
        while True:
            after = found[-1].attempt if found else 0
            request = runs_pb2.ListAttemptsRequest(run_id=run_id, after=after)
            resp = await self._transport.unary(
                self._transport.stubs.runs.ListAttempts, request, timeout=timeout, retry=True
            )
            found.extend(resp.attempts)
            if not resp.has_more or not resp.attempts:
                return found

    def watch_events(
        self, run_id: str, *, after: int | None = None
    ) -> AsyncIterator[runs_pb2.Event]:
        """A run's events after seq `after` (all when None), live as they commit, until the
        run ends (an event that leaves it COMPLETED, FAILED or CANCELLED with nothing after).

        The stream resumes by itself after a dropped connection or a server restart, from
        the last event delivered: every event comes once, in order. Heartbeats stay inside.
        It raises NotFound for an unknown run, and Unavailable when the server stayed out of
        reach through `watch_retry`'s attempts. Break out of the loop to stop watching.
        """
        transport = self._transport

        def open_after(position: int | None) -> Any:
            request = runs_pb2.WatchEventsRequest(run_id=run_id, after=position)
            return transport.open_stream(transport.stubs.runs.WatchEvents, request)

        def unpack(message: runs_pb2.WatchEventsResponse) -> tuple[runs_pb2.Event | None, int]:
            if message.HasField("event"):
                return message.event, message.event.seq
            return None, message.heartbeat.last_seq

        return transport.follow(
            Resumable(f"watch of run {run_id}", open_after, unpack), after=after
        )
