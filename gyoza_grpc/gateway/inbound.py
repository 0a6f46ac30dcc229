"""Validated request JSON (validation.py) -> the gyoza.v1 request messages, and the checks the
original made in its handlers rather than in its models (a state or event type that does not
exist: 400; a created[...] time no datetime holds: 400)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, struct_pb2

from gyoza.v1 import definitions_pb2, runs_pb2
from gyoza_grpc.gateway.errors import HttpError, Unreadable, issue
from gyoza_grpc.gateway.messages import EVENT_TYPES, INVALID_EVENT_TYPE, INVALID_STATE, STATES


def state_value(name: str) -> runs_pb2.RunState.ValueType:
    """ "PENDING" -> RUN_STATE_PENDING; a name that is no state is the original's 400."""
    if name not in STATES:
        raise HttpError(400, INVALID_STATE.format(name))
    return runs_pb2.RunState.Value(f"RUN_STATE_{name}")


def event_type_value(name: str) -> runs_pb2.EventType.ValueType:
    if name not in EVENT_TYPES:
        raise HttpError(400, INVALID_EVENT_TYPE.format(name))
    return runs_pb2.EventType.Value(f"EVENT_TYPE_{name}")


class _Structs:
    """JSON objects -> google.protobuf.Struct, collecting a 422 per object that holds a number
    no double can (an integer past 1e308)."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def __call__(self, doc: Mapping[str, Any] | None, *loc: str) -> struct_pb2.Struct | None:
        if doc is None:
            return None
        out = struct_pb2.Struct()
        try:
            out.update(doc)
        except (OverflowError, ValueError):
            msg = "Input should hold only numbers a double can hold"
            self.errors.append(issue(["body", *loc], msg, "float_range", doc))
        return out

    def check(self) -> None:
        if self.errors:
            raise Unreadable(self.errors)


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def _constraints(doc: Mapping[str, Any] | None) -> runs_pb2.Constraints:
    out = runs_pb2.Constraints()
    for name, value in (doc or {}).items():
        if value is not None:
            setattr(out, name, value)
    return out


def _retry_policy(doc: Mapping[str, Any] | None) -> runs_pb2.RetryPolicy:
    doc = doc or {}
    out = runs_pb2.RetryPolicy(
        max_attempts=doc.get("max_attempts") or 0,
        backoff_multiplier=doc.get("backoff_multiplier") or 0.0,
    )
    for name, field in (("initial_backoff_s", "initial_backoff"), ("max_backoff_s", "max_backoff")):
        if doc.get(name) is not None:
            getattr(out, field).CopyFrom(_duration(doc[name]))
    return out


def create_run_request(body: Mapping[str, Any]) -> runs_pb2.CreateRunRequest:
    """POST /runs: the original's OpRunCreate (+ optional `request_id` for idempotency)."""
    structs = _Structs()
    delivery = body.get("event_delivery") or {}
    req = runs_pb2.CreateRunRequest(
        image=body["image"],
        inputs=structs(body.get("inputs"), "inputs"),
        constraints=_constraints(body.get("constraints")),
        retry_policy=_retry_policy(body.get("retry_policy")),
        event_delivery=runs_pb2.EventDelivery(
            topic=delivery.get("topic") or "",
            attributes=structs(delivery.get("attributes"), "event_delivery", "attributes"),
        ),
        request_id=body.get("request_id") or "",
    )
    if body.get("priority") is not None:
        req.priority = body["priority"]
    structs.check()
    return req


def update_run_request(run_id: str, body: Mapping[str, Any]) -> runs_pb2.UpdateRunRequest:
    """PATCH /runs/{id}: the original's OpRunUpdate (state, outputs, priority; null = not
    given). The update mask names exactly the fields given, so `"outputs": {}` clears them.
    The state is checked by the caller (the original looked the run up first)."""
    structs = _Structs()
    req = runs_pb2.UpdateRunRequest(id=run_id)
    if body.get("state") is not None:
        req.state = state_value(body["state"])
        req.update_mask.paths.append("state")
    outputs = structs(body.get("outputs"), "outputs")
    structs.check()
    if outputs is not None:
        req.outputs.CopyFrom(outputs)
        req.update_mask.paths.append("outputs")
    if body.get("priority") is not None:
        req.priority = body["priority"]
        req.update_mask.paths.append("priority")
    return req


def add_event_request(run_id: str, body: Mapping[str, Any]) -> runs_pb2.AddEventRequest:
    """POST /runs/{id}/events: the original's AddEventRequest (type, msg: text or an int for
    PROGRESS, payload) and an optional `attempt` that fences a stale worker."""
    structs = _Structs()
    payload = structs(body.get("payload"), "payload")
    structs.check()
    msg = body.get("msg")
    req = runs_pb2.AddEventRequest(
        run_id=run_id,
        type=event_type_value(body["type"]),
        msg="" if msg is None else str(msg),
        payload=payload,
    )
    if body.get("attempt") is not None:
        req.attempt = body["attempt"]
    return req


def run_from_definition_request(
    name: str, body: Mapping[str, Any]
) -> definitions_pb2.CreateRunFromDefinitionRequest:
    """POST /definitions/{name}/runs: inputs, priority, and optionally version, request_id."""
    structs = _Structs()
    req = definitions_pb2.CreateRunFromDefinitionRequest(
        name=name,
        version=body.get("version") or "",
        inputs=structs(body.get("inputs"), "inputs"),
        request_id=body.get("request_id") or "",
    )
    if body.get("priority") is not None:
        req.priority = body["priority"]
    structs.check()
    return req


CREATED_FILTERS = ("gte", "lte", "gt", "lt")


def _set_run_filters(
    req: runs_pb2.ListRunsRequest | runs_pb2.CountRunsRequest, q: Mapping[str, Any]
) -> None:
    """GET /runs' filters, checked in the original's order: state and status must agree, the
    state must exist, every created[...] must be a time `datetime.fromtimestamp` can hold."""
    state, status = q.get("state") or None, q.get("status") or None
    if state and status and state != status:
        raise HttpError(400, "state and status must match when both are provided")
    req.op_definition = q.get("op_definition") or ""
    req.image = q.get("image") or ""
    req.topic = q.get("topic") or ""
    selected = state or status
    if selected:
        req.state = state_value(selected)
    for op in CREATED_FILTERS:
        seconds = q.get(f"created[{op}]")
        if seconds is None:
            continue
        try:
            when = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise HttpError(400, "Invalid created timestamp") from None
        getattr(req, f"created_{op}").FromDatetime(when)


def list_runs_request(q: Mapping[str, Any]) -> runs_pb2.ListRunsRequest:
    """GET /runs: a page and the filters."""
    req = runs_pb2.ListRunsRequest(
        limit=q["limit"],
        starting_after=q.get("starting_after") or "",
        ending_before=q.get("ending_before") or "",
    )
    _set_run_filters(req, q)
    return req


def count_runs_request(q: Mapping[str, Any]) -> runs_pb2.CountRunsRequest:
    """GET /runs/count: GET /runs' filters."""
    req = runs_pb2.CountRunsRequest()
    _set_run_filters(req, q)
    return req


def watch_runs_request(q: Mapping[str, Any]) -> runs_pb2.WatchRunsRequest:
    """GET /runs/stream: the filters a run never leaves."""
    return runs_pb2.WatchRunsRequest(
        op_definition=q.get("op_definition") or "",
        image=q.get("image") or "",
        topic=q.get("topic") or "",
    )
