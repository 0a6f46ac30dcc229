"""The gateway's routes as data, and the OpenAPI 3.2 document made from them.

`ROUTES` is the one list of routes: app.py registers for each the handler named by its
`operation_id` (app.py's and sse.py's `@handles` functions) and reads each request with the
route's parameters and body table, and `document()` describes the
same route from the same tables (fields.py), so the document cannot leave a route, a
parameter or a field out, nor describe one the handlers do not read. OpenAPI 3.2 because it
describes an event stream item by item (`itemSchema`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from gyoza_grpc.gateway import messages as m
from gyoza_grpc.gateway import responses as r
from gyoza_grpc.gateway.fields import Message, Parameter, message_schema, parameter_schema, ref


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    rpc: str  # the gRPC calls it makes
    ok: int = 200
    answer: dict[str, Any] | None = None  # the success body's schema (None: an event stream)
    items: dict[str, Any] | None = None  # an event stream's frames (its itemSchema)
    params: tuple[Parameter, ...] = ()
    body: Message | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()  # besides those of every route
    description: str = ""


def _data(schema: dict[str, Any]) -> dict[str, Any]:
    """An SSE frame's `data`: JSON text of `schema`."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _frame(event: str, data: dict[str, Any], *, with_id: bool = False) -> dict[str, Any]:
    """One server-sent event, as an EventSource parses it (no `event:` is "message")."""
    props: dict[str, Any] = {"event": {"const": event}, "data": _data(data)}
    if with_id:
        props["id"] = {"type": "string", "pattern": "^[0-9]+$"}
    return {
        "type": "object",
        "required": ["event", "id", "data"] if with_id else ["event", "data"],
        "properties": props,
    }


_END = _frame("end", {"type": "object", "maxProperties": 0})
_ERROR = _frame("error", ref(r.STREAM_ERROR.name))
EVENTS_STREAM_ITEMS: dict[str, Any] = {
    "anyOf": [_frame("message", ref(r.EVENT.name), with_id=True), _END, _ERROR]
}
RUNS_STREAM_ITEMS: dict[str, Any] = {
    "anyOf": [
        _frame("ready", {"type": "object", "maxProperties": 0}),
        _frame("run", ref(r.RUN.name)),
        _frame("resync", ref(r.RESYNC.name)),
        _ERROR,
    ]
}


