"""proto <-> domain: the only code that touches HasField, Timestamp, Struct and FieldMask.

Inbound conversions validate what protobuf itself cannot (unknown enum numbers, non-finite
numbers and NUL characters in Structs, timestamps out of range) and raise InvalidArgument
naming the field, so bad input never reaches the store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from gyoza.v1 import definitions_pb2, runs_pb2
from gyoza_grpc.domain.clock import to_us
from gyoza_grpc.domain.definitions import Definition
from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.inputs import InputSpec, InputType
from gyoza_grpc.domain.limits import MAX_JSON_DEPTH
from gyoza_grpc.domain.model import (
    DEFAULT_PRIORITY,
    JSON,
    Attempt,
    Constraints,
    Event,
    EventDelivery,
    EventType,
    ExecutionSummary,
    RetryPolicy,
    Run,
    RunSpec,
    RunState,
)

# Proto enum numbers <-> domain enums, built once from the descriptors.
_STATE_TO_PB: dict[RunState, runs_pb2.RunState.ValueType] = {
    s: runs_pb2.RunState.Value(f"RUN_STATE_{s.value}") for s in RunState
}
_PB_TO_STATE: dict[int, RunState] = {v: k for k, v in _STATE_TO_PB.items()}
_TYPE_TO_PB: dict[EventType, runs_pb2.EventType.ValueType] = {
    t: runs_pb2.EventType.Value(f"EVENT_TYPE_{t.value}") for t in EventType
}
_PB_TO_TYPE: dict[int, EventType] = {v: k for k, v in _TYPE_TO_PB.items()}

# Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


# -- inbound ---------------------------------------------------------------------------------


def state_from_pb(value: int, field: str) -> RunState:
    try:
        return _PB_TO_STATE[value]
    except KeyError:
        name = "RUN_STATE_UNSPECIFIED" if value == 0 else f"unknown RunState {value}"
        raise InvalidArgument.field(field, f"must be a run state, got {name}") from None


def event_type_from_pb(value: int, field: str = "type") -> EventType:
    try:
        return _PB_TO_TYPE[value]
    except KeyError:
        name = "EVENT_TYPE_UNSPECIFIED" if value == 0 else f"unknown EventType {value}"
        raise InvalidArgument.field(field, f"must be an event type, got {name}") from None


def _check_json(doc: Any, field: str, max_bytes: int | None = None) -> None:
    """Finite numbers, no NUL characters, and (with `max_bytes`) a canonical JSON encoding
    of at most that many bytes: one encoding serves all three checks."""
    try:
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        raise InvalidArgument.field(field, "numbers must be finite (no NaN or Infinity)") from None
    if "\\u0000" in text:
        raise InvalidArgument.field(field, "must not contain NUL characters")
    if max_bytes is not None:
        size = len(text.encode())
        if size > max_bytes:
            raise InvalidArgument.field(
                field, f"is {size} bytes of JSON; at most {max_bytes} bytes are allowed"
            )


def _depth(doc: Any) -> int:
    """How deeply objects and arrays nest in `doc` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def struct_to_dict(struct: struct_pb2.Struct, field: str, max_bytes: int | None = None) -> JSON:
    """A Struct as a plain dict (numbers stay floats, as Struct carries them), refused
    (INVALID_ARGUMENT naming `field`) past `max_bytes` of canonical JSON or MAX_JSON_DEPTH
    levels of nesting (deeper, the run could no longer be sent back inside a list)."""
    if not struct.fields:
        return {}
    try:
        doc = json_format.MessageToDict(struct)
    except ValueError:  # json_format refuses NaN and Infinity itself
        raise InvalidArgument.field(field, "numbers must be finite (no NaN or Infinity)") from None
    except RecursionError:
        raise InvalidArgument.field(field, "is nested too deeply") from None
    depth = _depth(doc)
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument.field(
            field, f"nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed"
        )
    _check_json(doc, field, max_bytes)
    return doc


def text(value: str, field: str) -> str:
    if "\x00" in value:
        raise InvalidArgument.field(field, "must not contain NUL characters")
    return value


def required_text(value: str, field: str, *, max_len: int | None = None) -> str:
    """A non-empty string field (an id, a name), at most `max_len` characters; a longer
    one is refused before anything echoes it into an error's trailers."""
    if not value:
        raise InvalidArgument.field(field, "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise InvalidArgument.field(field, f"must be at most {max_len} characters")
    return text(value, field)


def timestamp_to_us(ts: timestamp_pb2.Timestamp, field: str) -> int:
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument.field(
            field, "must be a valid timestamp between 0001-01-01 and 9999-12-31"
        )
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def _duration(d: duration_pb2.Duration, field: str) -> timedelta:
    if not -_MAX_SECONDS <= d.seconds <= _MAX_SECONDS or not -999_999_999 <= d.nanos <= 999_999_999:
        raise InvalidArgument.field(field, "must be a valid duration")
    return timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)


