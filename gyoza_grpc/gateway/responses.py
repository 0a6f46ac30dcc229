"""What the gateway answers: one table per answer, each field with the code that fills it from
the gRPC message, so an answer holds exactly the fields its schema lists.

The original's JSON: states and event types by their plain names ("PENDING", "STARTED"),
times as `datetime.isoformat()`, unset optionals as null. A google.protobuf.Struct carries
every number as a double, so whole numbers come back as JSON integers (what the original,
which stored the JSON itself, returned).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from gyoza.v1 import access_pb2, definitions_pb2, runs_pb2, workers_pb2
from gyoza_grpc.gateway.fields import Field, Message, Type
from gyoza_grpc.gateway.messages import EVENT_TYPES, INPUT_TYPES, STATES

_EXACT_FLOAT = 2**53


def state_name(value: int) -> str:
    return runs_pb2.RunState.Name(value).removeprefix("RUN_STATE_")  # type: ignore[arg-type]


def event_type_name(value: int) -> str:
    return runs_pb2.EventType.Name(value).removeprefix("EVENT_TYPE_")  # type: ignore[arg-type]


def iso(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat()


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


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _has(name: str, then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The value of an optional field, or None when it is not set."""
    return lambda msg: then(getattr(msg, name)) if msg.HasField(name) else None


def _attr(name: str) -> Callable[[Any], Any]:
    return lambda msg: getattr(msg, name)


def _or_none(name: str) -> Callable[[Any], Any]:
    """A string field whose empty value the original showed as null."""
    return lambda msg: getattr(msg, name) or None


def _out(name: str, type_: Type, get: Callable[[Any], Any], **kw: Any) -> Field:
    return Field(name, type_, required=True, get=get, **kw)


def _time(name: str) -> Field:
    return _out(name, Type.DATETIME, lambda m: iso(getattr(m, name)))


def _opt_time(name: str) -> Field:
    return _out(name, Type.DATETIME, _has(name, iso), nullable=True)


def _state(get: Callable[[Any], Any], description: str = "") -> Field:
    return _out("state", Type.STRING, get, enum=STATES, description=description)


def _struct(name: str) -> Field:
    return _out(name, Type.OBJECT, lambda m: struct_json(getattr(m, name)))


def _sub(name: str, message: Message, get: Callable[[Any], Any], **kw: Any) -> Field:
    """A nested answer, rendered by its own table."""
    return _out(name, Type.MESSAGE, lambda m: render(message, get(m)), ref=message.name, **kw)


def render(message: Message, msg: Any) -> dict[str, Any] | None:
    """`msg` as the JSON object `message` describes (None stays None)."""
    if msg is None:
        return None
    return {f.name: f.get(msg) for f in message.fields if f.get is not None}


def render_all(message: Message, msgs: Iterable[Any]) -> list[dict[str, Any] | None]:
    return [render(message, m) for m in msgs]


CONSTRAINTS = Message(
    "Constraints",
    tuple(
        _out(name, Type.INT32, _has(name, int), nullable=True)
        for name in ("cpu", "ram_mb", "vram_mb", "gpu_id")
    ),
)
RETRY_POLICY = Message(
    "RetryPolicy",
    (
        _out("max_attempts", Type.INT32, _attr("max_attempts")),
        _out("initial_backoff_s", Type.NUMBER, lambda rp: _seconds(rp.initial_backoff)),
        _out("backoff_multiplier", Type.NUMBER, _attr("backoff_multiplier")),
        _out("max_backoff_s", Type.NUMBER, _has("max_backoff", _seconds), nullable=True),
    ),
)
EVENT_DELIVERY = Message(
    "EventDelivery",
    (
        _out("topic", Type.STRING, _attr("topic")),
        _struct("attributes"),
    ),
)
EXECUTION_SUMMARY = Message(
    "ExecutionSummary",
    (
        _out("duration_ms", Type.INT64, _attr("duration_ms")),
        _out("worker_id", Type.STRING, _or_none("worker_id"), nullable=True),
        _out("error_message", Type.STRING, _or_none("error_message"), nullable=True),
        _out("gpu_id", Type.INT32, _has("gpu_id", int), nullable=True),
    ),
)


