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
from gyoza_grpc.domain.clock import EPOCH
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


def state_to_pb(state: RunState) -> runs_pb2.RunState.ValueType:
    return _STATE_TO_PB[state]


def event_type_from_pb(value: int, field: str = "type") -> EventType:
    try:
        return _PB_TO_TYPE[value]
    except KeyError:
        name = "EVENT_TYPE_UNSPECIFIED" if value == 0 else f"unknown EventType {value}"
        raise InvalidArgument.field(field, f"must be an event type, got {name}") from None


# The canonical encoding every JSON size is measured on (compact, UTF-8); built once.
_JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)
_INF = math.inf
# No canonical JSON encoding is longer than this many bytes per byte of the Struct's wire
# encoding, plus 2 (the outer braces): a string's UTF-8 byte is at most 6 bytes of JSON
# (\u00XX), a number's 9 wire bytes at most 24 characters, and every key, value and list
# item has at least 2 wire bytes of tag and length for its quotes, colon, comma and `null`.
# A Struct whose bound is within the cap needs no encoding to know it fits.
JSON_BYTES_PER_WIRE_BYTE = 6


def _check_json(doc: Any, field: str, max_bytes: int | None = None) -> None:
    """Finite numbers, no NUL characters, and (with `max_bytes`) a canonical JSON encoding
    of at most that many bytes: one encoding serves all three checks."""
    try:
        text = _JSON_ENCODER.encode(doc)
    except ValueError:
        raise InvalidArgument.field(field, "numbers must be finite (no NaN or Infinity)") from None
    if "\\u0000" in text:
        raise InvalidArgument.field(field, "must not contain NUL characters")
    if max_bytes is not None:
        _check_size(text, field, max_bytes)


def _check_size(text: str, field: str, max_bytes: int) -> None:
    size = len(text.encode())
    if size > max_bytes:
        raise InvalidArgument.field(
            field, f"is {size} bytes of JSON; at most {max_bytes} bytes are allowed"
        )


class _NotFinite(Exception):
    """A NaN or an Infinity met while reading a Struct."""


class _StructReader:
    """One pass over a Struct making the plain dict json_format.MessageToDict makes (same
    keys in the same order, numbers as floats, null and unset values as None), refusing NaN
    and Infinity as it goes and noting how deeply it nests and whether a string holds a NUL,
    so the document is never walked again to check it.

    A string "holds a NUL" exactly when its canonical JSON encoding contains the text
    \\u0000, what the check on that encoding refused: a NUL, or a backslash followed by
    `u0000` (encoded as an escaped backslash and then `u0000`)."""

    __slots__ = ("depth", "nul")

    def __init__(self) -> None:
        self.depth = 0
        self.nul = False

    def struct(self, struct: struct_pb2.Struct, level: int) -> JSON:
        if level > self.depth:
            self.depth = level
        out: JSON = {}
        for key, value in struct.fields.items():
            if "\x00" in key or "\\u0000" in key:
                self.nul = True
            kind = value.WhichOneof("kind")
            if kind == "string_value":
                s = value.string_value
                if "\x00" in s or "\\u0000" in s:
                    self.nul = True
                out[key] = s
            elif kind == "number_value":
                x = value.number_value
                if not -_INF < x < _INF:  # False for NaN too
                    raise _NotFinite
                out[key] = x
            elif kind == "bool_value":
                out[key] = value.bool_value
            elif kind == "struct_value":
                out[key] = self.struct(value.struct_value, level + 1)
            elif kind == "list_value":
                out[key] = self.list(value.list_value, level + 1)
            else:  # null_value, or no kind at all
                out[key] = None
        return out

    def list(self, list_value: struct_pb2.ListValue, level: int) -> list[Any]:
        if level > self.depth:
            self.depth = level
        out: list[Any] = []
        append = out.append
        for value in list_value.values:
            kind = value.WhichOneof("kind")
            if kind == "string_value":
                s = value.string_value
                if "\x00" in s or "\\u0000" in s:
                    self.nul = True
                append(s)
            elif kind == "number_value":
                x = value.number_value
                if not -_INF < x < _INF:
                    raise _NotFinite
                append(x)
            elif kind == "bool_value":
                append(value.bool_value)
            elif kind == "struct_value":
                append(self.struct(value.struct_value, level + 1))
            elif kind == "list_value":
                append(self.list(value.list_value, level + 1))
            else:
                append(None)
        return out


