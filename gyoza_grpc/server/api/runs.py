"""RunService: each handler reads its request, calls the domain through the store, and
answers with the run. Validation of request shape lives here; every rule about runs lives in
the domain."""

from __future__ import annotations

import functools
from typing import Any, Literal, TypeAlias

import grpc

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.domain import state_machine
from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.limits import DEFAULT_LIMITS, Limits, check_payload
from gyoza_grpc.domain.model import JSON, Event, EventType, RunState
from gyoza_grpc.domain.runs import new_run, spec_fingerprint
from gyoza_grpc.server.api import convert
from gyoza_grpc.server.api.errors import streaming, unary
from gyoza_grpc.server.api.response_budget import ResponseBudget, fill_within
from gyoza_grpc.server.api.run_replies import RunReplies
from gyoza_grpc.server.config import DEFAULT_HEARTBEAT_S
from gyoza_grpc.server.store.run_store import RunFilters, RunQuery, RunStore
from gyoza_grpc.server.store.stats_store import StatsStore
from gyoza_grpc.server.streams.run_feed import Quiet, Resync, RunFeed, RunFilter, follow
from gyoza_grpc.server.streams.watch import EventWatcher, Heartbeat
from gyoza_grpc.server.streams.watch_slots import WatchSlots

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

DEFAULT_LIST_LIMIT = 10
MAX_LIST_LIMIT = 100
MAX_EVENTS_LIMIT = 1000
UPDATE_PATHS = ("state", "outputs", "priority")
# Run ids are UUIDs; a longer one is refused before it is echoed into an error's trailers
# (a 5,000-character id made the client fail with RESOURCE_EXHAUSTED on metadata size).
MAX_ID_LEN = 128
# RunView's numbers, read once (EnumTypeWrapper.values() builds a new list per call).
_RUN_VIEWS = frozenset(runs_pb2.RunView.values())


def _run_id(value: str, field: str = "id") -> str:
    return convert.required_text(value, field, max_len=MAX_ID_LEN)


def _full_view(view: int) -> bool:
    if view not in _RUN_VIEWS:
        raise InvalidArgument.field("view", f"unknown RunView {view}")
    return view == runs_pb2.RUN_VIEW_FULL


_CREATED: tuple[Literal["created_gte", "created_lte", "created_gt", "created_lt"], ...] = (
    "created_gte",
    "created_lte",
    "created_gt",
    "created_lt",
)


def _filters(req: runs_pb2.ListRunsRequest | runs_pb2.CountRunsRequest) -> dict[str, Any]:
    """The filters ListRuns and CountRuns share (the same fields in both requests), as
    RunFilters' arguments."""
    times: dict[str, int | None] = {
        name: convert.timestamp_to_us(getattr(req, name), name) if req.HasField(name) else None
        for name in _CREATED
    }
    return {
        "state": convert.state_from_pb(req.state, "state") if req.state else None,
        "op_definition": convert.text(req.op_definition, "op_definition"),
        "image": convert.text(req.image, "image"),
        "topic": convert.text(req.topic, "topic"),
        **times,
    }


def _list_query(req: runs_pb2.ListRunsRequest) -> RunQuery:
    violations: list[FieldViolation] = []
    limit = req.limit or DEFAULT_LIST_LIMIT
    if not 1 <= limit <= MAX_LIST_LIMIT:
        violations.append(
            FieldViolation("limit", f"must be between 1 and {MAX_LIST_LIMIT} (0 means 10)")
        )
    if req.starting_after and req.ending_before:
        violations.append(FieldViolation("ending_before", "cannot be combined with starting_after"))
    for name in ("starting_after", "ending_before"):
        if len(getattr(req, name)) > MAX_ID_LEN:
            violations.append(FieldViolation(name, f"must be at most {MAX_ID_LEN} characters"))
    if violations:
        raise InvalidArgument.for_fields(violations)
    return RunQuery(
        limit=limit,
        starting_after=convert.text(req.starting_after, "starting_after"),
        ending_before=convert.text(req.ending_before, "ending_before"),
        with_events=_full_view(req.view),
        **_filters(req),
    )