def _msg(e: runs_pb2.Event) -> str | int:
    """A PROGRESS event's `msg` is its progress (an int 0-100), as in the original."""
    return e.progress if e.HasField("progress") else e.msg


_EVENT_TYPE = _out("type", Type.STRING, lambda e: event_type_name(e.type), enum=EVENT_TYPES)
_EVENT_TIME = _out("t", Type.DATETIME, lambda e: iso(e.time))
_EVENT_MSG = _out("msg", Type.TEXT_OR_INT, _msg, description="PROGRESS: an int 0-100")
_EVENT_PAYLOAD = _struct("payload")
EVENT = Message(
    "Event",
    (
        _out("id", Type.INT64, _attr("seq"), description="run-wide position 0, 1, 2, ..."),
        _EVENT_TYPE,
        _EVENT_TIME,
        _EVENT_MSG,
        _state(lambda e: state_name(e.state), "the run's state right after this event"),
        _EVENT_PAYLOAD,
        _out("attempt", Type.INT32, _attr("attempt")),
    ),
    "An event of a run's timeline (the SSE stream, `scope=run`, a run's `events`).",
)


def _no_event_delivery(ed: runs_pb2.EventDelivery) -> dict[str, Any] | None:
    """None for "no topic", as the original's `event_delivery=None`."""
    if not ed.topic and not ed.attributes.fields:
        return None
    return render(EVENT_DELIVERY, ed)


def _definition_run_fields() -> tuple[Field, ...]:
    """The spec fields a run and a definition share."""
    return (
        _sub("constraints", CONSTRAINTS, _attr("constraints")),
        _sub("retry_policy", RETRY_POLICY, _attr("retry_policy")),
        _out(
            "event_delivery",
            Type.MESSAGE,
            lambda m: _no_event_delivery(m.event_delivery),
            ref=EVENT_DELIVERY.name,
            nullable=True,
        ),
    )


RUN = Message(
    "Run",
    (
        _out("id", Type.STRING, _attr("id")),
        _state(lambda r: state_name(r.state)),
        _out("priority", Type.INT32, _attr("priority")),
        _out("image", Type.STRING, _attr("image")),
        _struct("inputs"),
        _struct("outputs"),
        *_definition_run_fields(),
        _out("op_definition", Type.STRING, _or_none("op_definition"), nullable=True),
        _out("definition_version", Type.STRING, _or_none("definition_version"), nullable=True),
        _out("progress", Type.INT32, _attr("progress"), minimum=0, maximum=100),
        _out("current_attempt", Type.INT32, _attr("current_attempt"), minimum=1),
        _sub("execution_summary", EXECUTION_SUMMARY, _attr("execution_summary")),
        _time("created_at"),
        _time("updated_at"),
        _opt_time("next_attempt_at"),
        _out("request_id", Type.STRING, _or_none("request_id"), nullable=True),
        _out(
            "last_event_id",
            Type.INT64,
            _attr("last_seq"),
            description="the id of the run's latest event; -1 before the first",
        ),
        _out(
            "events",
            Type.ARRAY,
            lambda r: render_all(EVENT, r.events),
            ref=EVENT.name,
            description="the current attempt's events",
        ),
    ),
    "The original's `OpRun.to_dict()`.",
)
RUN_LIST = Message(
    "RunList",
    (
        _out("object", Type.CONST, lambda _: "list", const="list"),
        _out("data", Type.ARRAY, lambda resp: render_all(RUN, resp.data), ref=RUN.name),
        _out("has_more", Type.BOOLEAN, _attr("has_more")),
        _out("url", Type.CONST, lambda _: "/runs", const="/runs"),
    ),
)