def struct_to_dict(struct: struct_pb2.Struct, field: str, max_bytes: int | None = None) -> JSON:
    """A Struct as a plain dict (numbers stay floats, as Struct carries them), refused
    (INVALID_ARGUMENT naming `field`) for NaN or Infinity, past MAX_JSON_DEPTH levels of
    nesting (deeper, the run could no longer be sent back inside a list), for a NUL
    character, or past `max_bytes` of canonical JSON, in that order of precedence.

    One pass reads and checks the document; it is encoded to JSON only when its wire size
    leaves room for doubt about the cap (see JSON_BYTES_PER_WIRE_BYTE)."""
    if not struct.fields:
        return {}
    reader = _StructReader()
    try:
        doc = reader.struct(struct, 1)
    except _NotFinite:
        raise InvalidArgument.field(field, "numbers must be finite (no NaN or Infinity)") from None
    except RecursionError:
        raise InvalidArgument.field(field, "is nested too deeply") from None
    if reader.depth > MAX_JSON_DEPTH:
        raise InvalidArgument.field(
            field, f"nests {reader.depth} levels deep; at most {MAX_JSON_DEPTH} are allowed"
        )
    if reader.nul:
        raise InvalidArgument.field(field, "must not contain NUL characters")
    if max_bytes is not None and JSON_BYTES_PER_WIRE_BYTE * struct.ByteSize() + 2 > max_bytes:
        _check_size(_JSON_ENCODER.encode(doc), field, max_bytes)
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


def _set_duration(out: duration_pb2.Duration, t: timedelta) -> None:
    """`t` into a Duration: its whole microseconds, floored as `t // 1us` floors them."""
    out.seconds = t.days * 86_400 + t.seconds
    out.nanos = t.microseconds * 1000


def _set_retry_policy(out: runs_pb2.RetryPolicy, rp: RetryPolicy) -> None:
    out.max_attempts = rp.max_attempts  # sets the message, even to 0
    out.backoff_multiplier = rp.backoff_multiplier
    if rp.initial_backoff:
        _set_duration(out.initial_backoff, rp.initial_backoff)
    if rp.max_backoff is not None:
        _set_duration(out.max_backoff, rp.max_backoff)


def retry_policy_to_pb(rp: RetryPolicy) -> runs_pb2.RetryPolicy:
    out = runs_pb2.RetryPolicy()
    _set_retry_policy(out, rp)
    return out


def _opt(msg: Any, name: str) -> int | None:
    return getattr(msg, name) if msg.HasField(name) else None


def _constraints_from_pb(c: runs_pb2.Constraints) -> Constraints:
    return Constraints(
        cpu=_opt(c, "cpu"),
        ram_mb=_opt(c, "ram_mb"),
        vram_mb=_opt(c, "vram_mb"),
        gpu_id=_opt(c, "gpu_id"),
    )


# What an unset constraints or retry_policy reads as (frozen values, safely shared).
_NO_CONSTRAINTS = Constraints()
_DEFAULT_RETRY_POLICY = retry_policy_from_pb(runs_pb2.RetryPolicy())