def _count_filters(req: runs_pb2.CountRunsRequest) -> RunFilters:
    """ListRuns' filters, and a time range that is not upside down: an empty page is a fine
    answer to a list, but a count of zero for a reversed range hides the caller's mistake."""
    filters = RunFilters(**_filters(req))
    for low in ("created_gte", "created_gt"):
        for high in ("created_lte", "created_lt"):
            start, end = getattr(filters, low), getattr(filters, high)
            if start is not None and end is not None and start > end:
                raise InvalidArgument.field(high, f"must not be before {low}")
    return filters


def _update_fields(
    req: runs_pb2.UpdateRunRequest, max_json_bytes: int
) -> tuple[RunState | None, JSON | None, int | None]:
    """What an UpdateRun asks to change: the masked paths, or every field that is set."""
    if req.HasField("update_mask"):
        paths = list(req.update_mask.paths)
        unknown = [p for p in paths if p not in UPDATE_PATHS]
        if unknown:
            raise InvalidArgument.field(
                "update_mask",
                f"unknown path(s) {', '.join(unknown)}; allowed: {', '.join(UPDATE_PATHS)}",
            )
    else:
        paths = [p for p in ("state", "priority") if req.HasField(p)]
        if req.HasField("outputs"):
            paths.append("outputs")
    if not paths:
        raise InvalidArgument.field(
            "update_mask", "nothing to update: set state, outputs or priority"
        )
    state = convert.state_from_pb(req.state, "state") if "state" in paths else None
    outputs = (
        convert.struct_to_dict(req.outputs, "outputs", max_json_bytes)
        if "outputs" in paths
        else None
    )
    priority = req.priority if "priority" in paths else None
    return state, outputs, priority


def _event_response(event: Event) -> runs_pb2.WatchEventsResponse:
    out = runs_pb2.WatchEventsResponse()
    convert.fill_event(out.event, event)
    return out


