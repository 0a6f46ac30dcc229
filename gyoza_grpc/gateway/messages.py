"""What the gateway reads: one table per request body, and the parameters of each route.

The original's request models (OpRunCreate, OpRunUpdate, AddEventRequest) with the gateway's
additions (request_id, gpu_id, the retry backoff, an event's attempt). Every optional field
also takes null, meaning "not given". Bounds are the ones the server enforces on the same
field, so the schema tells a client before the server does.
"""

from __future__ import annotations

from gyoza.v1 import definitions_pb2, runs_pb2
from gyoza_grpc.domain.definitions import MAX_NAME_LEN
from gyoza_grpc.domain.runs import MAX_IMAGE_LEN, MAX_REQUEST_ID_LEN, MAX_TOPIC_LEN
from gyoza_grpc.gateway.fields import Field, Message, Parameter, Type

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
INVALID_STATE = "Invalid state '{}'"
INVALID_EVENT_TYPE = "Invalid event type '{}' (one of " + ", ".join(EVENT_TYPES) + ")"
# A google.protobuf.Duration holds up to 10,000 years.
MAX_DURATION_S = 315_576_000_000
DEFINITION_NAME_PATTERN = "^[a-z0-9_-]+$"


def _opt(name: str, type_: Type, description: str = "", **kw: object) -> Field:
    return Field(name, type_, description, nullable=True, **kw)  # type: ignore[arg-type]


CONSTRAINTS_IN = Message(
    "ConstraintsInput",
    tuple(
        _opt(name, Type.INT32, what, minimum=0)
        for name, what in (
            ("cpu", "CPU cores the run needs"),
            ("ram_mb", "RAM in MiB"),
            ("vram_mb", "GPU memory in MiB"),
            ("gpu_id", "pin the run to this GPU of its worker"),
        )
    ),
)
RETRY_POLICY_IN = Message(
    "RetryPolicyInput",
    (
        _opt("max_attempts", Type.INT32, "attempts in all; 0 means 1", minimum=0),
        _opt(
            "initial_backoff_s",
            Type.NUMBER,
            "seconds before the first automatic retry",
            minimum=0,
            maximum=MAX_DURATION_S,
        ),
        _opt(
            "backoff_multiplier",
            Type.NUMBER,
            "each retry waits this many times longer: 1 to 1000, 0 means 1",
            minimum=0,
            maximum=1000,
        ),
        _opt(
            "max_backoff_s",
            Type.NUMBER,
            "the longest wait between attempts",
            minimum=0,
            maximum=MAX_DURATION_S,
        ),
    ),
)
EVENT_DELIVERY_IN = Message(
    "EventDeliveryInput",
    (
        _opt("topic", Type.STRING, "publish the events to this topic", max_length=MAX_TOPIC_LEN),
        _opt("attributes", Type.OBJECT, "attached to each published event"),
    ),
)
_PRIORITY = _opt("priority", Type.INT32, "higher runs first", default=5)
_REQUEST_ID = _opt(
    "request_id",
    Type.STRING,
    "idempotency key: the same key and body return the first run",
    max_length=MAX_REQUEST_ID_LEN,
)
RUN_CREATE = Message(
    "RunCreate",
    (
        Field(
            "image",
            Type.STRING,
            "the container image",
            required=True,
            min_length=1,
            max_length=MAX_IMAGE_LEN,
        ),
        _PRIORITY,
        _opt("inputs", Type.OBJECT, "the op's JSON inputs"),
        _opt("constraints", Type.MESSAGE, ref=CONSTRAINTS_IN.name),
        _opt("retry_policy", Type.MESSAGE, ref=RETRY_POLICY_IN.name),
        _opt("event_delivery", Type.MESSAGE, ref=EVENT_DELIVERY_IN.name),
        _REQUEST_ID,
    ),
)
RUN_UPDATE = Message(
    "RunUpdate",
    (
        _opt(
            "state",
            Type.STRING,
            "a legal transition from the run's state",
            enum=STATES,
            enum_error=INVALID_STATE,
        ),
        _opt("outputs", Type.OBJECT, "replaces the current attempt's outputs"),
        _opt("priority", Type.INT32),
    ),
    "Fields that are absent or null are left as they are.",
)
ADD_EVENT = Message(
    "AddEvent",
    (
        Field(
            "type",
            Type.STRING,
            required=True,
            enum=EVENT_TYPES,
            enum_error=INVALID_EVENT_TYPE,
        ),
        _opt("msg", Type.TEXT_OR_INT, "text; for PROGRESS the progress, 0-100"),
        _opt("payload", Type.OBJECT),
        _opt("attempt", Type.INT32, "refused unless it is the run's current attempt", minimum=1),
    ),
)
DEFINITION_RUN_CREATE = Message(
    "DefinitionRunCreate",
    (
        _opt("inputs", Type.OBJECT, "checked against the definition's input specs"),
        _PRIORITY,
        _opt("version", Type.STRING, "a semantic version; default: the latest"),
        _REQUEST_ID,
    ),
)
REQUEST_MESSAGES = (
    CONSTRAINTS_IN,
    RETRY_POLICY_IN,
    EVENT_DELIVERY_IN,
    RUN_CREATE,
    RUN_UPDATE,
    ADD_EVENT,
    DEFINITION_RUN_CREATE,
)