def _state_count(name: str) -> Callable[[Any], Any]:
    value = runs_pb2.RunState.Value(f"RUN_STATE_{name}")
    return lambda counts: next((c.count for c in counts if c.state == value), 0)


RUN_STATE_COUNTS = Message(
    "RunStateCounts",
    tuple(_out(name, Type.INT64, _state_count(name), minimum=0) for name in STATES),
    "How many of the counted runs are in each state.",
)
RUN_COUNT = Message(
    "RunCount",
    (
        _out("total", Type.INT64, _attr("total"), minimum=0, description="the matching runs"),
        _sub(
            "by_state",
            RUN_STATE_COUNTS,
            lambda resp: resp.by_state or None,
            nullable=True,
            description="per state; null when `state` (or `status`) was given",
        ),
    ),
    "How many runs match the filters (RunService.CountRuns).",
)
ATTEMPT = Message(
    "Attempt",
    (
        _out("id", Type.STRING, _attr("id")),
        _out("op_run_id", Type.STRING, _attr("run_id")),
        _out("attempt", Type.INT32, _attr("attempt"), minimum=1),
        _state(lambda a: state_name(a.state)),
        _out("progress", Type.INT32, _attr("progress"), minimum=0, maximum=100),
        _struct("inputs"),
        _struct("outputs"),
        _sub("execution_summary", EXECUTION_SUMMARY, _attr("execution_summary")),
        _sub("constraints", CONSTRAINTS, _attr("constraints")),
        _time("created_at"),
        _opt_time("started_at"),
        _opt_time("finished_at"),
    ),
)


def _input_type(s: definitions_pb2.InputSpec) -> str:
    return definitions_pb2.InputType.Name(s.type).removeprefix("INPUT_TYPE_").lower()


INPUT_SPEC = Message(
    "InputSpec",
    (
        _out("type", Type.STRING, _input_type, enum=INPUT_TYPES),
        _out("required", Type.BOOLEAN, _attr("required")),
        # Present only when the spec has one (a null default is a default).
        Field(
            "default",
            Type.ANY,
            get=_has("default", lambda v: plain(json_format.MessageToDict(v))),
        ),
    ),
)


def render_input_spec(s: definitions_pb2.InputSpec) -> dict[str, Any]:
    out = render(INPUT_SPEC, s) or {}
    if not s.HasField("default"):
        del out["default"]
    return out


def _specs(name: str) -> Callable[[Any], Any]:
    return lambda d: {n: render_input_spec(s) for n, s in sorted(getattr(d, name).items())}


DEFINITION = Message(
    "Definition",
    (
        _out("id", Type.STRING, _attr("name"), description="the op's name"),
        _out("version", Type.STRING, _attr("version")),
        _out("image", Type.STRING, _attr("image")),
        _out("description", Type.STRING, _attr("description")),
        _out("input_specs", Type.MAP, _specs("input_specs"), ref=INPUT_SPEC.name),
        _out("output_specs", Type.MAP, _specs("output_specs"), ref=INPUT_SPEC.name),
        *_definition_run_fields(),
        _opt_time("created_at"),
    ),
)


DEFINITION_LIST = Message(
    "DefinitionList",
    (
        _out(
            "definitions",
            Type.ARRAY,
            lambda resp: render_all(DEFINITION, resp.definitions),
            ref=DEFINITION.name,
            description="the latest version of each definition, by name",
        ),
        _out("has_more", Type.BOOLEAN, _attr("has_more"), description="more after the last"),
    ),
)
DEFINITION_VERSIONS = Message(
    "DefinitionVersions",
    (
        _out(
            "definitions",
            Type.ARRAY,
            lambda resp: render_all(DEFINITION, resp.definitions),
            ref=DEFINITION.name,
            description="every version, the latest (highest semantic version) first",
        ),
    ),
)

# -- workers ----------------------------------------------------------------------------------

WORKER_STATES = ("ALIVE", "EVICTED")