def retry_policy_from_pb(rp: runs_pb2.RetryPolicy) -> RetryPolicy:
    """0 or unset fields mean the defaults: 1 attempt, no backoff, multiplier 1."""
    multiplier = rp.backoff_multiplier or 1.0
    if not math.isfinite(multiplier):
        raise InvalidArgument.field("retry_policy.backoff_multiplier", "must be a finite number")
    return RetryPolicy(
        max_attempts=rp.max_attempts or 1,
        initial_backoff=_duration(rp.initial_backoff, "retry_policy.initial_backoff"),
        backoff_multiplier=multiplier,
        max_backoff=(
            _duration(rp.max_backoff, "retry_policy.max_backoff")
            if rp.HasField("max_backoff")
            else None
        ),
    )


def _duration_pb(t: timedelta) -> duration_pb2.Duration:
    us = t // timedelta(microseconds=1)
    return duration_pb2.Duration(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def retry_policy_to_pb(rp: RetryPolicy) -> runs_pb2.RetryPolicy:
    out = runs_pb2.RetryPolicy(
        max_attempts=rp.max_attempts, backoff_multiplier=rp.backoff_multiplier
    )
    if rp.initial_backoff:
        out.initial_backoff.CopyFrom(_duration_pb(rp.initial_backoff))
    if rp.max_backoff is not None:
        out.max_backoff.CopyFrom(_duration_pb(rp.max_backoff))
    return out


def _opt(msg: Any, name: str) -> int | None:
    return getattr(msg, name) if msg.HasField(name) else None


def spec_from_create(req: runs_pb2.CreateRunRequest, max_json_bytes: int | None = None) -> RunSpec:
    """A CreateRun request's RunSpec; inputs and topic attributes at most `max_json_bytes`."""
    c = req.constraints
    return RunSpec(
        image=text(req.image, "image"),
        priority=req.priority if req.HasField("priority") else DEFAULT_PRIORITY,
        inputs=struct_to_dict(req.inputs, "inputs", max_json_bytes),
        constraints=Constraints(
            cpu=_opt(c, "cpu"),
            ram_mb=_opt(c, "ram_mb"),
            vram_mb=_opt(c, "vram_mb"),
            gpu_id=_opt(c, "gpu_id"),
        ),
        retry_policy=retry_policy_from_pb(req.retry_policy),
        event_delivery=EventDelivery(
            topic=text(req.event_delivery.topic, "event_delivery.topic"),
            attributes=struct_to_dict(
                req.event_delivery.attributes, "event_delivery.attributes", max_json_bytes
            ),
        ),
        request_id=text(req.request_id, "request_id"),
    )


# -- outbound --------------------------------------------------------------------------------


def _ts(t: datetime) -> timestamp_pb2.Timestamp:
    us = to_us(t)
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def now_pb(t: datetime) -> timestamp_pb2.Timestamp:
    return _ts(t)


def dict_to_struct(doc: JSON) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if doc:
        s.update(doc)
    return s


def _summary(s: ExecutionSummary) -> runs_pb2.ExecutionSummary:
    out = runs_pb2.ExecutionSummary(
        duration_ms=s.duration_ms, worker_id=s.worker_id, error_message=s.error_message
    )
    if s.gpu_id is not None:
        out.gpu_id = s.gpu_id
    return out


def _constraints(c: Constraints) -> runs_pb2.Constraints:
    out = runs_pb2.Constraints()
    for name in ("cpu", "ram_mb", "vram_mb", "gpu_id"):
        value = getattr(c, name)
        if value is not None:
            setattr(out, name, value)
    return out


def event_to_pb(e: Event) -> runs_pb2.Event:
    out = runs_pb2.Event(
        seq=e.seq,
        attempt=e.attempt,
        type=_TYPE_TO_PB[e.type],
        time=_ts(e.time),
        msg=e.msg,
        payload=dict_to_struct(e.payload),
        state=_STATE_TO_PB[e.state],
        run_id=e.run_id,
    )
    if e.progress is not None:
        out.progress = e.progress
    return out


def run_to_pb(run: Run, run_events: Iterable[Event] = ()) -> runs_pb2.Run:
    a = run.attempt
    out = runs_pb2.Run(
        id=run.id,
        state=_STATE_TO_PB[run.state],
        priority=run.priority,
        image=run.image,
        inputs=dict_to_struct(run.inputs),
        outputs=dict_to_struct(a.outputs),
        constraints=_constraints(run.constraints),
        retry_policy=retry_policy_to_pb(run.retry_policy),
        event_delivery=runs_pb2.EventDelivery(
            topic=run.event_delivery.topic, attributes=dict_to_struct(run.event_delivery.attributes)
        ),
        op_definition=run.op_definition,
        definition_version=run.definition_version,
        progress=a.progress,
        current_attempt=run.current_attempt,
        execution_summary=_summary(a.summary),
        created_at=_ts(run.created_at),
        updated_at=_ts(run.updated_at),
        events=[event_to_pb(e) for e in run_events],
        request_id=run.request_id,
        last_seq=run.last_seq,
    )
    if run.next_attempt_at is not None:
        out.next_attempt_at.CopyFrom(_ts(run.next_attempt_at))
    return out


def attempt_to_pb(a: Attempt, run: Run) -> runs_pb2.Attempt:
    out = runs_pb2.Attempt(
        id=a.id,
        run_id=a.run_id,
        attempt=a.number,
        state=_STATE_TO_PB[a.state],
        progress=a.progress,
        inputs=dict_to_struct(run.inputs),
        outputs=dict_to_struct(a.outputs),
        execution_summary=_summary(a.summary),
        constraints=_constraints(run.constraints),
        created_at=_ts(a.created_at),
    )
    if a.started_at is not None:
        out.started_at.CopyFrom(_ts(a.started_at))
    if a.finished_at is not None:
        out.finished_at.CopyFrom(_ts(a.finished_at))
    return out


# -- definitions -----------------------------------------------------------------------------

_INPUT_TYPE_TO_PB: dict[InputType, definitions_pb2.InputType.ValueType] = {
    t: definitions_pb2.InputType.Value(f"INPUT_TYPE_{t.value}") for t in InputType
}
_PB_TO_INPUT_TYPE: dict[int, InputType] = {v: k for k, v in _INPUT_TYPE_TO_PB.items()}


def value_to_py(value: struct_pb2.Value, field: str) -> Any:
    """A google.protobuf.Value as plain JSON (numbers are floats, as Value carries them)."""
    try:
        doc = json_format.MessageToDict(value)
    except ValueError:  # NaN and Infinity
        raise InvalidArgument.field(field, "numbers must be finite (no NaN or Infinity)") from None
    _check_json(doc, field)
    return doc


def py_to_value(doc: Any) -> struct_pb2.Value:
    return json_format.ParseDict(doc, struct_pb2.Value())


def _input_specs_from_pb(
    specs: Any, field: str, violations: list[FieldViolation]
) -> dict[str, InputSpec]:
    out: dict[str, InputSpec] = {}
    for name in sorted(specs):
        pb = specs[name]
        path = f"{field}.{name}"
        text(name, path)
        kind = _PB_TO_INPUT_TYPE.get(pb.type)
        if kind is None:
            got = "INPUT_TYPE_UNSPECIFIED" if pb.type == 0 else f"unknown InputType {pb.type}"
            violations.append(
                FieldViolation(
                    f"{path}.type",
                    f"must be INPUT_TYPE_STRING, _INT, _FLOAT, _BOOL, _LIST or _OBJECT, got {got}",
                )
            )
            continue
        has_default = pb.HasField("default")
        default = value_to_py(pb.default, f"{path}.default") if has_default else None
        out[name] = InputSpec(kind, pb.required, has_default, default)
    return out


def definition_from_pb(d: definitions_pb2.Definition, prefix: str = "definition") -> Definition:
    """An UpsertDefinition's definition (validated by domain.definitions.new_definition)."""
    try:
        # What a run inherits is read exactly as CreateRun reads it.
        template = spec_from_create(
            runs_pb2.CreateRunRequest(
                image=d.image,
                constraints=d.constraints,
                retry_policy=d.retry_policy,
                event_delivery=d.event_delivery,
            )
        )
    except InvalidArgument as err:
        raise InvalidArgument.for_fields(
            FieldViolation(f"{prefix}.{v.field}", v.description) for v in err.violations
        ) from None
    violations: list[FieldViolation] = []
    input_specs = _input_specs_from_pb(d.input_specs, f"{prefix}.input_specs", violations)
    output_specs = _input_specs_from_pb(d.output_specs, f"{prefix}.output_specs", violations)
    if violations:
        raise InvalidArgument.for_fields(violations)
    return Definition(
        name=text(d.name, f"{prefix}.name"),
        version=text(d.version, f"{prefix}.version"),
        image=template.image,
        description=text(d.description, f"{prefix}.description"),
        input_specs=input_specs,
        output_specs=output_specs,
        constraints=template.constraints,
        retry_policy=template.retry_policy,
        event_delivery=template.event_delivery,
    )


def _input_spec_to_pb(s: InputSpec) -> definitions_pb2.InputSpec:
    out = definitions_pb2.InputSpec(type=_INPUT_TYPE_TO_PB[s.type], required=s.required)
    if s.has_default:
        out.default.CopyFrom(py_to_value(s.default))
    return out


def definition_to_pb(d: Definition) -> definitions_pb2.Definition:
    out = definitions_pb2.Definition(
        name=d.name,
        version=d.version,
        image=d.image,
        description=d.description,
        input_specs={n: _input_spec_to_pb(s) for n, s in d.input_specs.items()},
        output_specs={n: _input_spec_to_pb(s) for n, s in d.output_specs.items()},
        constraints=_constraints(d.constraints),
        retry_policy=retry_policy_to_pb(d.retry_policy),
        event_delivery=runs_pb2.EventDelivery(
            topic=d.event_delivery.topic, attributes=dict_to_struct(d.event_delivery.attributes)
        ),
    )
    if d.created_at is not None:
        out.created_at.CopyFrom(_ts(d.created_at))
    return out