def spec_from_create(req: runs_pb2.CreateRunRequest, max_json_bytes: int | None = None) -> RunSpec:
    """A CreateRun request's RunSpec; inputs and topic attributes at most `max_json_bytes`.
    Fields are read in the order of RunSpec's, so the first bad one is the one reported."""
    return RunSpec(
        image=text(req.image, "image"),
        priority=req.priority if req.HasField("priority") else DEFAULT_PRIORITY,
        inputs=struct_to_dict(req.inputs, "inputs", max_json_bytes),
        constraints=(
            _constraints_from_pb(req.constraints)
            if req.HasField("constraints")
            else _NO_CONSTRAINTS
        ),
        retry_policy=(
            retry_policy_from_pb(req.retry_policy)
            if req.HasField("retry_policy")
            else _DEFAULT_RETRY_POLICY
        ),
        event_delivery=(
            EventDelivery(
                topic=text(req.event_delivery.topic, "event_delivery.topic"),
                attributes=struct_to_dict(
                    req.event_delivery.attributes, "event_delivery.attributes", max_json_bytes
                ),
            )
            if req.HasField("event_delivery")
            else EventDelivery()
        ),
        request_id=text(req.request_id, "request_id"),
    )


# -- outbound --------------------------------------------------------------------------------
#
# Replies are filled in place (fill_run, fill_event): into the response's own message, with
# no intermediate message copied in, Structs set value by value, timestamps and durations from
# the datetime's or timedelta's own fields. A message field is set (present) even when empty,
# as passing an empty message to a constructor set it: an empty Struct, a Timestamp at the
# epoch, default constraints. (The order a Struct's keys take on the wire is upb's map order,
# hashed with a per-process seed and reshuffled by every copy of a message: it never was the
# document's order, so building in place, without the copies, may send another one.)


