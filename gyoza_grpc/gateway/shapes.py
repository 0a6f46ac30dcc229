"""The original's JSON <-> gyoza.v1 messages, both ways, and nothing more.

Outbound: states and event types by their plain names ("PENDING", "STARTED"), times as
ISO 8601 strings (`datetime.isoformat()`, as the original's `to_dict`), an event's position as
`id` and its time as `t`, unset optionals as null. A google.protobuf.Struct carries every number
as a double, so whole numbers come back as JSON integers (what the original, which stored the
JSON itself, returned).

Inbound: a body or query value of the wrong JSON type is FastAPI's 422; a state or event type
that does not exist is the original's 400 ("Invalid state 'X'"); everything else (ranges, empty
fields, illegal transitions) is checked by the server and comes back as its status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from gyoza.v1 import definitions_pb2, runs_pb2
from gyoza_grpc.gateway.errors import HttpError, Unreadable, unreadable

STATES = tuple(
    name.removeprefix("RUN_STATE_")
    for name in runs_pb2.RunState.DESCRIPTOR.values_by_name
    if name != "RUN_STATE_UNSPECIFIED"
)
EVENT_TYPES = tuple(
    name.removeprefix("EVENT_TYPE_")
    for name in runs_pb2.EventType.DESCRIPTOR.values_by_name
    if name != "EVENT_TYPE_UNSPECIFIED"
)
INPUT_TYPES = tuple(
    name.removeprefix("INPUT_TYPE_").lower()
    for name in definitions_pb2.InputType.DESCRIPTOR.values_by_name
    if name != "INPUT_TYPE_UNSPECIFIED"
)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_EXACT_FLOAT = 2**53
# protobuf's decoder stops at 100 nested messages, and each JSON level of a Struct is two
# (Struct/ListValue, Value): 32 levels keep every body, and the runs made from it, readable.
MAX_JSON_DEPTH = 32


# -- outbound ---------------------------------------------------------------------------------


def state_name(value: int) -> str:
    return runs_pb2.RunState.Name(value).removeprefix("RUN_STATE_")  # type: ignore[arg-type]


def event_type_name(value: int) -> str:
    return runs_pb2.EventType.Name(value).removeprefix("EVENT_TYPE_")  # type: ignore[arg-type]


def iso(ts: timestamp_pb2.Timestamp) -> str:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC).isoformat()


def _iso_or_none(msg: Any, name: str) -> str | None:
    return iso(getattr(msg, name)) if msg.HasField(name) else None


def plain(doc: Any) -> Any:
    """JSON from a Struct's dict: whole doubles become integers again."""
    if isinstance(doc, float) and doc.is_integer() and abs(doc) <= _EXACT_FLOAT:
        return int(doc)
    if isinstance(doc, dict):
        return {k: plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [plain(v) for v in doc]
    return doc


def struct_json(s: struct_pb2.Struct) -> dict[str, Any]:
    return plain(json_format.MessageToDict(s)) if s.fields else {}


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def constraints_json(c: runs_pb2.Constraints) -> dict[str, Any]:
    return {name: _opt(c, name) for name in ("cpu", "ram_mb", "vram_mb", "gpu_id")}


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def retry_policy_json(rp: runs_pb2.RetryPolicy) -> dict[str, Any]:
    return {
        "max_attempts": rp.max_attempts,
        "initial_backoff_s": _seconds(rp.initial_backoff),
        "backoff_multiplier": rp.backoff_multiplier,
        "max_backoff_s": _seconds(rp.max_backoff) if rp.HasField("max_backoff") else None,
    }


def event_delivery_json(ed: runs_pb2.EventDelivery) -> dict[str, Any] | None:
    """None for "no topic", as the original's `event_delivery=None`."""
    if not ed.topic and not ed.attributes.fields:
        return None
    return {"topic": ed.topic, "attributes": struct_json(ed.attributes)}


def summary_json(s: runs_pb2.ExecutionSummary) -> dict[str, Any]:
    return {
        "duration_ms": s.duration_ms,
        "worker_id": s.worker_id or None,
        "error_message": s.error_message or None,
        "gpu_id": _opt(s, "gpu_id"),
    }


def event_json(e: runs_pb2.Event) -> dict[str, Any]:
    """`id` is the run-wide seq (what `after=` and Last-Event-ID take); a PROGRESS event's
    `msg` is its progress (an int 0-100), as in the original."""
    return {
        "id": e.seq,
        "type": event_type_name(e.type),
        "t": iso(e.time),
        "msg": e.progress if e.HasField("progress") else e.msg,
        "state": state_name(e.state),
        "payload": struct_json(e.payload),
        "attempt": e.attempt,
    }


def run_json(run: runs_pb2.Run, *, with_events: bool) -> dict[str, Any]:
    """The original's `OpRun.to_dict()`; `events` (the current attempt's) only where the
    call returned them (reads with RUN_VIEW_FULL, and a new run, which has none yet)."""
    out: dict[str, Any] = {
        "id": run.id,
        "state": state_name(run.state),
        "priority": run.priority,
        "image": run.image,
        "inputs": struct_json(run.inputs),
        "outputs": struct_json(run.outputs),
        "constraints": constraints_json(run.constraints),
        "retry_policy": retry_policy_json(run.retry_policy),
        "event_delivery": event_delivery_json(run.event_delivery),
        "op_definition": run.op_definition or None,
        "definition_version": run.definition_version or None,
        "progress": run.progress,
        "current_attempt": run.current_attempt,
        "execution_summary": summary_json(run.execution_summary),
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "next_attempt_at": _iso_or_none(run, "next_attempt_at"),
        "request_id": run.request_id or None,
        "last_event_id": run.last_seq,
    }
    if with_events:
        out["events"] = [event_json(e) for e in run.events]
    return out


def attempt_json(a: runs_pb2.Attempt) -> dict[str, Any]:
    return {
        "id": a.id,
        "op_run_id": a.run_id,
        "attempt": a.attempt,
        "state": state_name(a.state),
        "progress": a.progress,
        "inputs": struct_json(a.inputs),
        "outputs": struct_json(a.outputs),
        "execution_summary": summary_json(a.execution_summary),
        "constraints": constraints_json(a.constraints),
        "created_at": iso(a.created_at),
        "started_at": _iso_or_none(a, "started_at"),
        "finished_at": _iso_or_none(a, "finished_at"),
    }


def _input_spec_json(s: definitions_pb2.InputSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": definitions_pb2.InputType.Name(s.type).removeprefix("INPUT_TYPE_").lower(),
        "required": s.required,
    }
    if s.HasField("default"):
        out["default"] = plain(json_format.MessageToDict(s.default))
    return out


def definition_json(d: definitions_pb2.Definition) -> dict[str, Any]:
    """An op definition; its `id` is the op's name, as in the original."""
    return {
        "id": d.name,
        "version": d.version,
        "image": d.image,
        "description": d.description,
        "input_specs": {n: _input_spec_json(s) for n, s in sorted(d.input_specs.items())},
        "output_specs": {n: _input_spec_json(s) for n, s in sorted(d.output_specs.items())},
        "constraints": constraints_json(d.constraints),
        "retry_policy": retry_policy_json(d.retry_policy),
        "event_delivery": event_delivery_json(d.event_delivery),
        "created_at": _iso_or_none(d, "created_at"),
    }


# -- inbound ----------------------------------------------------------------------------------


def state_value(name: str) -> runs_pb2.RunState.ValueType:
    """ "PENDING" -> RUN_STATE_PENDING; a name that is no state is the original's 400."""
    if name not in STATES:
        raise HttpError(400, f"Invalid state '{name}'")
    return runs_pb2.RunState.Value(f"RUN_STATE_{name}")


def event_type_value(name: str) -> runs_pb2.EventType.ValueType:
    if name not in EVENT_TYPES:
        raise HttpError(400, f"Invalid event type '{name}' (one of {', '.join(EVENT_TYPES)})")
    return runs_pb2.EventType.Value(f"EVENT_TYPE_{name}")


def parse_body(raw: bytes, *, required: bool = True) -> dict[str, Any]:
    """A JSON object body (an empty body is `{}` where nothing is required)."""
    if not raw.strip() and not required:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise Unreadable(
            [unreadable(["body"], f"JSON decode error: {err}", "json_invalid")]
        ) from None
    if not isinstance(doc, dict):
        raise Unreadable([unreadable(["body"], "Input should be a JSON object", "dict_type")])
    _check_convertible(doc)
    return doc


def _check_convertible(doc: dict[str, Any]) -> None:
    """422 for what JSON can hold but a protobuf message cannot: a string with a lone
    surrogate (`"\\ud800"`, not UTF-8) or nesting deeper than MAX_JSON_DEPTH."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise Unreadable(
                    [unreadable(["body"], "Input should be valid UTF-8", "string_unicode")]
                ) from None
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                msg = f"Input should be nested at most {MAX_JSON_DEPTH} levels deep"
                raise Unreadable([unreadable(["body"], msg, "json_invalid")])
            items = [*value, *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


class Reader:
    """Reads typed fields from a JSON object, collecting every 422 error before raising."""

    def __init__(self, doc: Mapping[str, Any], loc: Iterable[str | int] = ("body",)) -> None:
        self.doc = doc
        self.loc = list(loc)
        self.errors: list[dict[str, Any]] = []

    def bad(self, name: str, msg: str, kind: str) -> None:
        self.errors.append(unreadable([*self.loc, name], msg, kind))

    def integer(self, name: str, bounds: tuple[int, int] = _INT32) -> int | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.bad(name, "Input should be a valid integer", "int_type")
            return None
        if not bounds[0] <= value <= bounds[1]:
            self.bad(name, f"Input should be between {bounds[0]} and {bounds[1]}", "int_range")
            return None
        return value

    def number(self, name: str) -> float | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.bad(name, "Input should be a valid number", "float_type")
            return None
        try:
            return float(value)
        except OverflowError:
            self.bad(name, "Input should be a number a double can hold", "float_range")
            return None

    def text(self, name: str) -> str | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.bad(name, "Input should be a valid string", "string_type")
            return None
        return value

    def object(self, name: str) -> dict[str, Any] | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.bad(name, "Input should be a valid dictionary", "dict_type")
            return None
        return value

    def struct(self, name: str) -> struct_pb2.Struct | None:
        """An object as a google.protobuf.Struct (None when not given)."""
        doc = self.object(name)
        if doc is None:
            return None
        try:
            return struct(doc)
        except (OverflowError, ValueError):  # an integer too large for a double
            self.bad(name, "Input should hold only numbers a double can hold", "float_range")
            return None

    def sub(self, name: str) -> Reader | None:
        doc = self.object(name)
        if doc is None:
            return None
        child = Reader(doc, [*self.loc, name])
        child.errors = self.errors  # one list: every error of the request is reported
        return child

    def check(self) -> None:
        if self.errors:
            raise Unreadable(self.errors)


def struct(doc: Mapping[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if doc:
        out.update(doc)
    return out


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def _constraints(r: Reader | None) -> runs_pb2.Constraints:
    out = runs_pb2.Constraints()
    if r is None:
        return out
    for name in ("cpu", "ram_mb", "vram_mb", "gpu_id"):
        value = r.integer(name)
        if value is not None:
            setattr(out, name, value)
    return out


def _retry_policy(r: Reader | None) -> runs_pb2.RetryPolicy:
    out = runs_pb2.RetryPolicy()
    if r is None:
        return out
    out.max_attempts = r.integer("max_attempts") or 0
    out.backoff_multiplier = r.number("backoff_multiplier") or 0.0
    for name, field in (("initial_backoff_s", "initial_backoff"), ("max_backoff_s", "max_backoff")):
        seconds = r.number(name)
        if seconds is None:
            continue
        try:
            getattr(out, field).CopyFrom(_duration(seconds))
        except (ValueError, OverflowError):
            r.bad(name, "Input should be a valid number of seconds", "duration")
    return out


def _event_delivery(r: Reader | None) -> runs_pb2.EventDelivery:
    if r is None:
        return runs_pb2.EventDelivery()
    return runs_pb2.EventDelivery(topic=r.text("topic") or "", attributes=r.struct("attributes"))


def create_run_request(body: Mapping[str, Any]) -> runs_pb2.CreateRunRequest:
    """POST /runs: the original's OpRunCreate (+ optional `request_id` for idempotency)."""
    r = Reader(body)
    req = runs_pb2.CreateRunRequest(
        image=r.text("image") or "",
        inputs=r.struct("inputs"),
        constraints=_constraints(r.sub("constraints")),
        retry_policy=_retry_policy(r.sub("retry_policy")),
        event_delivery=_event_delivery(r.sub("event_delivery")),
        request_id=r.text("request_id") or "",
    )
    priority = r.integer("priority")
    if priority is not None:
        req.priority = priority
    r.check()
    return req


def update_run_request(run_id: str, body: Mapping[str, Any]) -> runs_pb2.UpdateRunRequest:
    """PATCH /runs/{id}: the original's OpRunUpdate (state, outputs, priority; null = unset).
    The update mask names exactly the fields given, so `"outputs": {}` clears the outputs."""
    r = Reader(body)
    req = runs_pb2.UpdateRunRequest(id=run_id)
    state = r.text("state")
    outputs = r.struct("outputs")
    priority = r.integer("priority")
    r.check()
    if state is not None:
        req.state = state_value(state)
        req.update_mask.paths.append("state")
    if outputs is not None:
        req.outputs.CopyFrom(outputs)
        req.update_mask.paths.append("outputs")
    if priority is not None:
        req.priority = priority
        req.update_mask.paths.append("priority")
    return req


def add_event_request(run_id: str, body: Mapping[str, Any]) -> runs_pb2.AddEventRequest:
    """POST /runs/{id}/events: the original's AddEventRequest (type, msg: str or an int for
    PROGRESS, payload) and an optional `attempt` that fences a stale worker."""
    r = Reader(body)
    type_ = r.text("type")
    msg = body.get("msg")
    if msg is not None and (not isinstance(msg, str | int) or isinstance(msg, bool)):
        r.bad("msg", "Input should be a valid string or integer", "string_type")
    payload = r.struct("payload")
    attempt = r.integer("attempt")
    if type_ is None:
        r.bad("type", "Field required", "missing")
    r.check()
    req = runs_pb2.AddEventRequest(
        run_id=run_id,
        type=event_type_value(type_ or ""),
        msg="" if msg is None else str(msg),
        payload=payload,
    )
    if attempt is not None:
        req.attempt = attempt
    return req


def run_from_definition_request(
    name: str, body: Mapping[str, Any]
) -> definitions_pb2.CreateRunFromDefinitionRequest:
    """POST /definitions/{name}/runs: inputs, priority, and optionally version, request_id."""
    r = Reader(body)
    req = definitions_pb2.CreateRunFromDefinitionRequest(
        name=name,
        version=r.text("version") or "",
        inputs=r.struct("inputs"),
        request_id=r.text("request_id") or "",
    )
    priority = r.integer("priority")
    if priority is not None:
        req.priority = priority
    r.check()
    return req


CREATED_FILTERS = ("gte", "lte", "gt", "lt")


def _query_int(query: Mapping[str, str], name: str, errors: list[dict[str, Any]]) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        errors.append(
            unreadable(
                ["query", name],
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
            )
        )
        return None


def list_runs_request(query: Mapping[str, str]) -> runs_pb2.ListRunsRequest:
    """GET /runs: the original's query parameters.

    `limit` keeps the original's declared bounds (1-100, default 10: FastAPI's 422 outside
    them; the contract's 0 would silently mean 10). `state` and its alias `status` must agree.
    """
    errors: list[dict[str, Any]] = []
    limit = _query_int(query, "limit", errors)
    if limit is not None and not 1 <= limit <= 100:
        kind, bound = ("greater_than_equal", "greater than or equal to 1")
        if limit > 100:
            kind, bound = ("less_than_equal", "less than or equal to 100")
        errors.append(unreadable(["query", "limit"], f"Input should be {bound}", kind))
    created = {op: _query_int(query, f"created[{op}]", errors) for op in CREATED_FILTERS}
    if errors:
        raise Unreadable(errors)

    state, status = query.get("state") or None, query.get("status") or None
    if state and status and state != status:
        raise HttpError(400, "state and status must match when both are provided")
    req = runs_pb2.ListRunsRequest(
        limit=limit or 10,
        starting_after=query.get("starting_after", ""),
        ending_before=query.get("ending_before", ""),
        op_definition=query.get("op_definition", ""),
        image=query.get("image", ""),
        topic=query.get("topic", ""),
        view=runs_pb2.RUN_VIEW_FULL,
    )
    selected = state or status
    if selected:
        req.state = state_value(selected)
    for op, seconds in created.items():
        if seconds is None:
            continue
        if not _INT64[0] <= seconds <= _INT64[1]:
            raise HttpError(400, "Invalid created timestamp")
        getattr(req, f"created_{op}").seconds = seconds
    return req


def after_value(text: str | None, name: str, loc: str = "query") -> int | None:
    """An event cursor (`after`, Last-Event-ID): an integer, or 422."""
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not _INT64[0] <= value <= _INT64[1]:
        raise Unreadable(
            [unreadable([loc, name], "Input should be a valid integer", "int_parsing")]
        )
    return value