def _worker_state(w: workers_pb2.Worker) -> str:
    return workers_pb2.WorkerState.Name(w.state).removeprefix("WORKER_STATE_")


def _strings(name: str, description: str = "") -> Field:
    return Field(
        name,
        Type.ANY,
        description,
        required=True,
        get=lambda m: list(getattr(m, name)),
        schema={"type": "array", "items": {"type": "string"}},
    )


GPU = Message(
    "Gpu",
    (
        _out("gpu_id", Type.INT32, _attr("gpu_id")),
        _out("vram_mb", Type.INT32, _attr("vram_mb"), description="GPU memory in MiB"),
    ),
)
RESOURCES = Message(
    "Resources",
    (
        _out("cpu", Type.INT32, _attr("cpu"), description="CPU cores"),
        _out("ram_mb", Type.INT32, _attr("ram_mb"), description="RAM in MiB"),
        _out("gpus", Type.ARRAY, lambda m: render_all(GPU, m.gpus), ref=GPU.name),
    ),
)
HELD_ATTEMPT = Message(
    "HeldAttempt",
    (
        _out("run_id", Type.STRING, _attr("run_id")),
        _out("attempt", Type.INT32, _attr("attempt")),
    ),
)
WORKER = Message(
    "Worker",
    (
        _out("worker_id", Type.STRING, _attr("worker_id")),
        _out("state", Type.STRING, _worker_state, enum=WORKER_STATES),
        _sub("resources", RESOURCES, _attr("resources"), description="what it declared"),
        _sub(
            "free",
            RESOURCES,
            _attr("free"),
            description="declared minus what its ASSIGNED and RUNNING runs hold",
        ),
        _strings("tags"),
        _opt_time("last_heartbeat"),
        _opt_time("registered_at"),
        _opt_time("lease_expires_at"),
        _out(
            "held",
            Type.ARRAY,
            lambda w: render_all(HELD_ATTEMPT, w.held),
            ref=HELD_ATTEMPT.name,
            description="the attempts it holds (its ASSIGNED and RUNNING runs)",
        ),
    ),
    "A worker as the server sees it (WorkerService).",
)
WORKER_LIST = Message(
    "WorkerList",
    (
        _out(
            "workers",
            Type.ARRAY,
            lambda resp: render_all(WORKER, resp.workers),
            ref=WORKER.name,
            description="every known worker, alive or evicted",
        ),
    ),
)

# -- the caller -------------------------------------------------------------------------------

ROLES = ("admin", "worker", "reader")


def _role(resp: access_pb2.GetCallerResponse) -> str | None:
    if resp.role == access_pb2.ROLE_UNSPECIFIED:
        return None
    return access_pb2.Role.Name(resp.role).removeprefix("ROLE_").lower()


CALLER = Message(
    "Caller",
    (
        _out(
            "keys_required",
            Type.BOOLEAN,
            _attr("keys_required"),
            description="false when the server has no API keys: anyone may do anything",
        ),
        _out(
            "role",
            Type.STRING,
            _role,
            nullable=True,
            enum=ROLES,
            description="the X-API-Key's role; null when no key is needed",
        ),
        _strings(
            "methods",
            "every gRPC method the caller may call, e.g. /gyoza.v1.RunService/CancelRun",
        ),
    ),
    "What the caller's X-API-Key may do (AccessService.GetCaller).",
)

# -- GET /runs/stream -------------------------------------------------------------------------

RESYNC = Message(
    "Resync",
    (_out("reason", Type.STRING, _attr("reason")),),
    "The data of an `event: resync` frame: changes may have been missed; list the runs again.",
)


# -- GET /runs/{id}/events --------------------------------------------------------------------


def polled_event(index: int, e: runs_pb2.Event, run_state: int) -> dict[str, Any]:
    """An event as the original's poll route wrote it: `id` its index in the current
    attempt's list, `state` the run's current state."""
    return {
        "id": index,
        "type": event_type_name(e.type),
        "t": iso(e.time),
        "msg": _msg(e),
        "state": state_name(run_state),
        "payload": struct_json(e.payload),
    }


