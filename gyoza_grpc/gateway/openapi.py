"""The gateway's routes as data, and the OpenAPI 3.1 document made from them.

`ROUTES` is the one list of routes: app.py registers a handler for each `operation_id`, and
`document()` describes each, so the document cannot leave a route out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gyoza_grpc.gateway.shapes import EVENT_TYPES, INPUT_TYPES, STATES


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    rpc: str  # the gRPC method it calls
    ok: int = 200
    ok_schema: dict[str, Any] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    body: str | None = None  # a component schema name
    errors: tuple[int, ...] = (400, 404)
    stream: bool = False


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_INT = {"type": "integer"}
_STR = {"type": "string"}
_NULL_INT = {"type": ["integer", "null"]}
_NULL_STR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}
_OBJ = {"type": "object", "additionalProperties": True}
_STATE = {"type": "string", "enum": list(STATES)}
_RUN_ID = Param("id", "path", _STR, "the run's id", required=True)
_DEF_NAME = Param("name", "path", _STR, "the op definition's name", required=True)
_AFTER = Param("after", "query", _INT, "only events whose id is greater than this")

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/runs",
        "list_runs",
        "List runs, newest first, with Stripe-style cursors",
        "RunService.ListRuns",
        ok_schema=_ref("RunList"),
        params=(
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                "page size",
            ),
            Param("starting_after", "query", _STR, "a run id: the next (older) page after it"),
            Param("ending_before", "query", _STR, "a run id: the previous (newer) page before it"),
            Param("state", "query", _STATE, "only runs in this state"),
            Param("status", "query", _STATE, "alias of state; must match it when both are given"),
            Param("op_definition", "query", _STR, "only runs made from this op definition"),
            Param("image", "query", _STR, "only runs of this image"),
            Param("topic", "query", _STR, "only runs publishing to this topic"),
            *(
                Param(f"created[{op}]", "query", _INT, f"created_at {op} this UNIX time (s)")
                for op in ("gte", "lte", "gt", "lt")
            ),
        ),
        errors=(400, 422),
    ),
    Route(
        "POST",
        "/runs",
        "create_run",
        "Create an ad-hoc run (PENDING, attempt 1)",
        "RunService.CreateRun",
        ok=201,
        ok_schema=_ref("Run"),
        body="RunCreate",
        errors=(400, 409, 422),
    ),
    Route(
        "GET",
        "/runs/{id}",
        "get_run",
        "Get a run with its current attempt's events",
        "RunService.GetRun",
        ok_schema=_ref("Run"),
        params=(_RUN_ID,),
        errors=(404,),
    ),
    Route(
        "PATCH",
        "/runs/{id}",
        "update_run",
        "Update a run's state (a legal transition), outputs or priority",
        "RunService.UpdateRun",
        ok_schema=_ref("Run"),
        params=(_RUN_ID,),
        body="RunUpdate",
        errors=(400, 404, 422),
    ),
    Route(
        "POST",
        "/runs/{id}/retry",
        "retry_run",
        "Retry a terminal run: a new attempt, PENDING",
        "RunService.RetryRun",
        ok_schema=_ref("Run"),
        params=(_RUN_ID,),
    ),
    Route(
        "POST",
        "/runs/{id}/cancel",
        "cancel_run",
        "Cancel a run that is not terminal",
        "RunService.CancelRun",
        ok_schema=_ref("Run"),
        params=(_RUN_ID,),
    ),
    Route(
        "GET",
        "/runs/{id}/events",
        "list_events",
        "Poll a run's events (every attempt's, by id)",
        "RunService.ListEvents",
        ok_schema=_ref("EventList"),
        params=(_RUN_ID, _AFTER),
        errors=(400, 404, 422),
    ),
    Route(
        "POST",
        "/runs/{id}/events",
        "add_event",
        "Add an event to the run's current attempt",
        "RunService.AddEvent",
        ok_schema=_ref("Run"),
        params=(_RUN_ID,),
        body="AddEvent",
        errors=(400, 404, 422),
    ),
    Route(
        "GET",
        "/runs/{id}/events/stream",
        "stream_events",
        "Server-sent events: replay after a cursor, then live, ending at a terminal state",
        "RunService.WatchEvents",
        params=(
            _RUN_ID,
            _AFTER,
            Param("Last-Event-ID", "header", _INT, "resume after this event id (wins over after)"),
        ),
        errors=(404, 422),
        stream=True,
    ),
    Route(
        "GET",
        "/runs/{id}/attempts",
        "list_attempts",
        "Every attempt of a run, in order",
        "RunService.ListAttempts",
        ok_schema={"type": "array", "items": _ref("Attempt")},
        params=(_RUN_ID,),
        errors=(404,),
    ),
    Route(
        "GET",
        "/definitions/{name}",
        "get_definition",
        "Get an op definition (the latest version unless `version` is given)",
        "DefinitionService.GetDefinition",
        ok_schema=_ref("Definition"),
        params=(_DEF_NAME, Param("version", "query", _STR, "a semantic version")),
    ),
    Route(
        "POST",
        "/definitions/{name}/runs",
        "create_run_from_definition",
        "Create a run from an op definition; inputs are checked against its input specs",
        "DefinitionService.CreateRunFromDefinition",
        ok=201,
        ok_schema=_ref("Run"),
        params=(_DEF_NAME,),
        body="DefinitionRunCreate",
        errors=(400, 404, 409, 422),
    ),
)

_CONSTRAINTS = {
    "type": "object",
    "properties": {n: _NULL_INT for n in ("cpu", "ram_mb", "vram_mb", "gpu_id")},
}
_RETRY = {
    "type": "object",
    "properties": {
        "max_attempts": _INT,
        "initial_backoff_s": {"type": "number"},
        "backoff_multiplier": {"type": "number"},
        "max_backoff_s": {"type": ["number", "null"]},
    },
}
_DELIVERY = {
    "type": ["object", "null"],
    "properties": {"topic": _STR, "attributes": _OBJ},
}
_SUMMARY = {
    "type": "object",
    "properties": {
        "duration_ms": _INT,
        "worker_id": _NULL_STR,
        "error_message": _NULL_STR,
        "gpu_id": _NULL_INT,
    },
}
_INPUT_SPEC = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": list(INPUT_TYPES)},
        "required": {"type": "boolean"},
        "default": {},
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Event": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "description": "run-wide position 0, 1, 2, ..."},
            "type": {"type": "string", "enum": list(EVENT_TYPES)},
            "t": _TIME,
            "msg": {"type": ["string", "integer"], "description": "PROGRESS: an int 0-100"},
            "state": {**_STATE, "description": "the run's state right after this event"},
            "payload": _OBJ,
            "attempt": _INT,
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "id": _STR,
            "state": _STATE,
            "priority": _INT,
            "image": _STR,
            "inputs": _OBJ,
            "outputs": _OBJ,
            "constraints": _CONSTRAINTS,
            "retry_policy": _RETRY,
            "event_delivery": _DELIVERY,
            "op_definition": _NULL_STR,
            "definition_version": _NULL_STR,
            "progress": _INT,
            "current_attempt": _INT,
            "execution_summary": _SUMMARY,
            "created_at": _TIME,
            "updated_at": _TIME,
            "next_attempt_at": _NULL_TIME,
            "request_id": _NULL_STR,
            "last_event_id": {"type": "integer", "description": "-1 before the first event"},
            "events": {
                "type": "array",
                "items": _ref("Event"),
                "description": "the current attempt's events (reads and creates only)",
            },
        },
    },
    "RunList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Run")},
            "has_more": {"type": "boolean"},
            "url": {"const": "/runs"},
        },
    },
    "EventList": {
        "type": "object",
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "has_more": {"type": "boolean"},
        },
    },
    "Attempt": {
        "type": "object",
        "properties": {
            "id": _STR,
            "op_run_id": _STR,
            "attempt": _INT,
            "state": _STATE,
            "progress": _INT,
            "inputs": _OBJ,
            "outputs": _OBJ,
            "execution_summary": _SUMMARY,
            "constraints": _CONSTRAINTS,
            "created_at": _TIME,
            "started_at": _NULL_TIME,
            "finished_at": _NULL_TIME,
        },
    },
    "Definition": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "the op's name"},
            "version": _STR,
            "image": _STR,
            "description": _STR,
            "input_specs": {"type": "object", "additionalProperties": _INPUT_SPEC},
            "output_specs": {"type": "object", "additionalProperties": _INPUT_SPEC},
            "constraints": _CONSTRAINTS,
            "retry_policy": _RETRY,
            "event_delivery": _DELIVERY,
            "created_at": _NULL_TIME,
        },
    },
    "RunCreate": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": _STR,
            "priority": {"type": "integer", "default": 5},
            "inputs": _OBJ,
            "constraints": _CONSTRAINTS,
            "retry_policy": _RETRY,
            "event_delivery": _DELIVERY,
            "request_id": {"type": "string", "description": "idempotency key"},
        },
    },
    "RunUpdate": {
        "type": "object",
        "properties": {"state": _STATE, "outputs": _OBJ, "priority": _INT},
    },
    "AddEvent": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": list(EVENT_TYPES)},
            "msg": {"type": ["string", "integer"]},
            "payload": _OBJ,
            "attempt": {"type": "integer", "description": "refused unless the current one"},
        },
    },
    "DefinitionRunCreate": {
        "type": "object",
        "properties": {
            "inputs": _OBJ,
            "priority": {"type": "integer", "default": 5},
            "version": {"type": "string", "description": "default: the latest"},
            "request_id": {"type": "string", "description": "idempotency key"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {"description": "the gRPC message; for 422 a list of {loc, msg, type}"},
            "code": {"type": "string", "description": "the gRPC status code's name"},
            "reason": {"type": "string", "description": "google.rpc.ErrorInfo reason"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": _STR, "description": _STR},
                },
            },
        },
    },
}

_ERROR_TEXT = {
    400: "Refused by the server (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE)",
    401: "No valid X-API-Key (UNAUTHENTICATED)",
    403: "The key may not do this (PERMISSION_DENIED)",
    404: "Not found (NOT_FOUND)",
    409: "request_id reused with another body (ALREADY_EXISTS)",
    422: "The body or a parameter has the wrong type",
    429: "RESOURCE_EXHAUSTED",
    503: "The gRPC server is unavailable",
    504: "The gRPC call's deadline passed",
}
_EVERY_ROUTE_ERRORS = (401, 403, 429, 503, 504)


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": f"Calls gyoza.v1.{route.rpc}.",
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "description": p.description,
                "schema": p.schema,
            }
            for p in (
                *route.params,
                Param("X-API-Key", "header", _STR, "passed to the server as x-api-key"),
            )
        ],
    }
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    if route.stream:
        ok = {
            "description": "text/event-stream: `id: <event id>` and `data: <Event JSON>` per "
            "event, `: heartbeat` comments, and a final `event: end`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": route.ok_schema}}}
    responses: dict[str, Any] = {str(route.ok): ok}
    for status in sorted({*route.errors, *_EVERY_ROUTE_ERRORS}):
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    op["responses"] = responses
    return op


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gyoza-grpc REST gateway",
            "version": "1",
            "description": "The original gyoza router's routes, each translated into a gRPC "
            "call on a gyoza-grpc server. States and event types are spelled as in the "
            "original (PENDING, STARTED, ...); times are ISO 8601.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