# Every route can meet these: a request line or header too long (400), the server's verdict
# on the caller's key (401, 403), a conflict (ABORTED: 409), its limits (429), and the way to
# it (500, 501, 503, 504).
_EVERY_ROUTE_ERRORS = (400, 401, 403, 409, 429, 500, 501, 503, 504)

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/runs",
        "list_runs",
        "List runs, newest first, with Stripe-style cursors",
        "RunService.ListRuns",
        answer=ref(r.RUN_LIST.name),
        params=m.LIST_RUNS_QUERY,
        errors=(422,),
    ),
    Route(
        "GET",
        "/runs/stream",
        "stream_runs",
        "Server-sent events: every run created or changed from now on",
        "RunService.WatchRuns",
        params=m.RUNS_STREAM_QUERY,
        items=RUNS_STREAM_ITEMS,
        errors=(422,),
        description="First `event: ready` once the server follows the runs: list them then "
        "(GET /runs), so that nothing falls between. Then an `event: run` (a Run without "
        "events) for each run created or changed; of two copies of a run keep the one with "
        "the higher `last_event_id`, then `updated_at`. An `event: resync` means changes "
        "may have been missed: list again. A quiet stream gets `: heartbeat` comments; "
        "`event: error` (a StreamError) ends it. Nothing is replayed.",
    ),
    Route(
        "GET",
        "/runs/count",
        "count_runs",
        "Count the runs that match GET /runs' filters, per state without a state filter",
        "RunService.CountRuns",
        answer=ref(r.RUN_COUNT.name),
        params=m.RUN_FILTERS_QUERY,
        errors=(422,),
        description="A lower created[...] bound after an upper one is a 400.",
    ),
    Route(
        "POST",
        "/runs",
        "create_run",
        "Create an ad-hoc run (PENDING, attempt 1)",
        "RunService.CreateRun (then ListEvents for a request_id replayed on a run with events)",
        ok=201,
        answer=ref(r.RUN.name),
        body=m.RUN_CREATE,
        errors=(409, 422),
    ),
    Route(
        "GET",
        "/runs/{id}",
        "get_run",
        "Get a run with its current attempt's events",
        "RunService.GetRun",
        answer=ref(r.RUN.name),
        params=(m.RUN_ID,),
        errors=(404,),
    ),
    Route(
        "PATCH",
        "/runs/{id}",
        "update_run",
        "Update a run's state (a legal transition), outputs or priority",
        "RunService.UpdateRun, then ListEvents (GetRun when nothing is to change)",
        answer=ref(r.RUN.name),
        params=(m.RUN_ID,),
        body=m.RUN_UPDATE,
        errors=(404, 422),
    ),
    Route(
        "POST",
        "/runs/{id}/retry",
        "retry_run",
        "Retry a terminal run: a new attempt, PENDING",
        "RunService.RetryRun, then ListEvents",
        answer=ref(r.RUN.name),
        params=(m.RUN_ID,),
        errors=(404,),
    ),
    Route(
        "POST",
        "/runs/{id}/cancel",
        "cancel_run",
        "Cancel a run that is not terminal",
        "RunService.CancelRun, then ListEvents",
        answer=ref(r.RUN.name),
        params=(m.RUN_ID,),
        errors=(404,),
    ),
    Route(
        "GET",
        "/runs/{id}/events",
        "list_events",
        "Poll a run's events: the current attempt's (the original's), or every attempt's",
        "RunService.GetRun (scope=attempt) or RunService.ListEvents (scope=run)",
        answer={"anyOf": [ref(r.EVENT_POLL.name), ref(r.TIMELINE.name)]},
        params=(m.RUN_ID, *m.LIST_EVENTS_QUERY),
        errors=(404, 422),
        description="`scope=attempt` (the default) answers an EventPoll, `scope=run` a Timeline.",
    ),
    Route(
        "POST",
        "/runs/{id}/events",
        "add_event",
        "Add an event to the run's current attempt",
        "RunService.AddEvent, then ListEvents",
        answer=ref(r.RUN.name),
        params=(m.RUN_ID,),
        body=m.ADD_EVENT,
        errors=(404, 422),
    ),
    Route(
        "GET",
        "/runs/{id}/events/stream",
        "stream_events",
        "Server-sent events: replay after a cursor, then live, ending at a terminal state",
        "RunService.GetRun, then RunService.WatchEvents",
        params=(m.RUN_ID, *m.STREAM_QUERY),
        items=EVENTS_STREAM_ITEMS,
        errors=(404, 422),
        description="Each event is `id: <event id>` and `data: <Event JSON>`; a quiet run "
        "gets `: heartbeat` comments; the stream ends with `event: end` after the event that "
        "leaves the run terminal, or with `event: error` (a StreamError).",
    ),
    Route(
        "GET",
        "/runs/{id}/attempts",
        "list_attempts",
        "Every attempt of a run, in order",
        "RunService.ListAttempts",
        answer={"type": "array", "items": ref(r.ATTEMPT.name)},
        params=(m.RUN_ID,),
        errors=(404,),
    ),
    Route(
        "GET",
        "/definitions",
        "list_definitions",
        "List op definitions (the latest version of each), by name",
        "DefinitionService.ListDefinitions",
        answer=ref(r.DEFINITION_LIST.name),
        params=m.LIST_DEFINITIONS_QUERY,
        errors=(422,),
    ),
    Route(
        "GET",
        "/definitions/{name}",
        "get_definition",
        "Get an op definition (the latest version unless `version` is given)",
        "DefinitionService.GetDefinition",
        answer=ref(r.DEFINITION.name),
        params=(m.DEFINITION_NAME, *m.DEFINITION_QUERY),
        errors=(404, 422),
    ),
    Route(
        "POST",
        "/definitions/{name}/runs",
        "create_run_from_definition",
        "Create a run from an op definition; inputs are checked against its input specs",
        "DefinitionService.CreateRunFromDefinition (then ListEvents for a replayed request_id)",
        ok=201,
        answer=ref(r.RUN.name),
        params=(m.DEFINITION_NAME,),
        body=m.DEFINITION_RUN_CREATE,
        body_required=False,
        errors=(404, 409, 422),
    ),
    Route(
        "GET",
        "/definitions/{name}/versions",
        "list_definition_versions",
        "Every version of an op definition, the latest first",
        "DefinitionService.ListDefinitionVersions",
        answer=ref(r.DEFINITION_VERSIONS.name),
        params=(m.DEFINITION_NAME,),
        errors=(404, 422),
    ),
    Route(
        "GET",
        "/workers",
        "list_workers",
        "Every known worker: its resources, what is free of them, the runs it holds",
        "WorkerService.ListWorkers",
        answer=ref(r.WORKER_LIST.name),
    ),
    Route(
        "GET",
        "/workers/{worker_id}",
        "get_worker",
        "One worker",
        "WorkerService.GetWorker",
        answer=ref(r.WORKER.name),
        params=(m.WORKER_ID,),
        errors=(404,),
    ),
    Route(
        "GET",
        "/access",
        "get_access",
        "What the caller's X-API-Key may do: its role and the gRPC methods it may call",
        "AccessService.GetCaller",
        answer=ref(r.CALLER.name),
        description="The dashboard asks it to offer only the actions the server accepts.",
    ),
)