# -- parameters -------------------------------------------------------------------------------

RUN_ID = Parameter("path", Field("id", Type.STRING, "the run's id", required=True))
DEFINITION_NAME = Parameter(
    "path",
    Field(
        "name",
        Type.STRING,
        "the op definition's name",
        required=True,
        max_length=MAX_NAME_LEN,
        pattern=DEFINITION_NAME_PATTERN,
    ),
)
API_KEY = Parameter(
    "header",
    Field("X-API-Key", Type.STRING, "passed to the server as x-api-key", pattern="^[ -~]*$"),
)
_STATE_FILTER = Field(
    "state",
    Type.STRING,
    "only runs in this state (empty: any)",
    enum=(*STATES, ""),
    enum_error=INVALID_STATE,
)
RUN_PROPERTY_FILTERS = (
    Parameter("query", Field("op_definition", Type.STRING, "only runs made from this op")),
    Parameter("query", Field("image", Type.STRING, "only runs of this image")),
    Parameter("query", Field("topic", Type.STRING, "only runs publishing to this topic")),
)
# GET /runs' filters, which GET /runs/count takes too.
RUN_FILTERS_QUERY = (
    Parameter("query", _STATE_FILTER),
    Parameter(
        "query",
        Field(
            "status",
            Type.STRING,
            "alias of state; must match it when both are given",
            enum=_STATE_FILTER.enum,
            enum_error=INVALID_STATE,
        ),
    ),
    *RUN_PROPERTY_FILTERS,
    *(
        Parameter(
            "query",
            Field(f"created[{op}]", Type.INTEGER, f"created_at {text} this UNIX time (seconds)"),
        )
        for op, text in (
            ("gte", "at or after"),
            ("lte", "at or before"),
            ("gt", "after"),
            ("lt", "before"),
        )
    ),
)
RUN_VIEWS = ("full", "basic")
LIST_RUNS_QUERY = (
    Parameter(
        "query",
        Field("limit", Type.INTEGER, "page size", default=10, minimum=1, maximum=100),
    ),
    Parameter(
        "query",
        Field("starting_after", Type.STRING, "a run id: the next (older) page after it"),
    ),
    Parameter(
        "query",
        Field("ending_before", Type.STRING, "a run id: the previous (newer) page before it"),
    ),
    *RUN_FILTERS_QUERY,
    Parameter(
        "query",
        Field(
            "view",
            Type.STRING,
            "full (the original's answer): each run with its current attempt's events; "
            "basic: `events` left empty, a lighter page (the dashboard's list)",
            enum=RUN_VIEWS,
            default="full",
        ),
    ),
)
# GET /runs/stream: the filters a run never leaves (its state changes, so it is no filter).
RUNS_STREAM_QUERY = RUN_PROPERTY_FILTERS
SCOPES = ("attempt", "run")
LIST_EVENTS_QUERY = (
    Parameter(
        "query",
        Field(
            "after",
            Type.INTEGER,
            "only events after this id (scope=attempt: an index, as Python slices it; "
            "scope=run: a run-wide id)",
        ),
    ),
    Parameter(
        "query",
        Field(
            "scope",
            Type.STRING,
            "attempt (the original's answer): the current attempt's events, `id` their "
            "index, `state` the run's state; run: every attempt's events, `id` the run-wide "
            "seq, `state` the run's state after each, paged by `has_more`",
            enum=SCOPES,
            default="attempt",
        ),
    ),
)
STREAM_QUERY = (
    Parameter(
        "query",
        Field("after", Type.INT64, "replay only the events whose id is greater than this"),
    ),
    Parameter(
        "header",
        Field("Last-Event-ID", Type.INT64, "resume after this event id (wins over after)"),
    ),
)
DEFINITION_QUERY = (
    Parameter("query", Field("version", Type.STRING, "a semantic version; default: the latest")),
)
LIST_DEFINITIONS_QUERY = (
    Parameter(
        "query",
        Field("limit", Type.INTEGER, "page size", default=10, minimum=1, maximum=100),
    ),
    Parameter(
        "query",
        Field("starting_after", Type.STRING, "a definition name: the next page after it"),
    ),
)
WORKER_ID = Parameter("path", Field("worker_id", Type.STRING, "the worker's id", required=True))