def _ts(t: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    _set_ts(out, t)
    return out


def _set_ts(ts: timestamp_pb2.Timestamp, t: datetime) -> None:
    """`t` into a Timestamp: to_us's microseconds, without dividing a timedelta."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: gyoza times are aware (UTC)")
    d = t - EPOCH  # days may be negative; seconds and microseconds never are
    ts.seconds = d.days * 86_400 + d.seconds  # assigning a field sets the message, even to 0
    ts.nanos = d.microseconds * 1000


def now_pb(t: datetime) -> timestamp_pb2.Timestamp:
    return _ts(t)


def _fill_struct(struct: struct_pb2.Struct, doc: JSON) -> None:
    """`doc` into an empty Struct exactly as Struct.update sets it, each value assigned by
    its type without update's per-value isinstance chain and calls; a value of another type
    (a subclass, a tuple, a Struct) goes through update's own code."""
    fields = struct.fields
    for key, v in doc.items():
        t = type(v)
        if t is str:
            fields[key].string_value = v
        elif t is float or t is int:
            fields[key].number_value = v
        elif t is bool:
            fields[key].bool_value = v
        elif v is None:
            fields[key].null_value = 0  # type: ignore[assignment]
        elif t is dict:
            child = fields[key].struct_value
            if v:
                _fill_struct(child, v)
            else:
                child.Clear()  # as update does: an empty struct_value, set
        elif t is list:
            items = fields[key].list_value
            if v:
                _fill_list(items, v)
            else:
                items.Clear()
        else:
            struct[key] = v


def _fill_list(list_value: struct_pb2.ListValue, items: list[Any]) -> None:
    """`items` into an empty ListValue as ListValue.extend sets them (see _fill_struct)."""
    values = list_value.values
    for v in items:
        t = type(v)
        if t is str:
            values.add().string_value = v
        elif t is float or t is int:
            values.add().number_value = v
        elif t is bool:
            values.add().bool_value = v
        elif v is None:
            values.add().null_value = 0  # type: ignore[assignment]
        elif t is dict:
            child = values.add().struct_value
            if v:
                _fill_struct(child, v)
            else:
                child.Clear()
        elif t is list:
            inner = values.add().list_value
            if v:
                _fill_list(inner, v)
            else:
                inner.Clear()
        else:
            list_value.append(v)


def _set_struct(struct: struct_pb2.Struct, doc: JSON) -> None:
    """`doc` into a reply's Struct field, which is set even when `doc` is empty."""
    if doc:
        _fill_struct(struct, doc)
    else:
        struct.SetInParent()


def dict_to_struct(doc: JSON) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if doc:
        _fill_struct(s, doc)
    return s


def _set_summary(out: runs_pb2.ExecutionSummary, s: ExecutionSummary) -> None:
    out.duration_ms = s.duration_ms  # sets the message, even to 0
    out.worker_id = s.worker_id
    out.error_message = s.error_message
    if s.gpu_id is not None:
        out.gpu_id = s.gpu_id


def _set_constraints(out: runs_pb2.Constraints, c: Constraints) -> None:
    out.SetInParent()  # set even with no constraint at all
    if c.cpu is not None:
        out.cpu = c.cpu
    if c.ram_mb is not None:
        out.ram_mb = c.ram_mb
    if c.vram_mb is not None:
        out.vram_mb = c.vram_mb
    if c.gpu_id is not None:
        out.gpu_id = c.gpu_id


def _constraints(c: Constraints) -> runs_pb2.Constraints:
    out = runs_pb2.Constraints()
    _set_constraints(out, c)
    return out


def fill_event(out: runs_pb2.Event, e: Event) -> None:
    """`e` into an empty Event (a reply's own, or one just added to a repeated field)."""
    out.seq = e.seq
    out.attempt = e.attempt
    out.type = _TYPE_TO_PB[e.type]
    _set_ts(out.time, e.time)
    out.msg = e.msg
    _set_struct(out.payload, e.payload)
    out.state = _STATE_TO_PB[e.state]
    out.run_id = e.run_id
    if e.progress is not None:
        out.progress = e.progress


def event_to_pb(e: Event) -> runs_pb2.Event:
    out = runs_pb2.Event()
    fill_event(out, e)
    return out


def fill_run(out: runs_pb2.Run, run: Run, run_events: Iterable[Event] = ()) -> None:
    """`run` (and `run_events`) into an empty Run, typically a response's own `run`: filling
    it there spares building a Run and copying it into the response."""
    a = run.attempt
    out.id = run.id
    out.state = _STATE_TO_PB[run.state]
    out.priority = run.priority
    out.image = run.image
    _set_struct(out.inputs, run.inputs)
    _set_struct(out.outputs, a.outputs)
    _set_constraints(out.constraints, run.constraints)
    _set_retry_policy(out.retry_policy, run.retry_policy)
    delivery = out.event_delivery
    delivery.topic = run.event_delivery.topic
    _set_struct(delivery.attributes, run.event_delivery.attributes)
    out.op_definition = run.op_definition
    out.definition_version = run.definition_version
    out.progress = a.progress
    out.current_attempt = run.current_attempt
    _set_summary(out.execution_summary, a.summary)
    _set_ts(out.created_at, run.created_at)
    _set_ts(out.updated_at, run.updated_at)
    if run.next_attempt_at is not None:
        _set_ts(out.next_attempt_at, run.next_attempt_at)
    add = out.events.add
    for e in run_events:
        fill_event(add(), e)
    out.request_id = run.request_id
    out.last_seq = run.last_seq


def run_to_pb(run: Run, run_events: Iterable[Event] = ()) -> runs_pb2.Run:
    out = runs_pb2.Run()
    fill_run(out, run, run_events)
    return out


def attempt_to_pb(a: Attempt, run: Run) -> runs_pb2.Attempt:
    out = runs_pb2.Attempt(
        id=a.id,
        run_id=a.run_id,
        attempt=a.number,
        state=_STATE_TO_PB[a.state],
        progress=a.progress,
    )
    _set_struct(out.inputs, run.inputs)
    _set_struct(out.outputs, a.outputs)
    _set_summary(out.execution_summary, a.summary)
    _set_constraints(out.constraints, run.constraints)
    _set_ts(out.created_at, a.created_at)
    if a.started_at is not None:
        _set_ts(out.started_at, a.started_at)
    if a.finished_at is not None:
        _set_ts(out.finished_at, a.finished_at)
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