_ERROR_TEXT = {
    400: "Refused: by the server (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE), as "
    "the original refused it, or a request line or header over 8190 bytes",
    401: "No valid X-API-Key (UNAUTHENTICATED)",
    403: "The key may not do this (PERMISSION_DENIED)",
    404: "Not found (NOT_FOUND)",
    409: "A request_id reused with another body (ALREADY_EXISTS), or a conflict (ABORTED)",
    422: "The body or a parameter cannot be read (FastAPI's RequestValidationError)",
    429: "Over a server limit (RESOURCE_EXHAUSTED)",
    500: "The server failed (INTERNAL, UNKNOWN, DATA_LOSS)",
    501: "The server does not offer the call (UNIMPLEMENTED)",
    503: "The gRPC server is unavailable",
    504: "The gRPC call's deadline passed",
}
_API_KEY = m.API_KEY


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": " ".join(filter(None, (f"Calls gyoza.v1.{route.rpc}.", route.description))),
        "parameters": [parameter_schema(p) for p in (*route.params, _API_KEY)],
    }
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": ref(route.body.name)}},
        }
    if route.answer is None:
        ok: dict[str, Any] = {
            "description": "The event stream",
            "content": {"text/event-stream": {"itemSchema": route.items}},
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": route.answer}}}
    responses: dict[str, Any] = {str(route.ok): ok}
    for status in sorted({*route.errors, *_EVERY_ROUTE_ERRORS}):
        schema = r.VALIDATION_ERROR if status == 422 else r.ERROR
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": ref(schema.name)}},
        }
    op["responses"] = responses
    return op


@cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    schemas = {msg.name: message_schema(msg, lax=True) for msg in m.REQUEST_MESSAGES}
    schemas.update({msg.name: message_schema(msg, lax=False) for msg in r.RESPONSE_MESSAGES})
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "gyoza-grpc REST gateway",
            "version": "1",
            "description": "The original gyoza router's routes, each translated into gRPC "
            "calls on a gyoza-grpc server. States and event types are spelled as in the "
            "original (PENDING, STARTED, ...); times are ISO 8601. Requests are read as the "
            "original's FastAPI read them (pydantic's lax mode: an integer may come as a "
            "string of digits or a boolean), and every schema says so.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