class RunServicer(runs_pb2_grpc.RunServiceServicer):
    def __init__(
        self,
        store: RunStore,
        watcher: EventWatcher,
        *,
        stats: StatsStore,
        clock: Clock = utc_now,
        limits: Limits = DEFAULT_LIMITS,
        watch_slots: WatchSlots | None = None,
        run_feed: RunFeed | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self._store = store
        self._stats = stats
        self._watcher = watcher
        self._run_feed = run_feed if run_feed is not None else RunFeed()
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._limits = limits
        self._max_events = limits.max_events_per_run
        self._slots = watch_slots or WatchSlots(limits.max_watch_streams)
        # Only where the store hands back the same Run object while a run is unchanged.
        self._replies = RunReplies() if store.caches_runs else None

    @unary
    async def CreateRun(
        self, request: runs_pb2.CreateRunRequest, context: Context
    ) -> runs_pb2.CreateRunResponse:
        spec = convert.spec_from_create(request, self._limits.max_json_bytes)
        run = new_run(spec, self._clock())
        fingerprint = spec_fingerprint(spec) if spec.request_id else None
        run, _created = await self._store.create_run(run, fingerprint)
        out = runs_pb2.CreateRunResponse()
        convert.fill_run(out.run, run)  # in place: no Run built and then copied in
        return out

    @unary
    async def GetRun(
        self, request: runs_pb2.GetRunRequest, context: Context
    ) -> runs_pb2.GetRunResponse:
        run_id = _run_id(request.id)
        full = _full_view(request.view)
        run, run_events = await self._store.get_run(run_id, with_events=full)
        if not full and self._replies is not None:
            return self._replies.reply(run)
        out = runs_pb2.GetRunResponse()
        convert.fill_run(out.run, run, run_events)
        return out

    @unary
    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: Context
    ) -> runs_pb2.ListRunsResponse:
        query = _list_query(request)
        page = await self._store.list_runs(query)
        out = runs_pb2.ListRunsResponse()
        # A page cut short by the response budget keeps the runs nearest its cursor, so the
        # next page (starting_after its last run, or ending_before its first) goes on from them.
        backward = bool(query.ending_before)
        complete = fill_within(
            ResponseBudget(self._limits.max_response_bytes),
            out.data,
            reversed(page.runs) if backward else page.runs,
            lambda entry, r: convert.fill_run(entry, r, page.events.get(r.id, ())),
        )
        if backward:
            out.data.reverse()  # newest first, as always
        out.has_more = page.has_more or not complete
        return out

    @unary
    async def CountRuns(
        self, request: runs_pb2.CountRunsRequest, context: Context
    ) -> runs_pb2.CountRunsResponse:
        filters = _count_filters(request)
        counts = await self._stats.count_runs(filters)
        out = runs_pb2.CountRunsResponse(total=sum(counts.values()))
        if filters.state is None:
            for state in RunState:
                out.by_state.add(state=convert.state_to_pb(state), count=counts.get(state, 0))
        return out

    @unary
    async def UpdateRun(
        self, request: runs_pb2.UpdateRunRequest, context: Context
    ) -> runs_pb2.UpdateRunResponse:
        run_id = _run_id(request.id)
        state, outputs, priority = _update_fields(request, self._limits.max_json_bytes)
        t = await self._store.change_run(
            run_id,
            lambda run, now: state_machine.update(
                run,
                now,
                state=state,
                outputs=outputs,
                priority=priority,
                max_events=self._max_events,
            ),
        )
        if not t.events:
            # An edit without events (priority, outputs) is no store notification: the
            # runs feed hears of it here (on this server only).
            self._run_feed.publish(t.run)
        out = runs_pb2.UpdateRunResponse()
        convert.fill_run(out.run, t.run)
        return out

    @unary
    async def CancelRun(
        self, request: runs_pb2.CancelRunRequest, context: Context
    ) -> runs_pb2.CancelRunResponse:
        run_id = _run_id(request.id)
        reason = convert.text(request.reason, "reason")
        t = await self._store.change_run(
            run_id, lambda run, now: state_machine.cancel(run, reason, now)
        )
        out = runs_pb2.CancelRunResponse()
        convert.fill_run(out.run, t.run)
        return out

    @unary
    async def RetryRun(
        self, request: runs_pb2.RetryRunRequest, context: Context
    ) -> runs_pb2.RetryRunResponse:
        run_id = _run_id(request.id)
        t = await self._store.change_run(
            run_id, lambda run, now: state_machine.retry(run, now, max_events=self._max_events)
        )
        out = runs_pb2.RetryRunResponse()
        convert.fill_run(out.run, t.run)
        return out

    @unary
    async def AddEvent(
        self, request: runs_pb2.AddEventRequest, context: Context
    ) -> runs_pb2.AddEventResponse:
        run_id = _run_id(request.run_id, "run_id")
        event_type = convert.event_type_from_pb(request.type)
        limits = self._limits
        if event_type is EventType.COMPLETED:
            # It may carry outputs (up to max_json_bytes) besides the rest: both caps.
            bound = limits.max_payload_bytes + limits.max_json_bytes
            payload = convert.struct_to_dict(request.payload, "payload", bound)
            check_payload(payload, event_type, limits)
        else:
            # The payload cap, checked by struct_to_dict as it reads the payload.
            payload = convert.struct_to_dict(request.payload, "payload", limits.max_payload_bytes)
        event = state_machine.EventInput(
            type=event_type,
            msg=convert.text(request.msg, "msg"),
            progress=request.progress if request.HasField("progress") else None,
            payload=payload,
            attempt=request.attempt if request.HasField("attempt") else None,
        )
        t = await self._store.change_run(
            run_id,
            lambda run, now: state_machine.append_event(
                run, event, now, max_events=self._max_events
            ),
        )
        out = runs_pb2.AddEventResponse()
        convert.fill_run(out.run, t.run)
        convert.fill_event(out.event, t.events[0])
        return out

    @unary
    async def ListEvents(
        self, request: runs_pb2.ListEventsRequest, context: Context
    ) -> runs_pb2.ListEventsResponse:
        run_id = _run_id(request.run_id, "run_id")
        violations: list[FieldViolation] = []
        if request.attempt < 0:
            violations.append(FieldViolation("attempt", "must be >= 0 (0 means all)"))
        limit = request.limit or MAX_EVENTS_LIMIT
        if not 1 <= limit <= MAX_EVENTS_LIMIT:
            violations.append(
                FieldViolation("limit", f"must be between 1 and {MAX_EVENTS_LIMIT} (0 means all)")
            )
        if violations:
            raise InvalidArgument.for_fields(violations)
        found, has_more = await self._store.list_events(
            run_id,
            after=request.after if request.HasField("after") else None,
            attempt=request.attempt,
            limit=limit,
        )
        out = runs_pb2.ListEventsResponse()
        budget = ResponseBudget(self._limits.max_response_bytes)
        complete = fill_within(budget, out.events, found, convert.fill_event)
        out.has_more = has_more or not complete
        return out

    @unary
    async def ListAttempts(
        self, request: runs_pb2.ListAttemptsRequest, context: Context
    ) -> runs_pb2.ListAttemptsResponse:
        run_id = _run_id(request.run_id, "run_id")
        if request.after < 0:
            raise InvalidArgument.field("after", "must be >= 0 (an attempt number; 0: all)")
        run, found = await self._store.list_attempts(run_id)
        out = runs_pb2.ListAttemptsResponse()
        complete = fill_within(
            ResponseBudget(self._limits.max_response_bytes),
            out.attempts,
            (a for a in found if a.number > request.after),
            lambda entry, a: entry.CopyFrom(convert.attempt_to_pb(a, run)),
        )
        out.has_more = not complete
        return out

    @streaming
    async def WatchEvents(self, request: runs_pb2.WatchEventsRequest, context: Context) -> Any:
        run_id = _run_id(request.run_id, "run_id")
        after = request.after if request.HasField("after") else None
        wire = self._watcher.wire  # one message per event, shared by all of its watchers
        with self._slots.held(context):
            accepted = functools.partial(context.send_initial_metadata, ())
            async for item in self._watcher.watch(run_id, after, accepted=accepted):
                if isinstance(item, Heartbeat):
                    yield runs_pb2.WatchEventsResponse(
                        heartbeat=runs_pb2.Heartbeat(
                            last_seq=item.position, server_time=convert.now_pb(item.server_time)
                        )
                    )
                else:
                    yield wire.get(("run", item.run_id, item.seq), _event_response, item)

    @streaming
    async def WatchRuns(self, request: runs_pb2.WatchRunsRequest, context: Context) -> Any:
        run_filter = RunFilter(
            op_definition=convert.text(request.op_definition, "op_definition"),
            image=convert.text(request.image, "image"),
            topic=convert.text(request.topic, "topic"),
        )
        with self._slots.held(context):
            watch = self._run_feed.subscribe(run_filter)
            # Subscribed: the headers tell the client that it may list the runs now.
            await context.send_initial_metadata(())
            items = follow(self._run_feed, watch, heartbeat_s=self._heartbeat_s, clock=self._clock)
            async for item in items:
                if isinstance(item, Quiet):
                    yield runs_pb2.WatchRunsResponse(
                        heartbeat=runs_pb2.RunsHeartbeat(
                            server_time=convert.now_pb(item.server_time)
                        )
                    )
                elif isinstance(item, Resync):
                    yield runs_pb2.WatchRunsResponse(resync=runs_pb2.RunsResync(reason=item.reason))
                else:
                    out = runs_pb2.WatchRunsResponse()
                    convert.fill_run(out.run, item)
                    yield out