POLLED_EVENT = Message(
    "PolledEvent",
    (
        _out("id", Type.INTEGER, _attr("id"), description="its index in the attempt's events"),
        _EVENT_TYPE,
        _EVENT_TIME,
        _EVENT_MSG,
        _state(_attr("state"), "the run's current state"),
        _EVENT_PAYLOAD,
    ),
    "An event as GET /runs/{id}/events answers by default (the original's poll).",
)
EVENT_POLL = Message(
    "EventPoll",
    (_out("events", Type.ARRAY, _attr("events"), ref=POLLED_EVENT.name),),
)
TIMELINE = Message(
    "Timeline",
    (
        _out("events", Type.ARRAY, lambda resp: render_all(EVENT, resp.events), ref=EVENT.name),
        _out("has_more", Type.BOOLEAN, _attr("has_more"), description="more after the last"),
    ),
    "GET /runs/{id}/events?scope=run: every attempt's events, 1,000 at most per page.",
)

# -- errors -----------------------------------------------------------------------------------

VIOLATION = Message(
    "FieldViolation",
    (
        _out("field", Type.STRING, _attr("field")),
        _out("description", Type.STRING, _attr("description")),
    ),
)
ERROR = Message(
    "Error",
    (
        _out("detail", Type.STRING, _attr("detail"), description="what went wrong"),
        Field("code", Type.STRING, "the gRPC status code's name, when the server refused"),
        Field("reason", Type.STRING, "the google.rpc.ErrorInfo reason"),
        Field("metadata", Type.OBJECT, "the google.rpc.ErrorInfo metadata (strings)"),
        Field("errors", Type.ARRAY, "google.rpc.BadRequest field violations", ref=VIOLATION.name),
    ),
    "FastAPI's HTTPException body (`detail`), with the gRPC status where there was one.",
)
VALIDATION_ISSUE = Message(
    "ValidationIssue",
    (
        _out("type", Type.STRING, _attr("type"), description="pydantic's error type"),
        Field(
            "loc",
            Type.ANY,
            "where: ['body', 'image'], ['query', 'limit'], ...",
            required=True,
            schema={"type": "array", "items": {"type": ["string", "integer"]}},
        ),
        _out("msg", Type.STRING, _attr("msg")),
        Field("input", Type.ANY, "the value refused", required=True),
        Field("ctx", Type.OBJECT, "the constraint refused against"),
    ),
)
VALIDATION_ERROR = Message(
    "ValidationError",
    (_out("detail", Type.ARRAY, _attr("detail"), ref=VALIDATION_ISSUE.name),),
    "FastAPI's 422: pydantic's errors, every one of the request.",
)
STREAM_ERROR = Message(
    "StreamError",
    (
        *ERROR.fields,
        Field("status", Type.INT32, "the HTTP status the error would have had", required=True),
    ),
    "The data of an `event: error` frame of the event stream.",
)
RESPONSE_MESSAGES = (
    CONSTRAINTS,
    RETRY_POLICY,
    EVENT_DELIVERY,
    EXECUTION_SUMMARY,
    EVENT,
    RUN,
    RUN_LIST,
    RUN_STATE_COUNTS,
    RUN_COUNT,
    ATTEMPT,
    INPUT_SPEC,
    DEFINITION,
    DEFINITION_LIST,
    DEFINITION_VERSIONS,
    GPU,
    RESOURCES,
    HELD_ATTEMPT,
    WORKER,
    WORKER_LIST,
    CALLER,
    RESYNC,
    POLLED_EVENT,
    EVENT_POLL,
    TIMELINE,
    VIOLATION,
    ERROR,
    VALIDATION_ISSUE,
    VALIDATION_ERROR,
    STREAM_ERROR,
)
