"""api/convert.py against the conversions it replaced, kept here (only here) as the oracle:
json_format.MessageToDict plus a JSON encoding for reading Structs, Struct.update and
intermediate messages for building replies. The same documents (key order, floats, None),
the same errors (field, message, precedence), the same replies byte for byte."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyoza.v1 import runs_pb2
from gyoza_grpc.domain.clock import to_us
from gyoza_grpc.domain.errors import InvalidArgument
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
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.server.api import convert

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# -- the oracle: the conversions as they were --------------------------------------------------


def old_check_json(doc: Any, field: str, max_bytes: int | None = None) -> None:
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


def old_depth(doc: Any) -> int:
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


def old_struct_to_dict(struct: struct_pb2.Struct, field: str, max_bytes: int | None = None) -> JSON:
    if not struct.fields:
        return {}
    try:
        doc = json_format.MessageToDict(struct)
    except ValueError:
        raise InvalidArgument.field(field, "numbers must be finite (no NaN or Infinity)") from None
    except RecursionError:
        raise InvalidArgument.field(field, "is nested too deeply") from None
    depth = old_depth(doc)
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument.field(
            field, f"nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed"
        )
    old_check_json(doc, field, max_bytes)
    return doc


def old_dict_to_struct(doc: JSON) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if doc:
        s.update(doc)
    return s


def old_state(state: RunState) -> runs_pb2.RunState.ValueType:
    return runs_pb2.RunState.Value(f"RUN_STATE_{state.value}")


def old_event_type(event_type: EventType) -> runs_pb2.EventType.ValueType:
    return runs_pb2.EventType.Value(f"EVENT_TYPE_{event_type.value}")


def old_opt(msg: Any, name: str) -> int | None:
    return getattr(msg, name) if msg.HasField(name) else None  # type: ignore[no-any-return]


def old_ts(t: datetime) -> timestamp_pb2.Timestamp:
    us = to_us(t)
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def old_duration_pb(t: timedelta) -> duration_pb2.Duration:
    us = t // timedelta(microseconds=1)
    return duration_pb2.Duration(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def old_retry_policy_to_pb(rp: RetryPolicy) -> runs_pb2.RetryPolicy:
    out = runs_pb2.RetryPolicy(
        max_attempts=rp.max_attempts, backoff_multiplier=rp.backoff_multiplier
    )
    if rp.initial_backoff:
        out.initial_backoff.CopyFrom(old_duration_pb(rp.initial_backoff))
    if rp.max_backoff is not None:
        out.max_backoff.CopyFrom(old_duration_pb(rp.max_backoff))
    return out


def old_summary(s: ExecutionSummary) -> runs_pb2.ExecutionSummary:
    out = runs_pb2.ExecutionSummary(
        duration_ms=s.duration_ms, worker_id=s.worker_id, error_message=s.error_message
    )
    if s.gpu_id is not None:
        out.gpu_id = s.gpu_id
    return out


def old_constraints(c: Constraints) -> runs_pb2.Constraints:
    out = runs_pb2.Constraints()
    for name in ("cpu", "ram_mb", "vram_mb", "gpu_id"):
        value = getattr(c, name)
        if value is not None:
            setattr(out, name, value)
    return out


def old_event_to_pb(e: Event) -> runs_pb2.Event:
    out = runs_pb2.Event(
        seq=e.seq,
        attempt=e.attempt,
        type=old_event_type(e.type),
        time=old_ts(e.time),
        msg=e.msg,
        payload=old_dict_to_struct(e.payload),
        state=old_state(e.state),
        run_id=e.run_id,
    )
    if e.progress is not None:
        out.progress = e.progress
    return out


def old_run_to_pb(run: Run, run_events: Iterable[Event] = ()) -> runs_pb2.Run:
    a = run.attempt
    out = runs_pb2.Run(
        id=run.id,
        state=old_state(run.state),
        priority=run.priority,
        image=run.image,
        inputs=old_dict_to_struct(run.inputs),
        outputs=old_dict_to_struct(a.outputs),
        constraints=old_constraints(run.constraints),
        retry_policy=old_retry_policy_to_pb(run.retry_policy),
        event_delivery=runs_pb2.EventDelivery(
            topic=run.event_delivery.topic,
            attributes=old_dict_to_struct(run.event_delivery.attributes),
        ),
        op_definition=run.op_definition,
        definition_version=run.definition_version,
        progress=a.progress,
        current_attempt=run.current_attempt,
        execution_summary=old_summary(a.summary),
        created_at=old_ts(run.created_at),
        updated_at=old_ts(run.updated_at),
        events=[old_event_to_pb(e) for e in run_events],
        request_id=run.request_id,
        last_seq=run.last_seq,
    )
    if run.next_attempt_at is not None:
        out.next_attempt_at.CopyFrom(old_ts(run.next_attempt_at))
    return out


def old_attempt_to_pb(a: Attempt, run: Run) -> runs_pb2.Attempt:
    out = runs_pb2.Attempt(
        id=a.id,
        run_id=a.run_id,
        attempt=a.number,
        state=old_state(a.state),
        progress=a.progress,
        inputs=old_dict_to_struct(run.inputs),
        outputs=old_dict_to_struct(a.outputs),
        execution_summary=old_summary(a.summary),
        constraints=old_constraints(run.constraints),
        created_at=old_ts(a.created_at),
    )
    if a.started_at is not None:
        out.started_at.CopyFrom(old_ts(a.started_at))
    if a.finished_at is not None:
        out.finished_at.CopyFrom(old_ts(a.finished_at))
    return out


def old_spec_from_create(
    req: runs_pb2.CreateRunRequest, max_json_bytes: int | None = None
) -> RunSpec:
    c = req.constraints
    return RunSpec(
        image=convert.text(req.image, "image"),
        priority=req.priority if req.HasField("priority") else DEFAULT_PRIORITY,
        inputs=old_struct_to_dict(req.inputs, "inputs", max_json_bytes),
        constraints=Constraints(
            cpu=old_opt(c, "cpu"),
            ram_mb=old_opt(c, "ram_mb"),
            vram_mb=old_opt(c, "vram_mb"),
            gpu_id=old_opt(c, "gpu_id"),
        ),
        retry_policy=convert.retry_policy_from_pb(req.retry_policy),
        event_delivery=EventDelivery(
            topic=convert.text(req.event_delivery.topic, "event_delivery.topic"),
            attributes=old_struct_to_dict(
                req.event_delivery.attributes, "event_delivery.attributes", max_json_bytes
            ),
        ),
        request_id=convert.text(req.request_id, "request_id"),
    )


# -- comparing -------------------------------------------------------------------------------


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """What a call did: its result, or the error it raised (for InvalidArgument, the exact
    message and field violations)."""
    try:
        return ("ok", fn(*args))
    except InvalidArgument as err:
        return ("invalid", err.message, err.violations)
    except Exception as err:
        return ("raised", type(err), str(err))


def strict(doc: Any) -> str:
    """`doc` spelled so that key order and types count (1.0 is not 1, True is not 1)."""
    return repr(doc)


def same_doc(new: tuple[Any, ...], old: tuple[Any, ...]) -> None:
    if old[0] == "ok":
        assert new[0] == "ok", new
        assert strict(new[1]) == strict(old[1])
    else:
        assert new == old


def shape(msg: Any) -> Any:
    """A Struct, ListValue or Value as nested lists in its own iteration order (NaN-safe)."""
    if isinstance(msg, struct_pb2.Struct):
        return [(k, shape(msg.fields[k])) for k in msg.fields]
    if isinstance(msg, struct_pb2.ListValue):
        return [shape(v) for v in msg.values]
    kind = msg.WhichOneof("kind")
    if kind in ("struct_value", "list_value"):
        return (kind, shape(getattr(msg, kind)))
    return (kind, repr(getattr(msg, kind)) if kind else None)


def same_message(new: tuple[Any, ...], old: tuple[Any, ...], *, key_order: bool = False) -> None:
    """Equal messages: the same deterministic bytes (the same fields set, empty ones too).

    With `key_order`, also the same key order in every Struct. Replies are not held to it:
    upb seeds its map hashing per process, so the order a Struct's keys take on the wire was
    never the document's, and each copy of a message (which the old code made once per level
    of nesting: Struct -> Run -> response) re-inserts the keys in another order."""
    if old[0] != "ok":
        assert new == old
        return
    assert new[0] == "ok", new
    a, b = new[1], old[1]
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    if key_order:
        assert structs(a) == structs(b)


def structs(msg: Message) -> list[Any]:
    """The shape of every Struct in `msg`, in field order."""
    if isinstance(msg, struct_pb2.Struct):
        return [shape(msg)]
    out: list[Any] = []
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        for item in [value] if isinstance(value, Message) else value:
            out.append((field.name, structs(item)))
    return out


# -- strategies ------------------------------------------------------------------------------

UNSET = object()  # a Value with no kind at all (MessageToDict reads it as None)

# Strings that test the NUL check's edges: it has always refused a NUL, and a backslash
# followed by "u0000" (whose JSON encoding contains the text \u0000 too).
TRICKY = [
    "",
    "\x00",
    "a\x00b",
    "\\u0000",
    "x\\u0000y",
    "\\\\u0000",
    "\\u000",
    "u0000",
    "\\",
    '"',
    "\x01\x1f\n\t",
    "é✓😀",
    "\u2028",
]
texts = st.one_of(st.sampled_from(TRICKY), st.text(st.characters(codec="utf-8"), max_size=12))
numbers = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e-7, 5e-324, -1.7976931348623157e308, 0.1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)


def json_docs(leaves: st.SearchStrategy[Any], max_leaves: int = 25) -> st.SearchStrategy[JSON]:
    tree = st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )
    return st.dictionaries(texts, tree, max_size=6)


def build_struct(doc: JSON) -> struct_pb2.Struct:
    """`doc` as a Struct (as Struct.update would make it), UNSET as a Value with no kind."""
    s = struct_pb2.Struct()
    for k, v in doc.items():
        _build_value(s.fields[k], v)
    return s


def _build_value(value: struct_pb2.Value, v: Any) -> None:
    if v is UNSET:
        return
    if isinstance(v, dict):
        value.struct_value.Clear()
        for k, child in v.items():
            _build_value(value.struct_value.fields[k], child)
    elif isinstance(v, list):
        value.list_value.Clear()
        for child in v:
            _build_value(value.list_value.values.add(), child)
    else:
        s = struct_pb2.Struct()
        s["x"] = v
        value.CopyFrom(s.fields["x"])


def nested(depth: int, leaf: Any) -> JSON:
    """A document `depth` levels deep (alternating objects and arrays) ending in `leaf`."""
    doc: Any = leaf
    for level in range(depth - 1):
        doc = {"k": doc} if level % 2 else [doc]
    return {"top": doc}


# -- reading Structs -------------------------------------------------------------------------


def check_read(doc: JSON, max_bytes: int | None) -> None:
    struct = build_struct(doc)
    old = outcome(old_struct_to_dict, struct, "inputs", max_bytes)
    new = outcome(convert.struct_to_dict, struct, "inputs", max_bytes)
    same_doc(new, old)


@PROPERTY
@given(
    doc=json_docs(st.one_of(scalars, st.just(UNSET))),
    max_bytes=st.one_of(st.none(), st.integers(0, 400)),
)
def test_struct_to_dict_agrees_with_json_format(doc: JSON, max_bytes: int | None) -> None:
    check_read(doc, max_bytes)


@PROPERTY
@given(doc=json_docs(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), texts)))
def test_struct_to_dict_size_cap_at_its_edge(doc: JSON) -> None:
    """Right at the cap and one byte under it (the encoding is measured, not the bound)."""
    old = outcome(old_struct_to_dict, build_struct(doc), "x")
    if old[0] != "ok" or not doc:
        return
    size = len(json.dumps(old[1], separators=(",", ":"), ensure_ascii=False).encode())
    for max_bytes in (size, size - 1, size + 1, 0):
        check_read(doc, max_bytes)


@PROPERTY
@given(doc=json_docs(st.one_of(scalars, st.just(UNSET)), max_leaves=60))
def test_wire_size_bounds_the_json_size(doc: JSON) -> None:
    """The bound struct_to_dict trusts to skip encoding: JSON <= 6 x wire bytes + 2."""
    struct = build_struct(doc)
    old = outcome(old_struct_to_dict, struct, "x")
    if old[0] == "ok":
        size = len(json.dumps(old[1], separators=(",", ":"), ensure_ascii=False).encode())
        assert size <= convert.JSON_BYTES_PER_WIRE_BYTE * struct.ByteSize() + 2


@pytest.mark.parametrize(
    "doc",
    [
        {"": None},
        {"": UNSET},
        {"": [UNSET, UNSET, UNSET]},
        {"": [[], [[]], {}]},
        {"": "\x01" * 1000},
        {"\x1f" * 50: "\x02" * 50},
        {"": [-2.2250738585072014e-308] * 50},
        {"": [False] * 50},
        {"": [{"": None}] * 20},
    ],
)
def test_wire_size_bound_on_worst_cases(doc: JSON) -> None:
    struct = build_struct(doc)
    got = convert.struct_to_dict(struct, "x")
    size = len(json.dumps(got, separators=(",", ":"), ensure_ascii=False).encode())
    assert size <= convert.JSON_BYTES_PER_WIRE_BYTE * struct.ByteSize() + 2
    for max_bytes in (size, size - 1):
        check_read(doc, max_bytes)


@PROPERTY
@given(
    depth=st.integers(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 8),
    leaf=st.sampled_from([1.0, math.nan, -math.inf, "\x00", "ok", None, UNSET, [], {}]),
    sibling=st.sampled_from([None, math.inf, "a\x00", "\\u0000", 2.0]),
    max_bytes=st.one_of(st.none(), st.integers(0, 200)),
)
def test_deep_documents_fail_the_same_way(
    depth: int, leaf: Any, sibling: Any, max_bytes: int | None
) -> None:
    """NaN anywhere beats depth, depth beats NUL, NUL beats size, as before."""
    doc = nested(depth, leaf)
    doc["sibling"] = sibling
    check_read(doc, max_bytes)


def test_depth_messages() -> None:
    assert convert.struct_to_dict(build_struct(nested(MAX_JSON_DEPTH, 1.0)), "x")
    with pytest.raises(InvalidArgument) as err:
        convert.struct_to_dict(build_struct(nested(MAX_JSON_DEPTH + 1, 1.0)), "inputs")
    assert err.value.violations[0].description == (
        f"nests {MAX_JSON_DEPTH + 1} levels deep; at most {MAX_JSON_DEPTH} are allowed"
    )


def test_numbers_stay_floats_and_keys_keep_the_struct_order() -> None:
    struct = build_struct({"z": 1, "a": [2, True, None], "m": {"y": 3.5, "b": "s"}})
    got = convert.struct_to_dict(struct, "x")
    assert got == {"z": 1.0, "a": [2.0, True, None], "m": {"y": 3.5, "b": "s"}}
    assert type(got["z"]) is float and got["a"][1] is True
    assert strict(got) == strict(json_format.MessageToDict(struct))


def test_null_value_with_an_unknown_number_reads_as_none() -> None:
    s = struct_pb2.Struct()
    s.fields["x"].MergeFromString(b"\x08\x07")  # null_value = 7 (an open enum)
    same_doc(outcome(convert.struct_to_dict, s, "x"), outcome(old_struct_to_dict, s, "x"))


# -- building Structs ------------------------------------------------------------------------

build_leaves = st.one_of(
    scalars,
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), True, False]),
)


@PROPERTY
@given(doc=json_docs(build_leaves))
def test_dict_to_struct_agrees_with_struct_update(doc: JSON) -> None:
    same_message(
        outcome(convert.dict_to_struct, doc), outcome(old_dict_to_struct, doc), key_order=True
    )


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"t": (1, "a", [2])},
        {"s": {1, 2}},
        {"b": b"x"},
        {1: "int key"},
        {1: {1, 2}},
        {"l": [{3}]},
        {"e": RunState.PENDING, "i": EventType.INFO},
        {"struct": build_struct({"a": 1.0})},
        {"lv": [1.0, (2.0, 3.0)]},
        {"deep": [[[], {}], {"": [None]}]},
    ],
)
def test_dict_to_struct_odd_values_as_update_treats_them(doc: Any) -> None:
    same_message(
        outcome(convert.dict_to_struct, doc), outcome(old_dict_to_struct, doc), key_order=True
    )


# -- replies ---------------------------------------------------------------------------------

int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
# Aware datetimes in several offsets, the epoch and times before it, now and then a naive one
# (which both refuse with the same ValueError).
moments = st.one_of(
    st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min])
    ),
    st.just(datetime(1970, 1, 1, tzinfo=UTC)),
    st.datetimes(max_value=datetime(1970, 1, 2), timezones=st.just(UTC)),
    st.datetimes(),
)
small_text = st.text(st.characters(codec="utf-8"), max_size=6)
docs = json_docs(st.one_of(st.none(), st.booleans(), numbers, texts, int32s), max_leaves=8)
durations = st.one_of(st.just(timedelta(0)), st.timedeltas(), st.timedeltas(min_value=timedelta(0)))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


constraints = st.one_of(
    st.just(Constraints()),
    st.builds(
        Constraints,
        cpu=_maybe(int32s),
        ram_mb=_maybe(int32s),
        vram_mb=_maybe(int32s),
        gpu_id=_maybe(st.one_of(int32s, st.just(2**40))),
    ),
)
retry_policies = st.one_of(
    st.just(RetryPolicy()),
    st.builds(
        RetryPolicy,
        max_attempts=int32s,
        initial_backoff=durations,
        backoff_multiplier=st.floats(),
        max_backoff=_maybe(durations),
    ),
)
summaries = st.one_of(
    st.just(ExecutionSummary()),
    st.builds(
        ExecutionSummary,
        duration_ms=int64s,
        worker_id=small_text,
        error_message=small_text,
        gpu_id=_maybe(int32s),
    ),
)


def events(run_id: str) -> st.SearchStrategy[Event]:
    return st.builds(
        Event,
        run_id=st.just(run_id),
        seq=int64s,
        attempt=int32s,
        type=st.sampled_from(EventType),
        time=moments,
        state=st.sampled_from(RunState),
        msg=small_text,
        progress=_maybe(int32s),
        payload=docs,
    )


@st.composite
def runs(draw: st.DrawFn) -> tuple[Run, list[Event]]:
    run_id = draw(small_text)
    attempt = Attempt(
        run_id=run_id,
        number=draw(int32s),
        id=draw(small_text),
        state=draw(st.sampled_from(RunState)),
        created_at=draw(moments),
        progress=draw(int32s),
        outputs=draw(docs),
        summary=draw(summaries),
        started_at=draw(_maybe(moments)),
        finished_at=draw(_maybe(moments)),
    )
    run = Run(
        id=run_id,
        state=draw(st.sampled_from(RunState)),
        priority=draw(int32s),
        image=draw(small_text),
        inputs=draw(docs),
        constraints=draw(constraints),
        retry_policy=draw(retry_policies),
        event_delivery=EventDelivery(topic=draw(small_text), attributes=draw(docs)),
        op_definition=draw(small_text),
        request_id=draw(small_text),
        current_attempt=draw(int32s),
        last_seq=draw(int64s),
        created_at=draw(moments),
        updated_at=draw(moments),
        attempt=attempt,
        next_attempt_at=draw(_maybe(moments)),
        definition_version=draw(small_text),
    )
    return run, draw(st.lists(events(run_id), max_size=3))


@PROPERTY
@given(drawn=runs())
def test_run_to_pb_agrees_with_the_old_reply(drawn: tuple[Run, list[Event]]) -> None:
    run, run_events = drawn
    same_message(outcome(convert.run_to_pb, run), outcome(old_run_to_pb, run))
    same_message(
        outcome(convert.run_to_pb, run, iter(run_events)),
        outcome(old_run_to_pb, run, run_events),
    )
    same_message(
        outcome(convert.attempt_to_pb, run.attempt, run),
        outcome(old_attempt_to_pb, run.attempt, run),
    )
    for e in run_events:
        same_message(outcome(convert.event_to_pb, e), outcome(old_event_to_pb, e))


@PROPERTY
@given(drawn=runs())
def test_fill_run_in_a_response_is_the_old_response(drawn: tuple[Run, list[Event]]) -> None:
    """A response filled in place serializes as one built around run_to_pb's message."""
    run, run_events = drawn

    def filled() -> runs_pb2.GetRunResponse:
        out = runs_pb2.GetRunResponse()
        convert.fill_run(out.run, run, run_events)
        return out

    same_message(
        outcome(filled),
        outcome(lambda: runs_pb2.GetRunResponse(run=old_run_to_pb(run, run_events))),
    )


def test_empty_fields_are_still_set() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    run = new_run(RunSpec(image="i"), epoch)
    pb = convert.run_to_pb(run)
    for name in ("inputs", "outputs", "constraints", "retry_policy", "event_delivery"):
        assert pb.HasField(name), name
    assert pb.HasField("created_at") and pb.HasField("execution_summary")
    assert pb.event_delivery.HasField("attributes")
    assert pb.SerializeToString(deterministic=True) == old_run_to_pb(run).SerializeToString(
        deterministic=True
    )


def test_timestamps_and_durations_outside_the_usual_range() -> None:
    for t in (
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ):
        assert convert.now_pb(t) == old_ts(t)
    with pytest.raises(ValueError, match="naive datetime"):
        convert.now_pb(datetime(2020, 1, 1))
    for d in (timedelta(microseconds=-1), timedelta(days=-3, microseconds=7), timedelta(0)):
        rp = RetryPolicy(initial_backoff=d, max_backoff=d)
        assert convert.retry_policy_to_pb(rp) == old_retry_policy_to_pb(rp)


# -- reading a CreateRunRequest --------------------------------------------------------------


@st.composite
def create_requests(draw: st.DrawFn) -> runs_pb2.CreateRunRequest:
    req = runs_pb2.CreateRunRequest(image=draw(texts), request_id=draw(texts))
    if draw(st.booleans()):
        req.priority = draw(int32s)
    if draw(st.booleans()):
        req.inputs.CopyFrom(build_struct(draw(json_docs(st.one_of(scalars, st.just(UNSET))))))
    if draw(st.booleans()):
        req.constraints.SetInParent()
        for name in ("cpu", "ram_mb", "vram_mb", "gpu_id"):
            if draw(st.booleans()):
                setattr(req.constraints, name, draw(int32s))
    if draw(st.booleans()):
        rp = req.retry_policy
        rp.SetInParent()
        rp.max_attempts = draw(st.sampled_from([0, 1, 3, -1]))
        rp.backoff_multiplier = draw(st.sampled_from([0.0, 2.0, math.nan, math.inf]))
        for name in ("initial_backoff", "max_backoff"):
            if draw(st.booleans()):
                getattr(rp, name).seconds = draw(st.sampled_from([0, 5, -5, 10**12]))
                getattr(rp, name).nanos = draw(st.sampled_from([0, 1500, -1, 10**9]))
    if draw(st.booleans()):
        req.event_delivery.topic = draw(texts)
        if draw(st.booleans()):
            req.event_delivery.attributes.CopyFrom(build_struct(draw(json_docs(scalars))))
    return req


@PROPERTY
@given(req=create_requests(), max_bytes=st.one_of(st.none(), st.integers(0, 300)))
def test_spec_from_create_agrees_with_the_old_reading(
    req: runs_pb2.CreateRunRequest, max_bytes: int | None
) -> None:
    old = outcome(old_spec_from_create, req, max_bytes)
    new = outcome(convert.spec_from_create, req, max_bytes)
    if old[0] == "ok":
        assert new[0] == "ok", new
        assert new[1] == old[1]
        assert strict(new[1]) == strict(old[1])
    else:
        assert new == old


def test_unset_parts_of_a_request_read_as_the_defaults() -> None:
    spec = convert.spec_from_create(runs_pb2.CreateRunRequest(image="i"))
    assert spec == RunSpec(image="i")
    assert spec.event_delivery.attributes is not RunSpec(image="i").event_delivery.attributes


# -- new run ids -----------------------------------------------------------------------------


def test_new_run_ids_are_uuid7_strings_of_created_at() -> None:
    seen: set[str] = set()
    now = datetime(2026, 11, 26, 14, 30, 1, 234567, tzinfo=UTC)
    for _ in range(200):
        run = new_run(RunSpec(image="i"), now)
        for value in (run.id, run.attempt.id):
            parsed = uuid.UUID(value)
            assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
            assert str(parsed) == value
            assert parsed.int >> 80 == to_us(now) // 1000  # the 48-bit Unix milliseconds
            seen.add(value)
    assert len(seen) == 400


def test_new_run_ids_sort_by_creation_time() -> None:
    t0 = datetime(2026, 11, 26, tzinfo=UTC)
    ids = [new_run(RunSpec(image="i"), t0 + timedelta(milliseconds=n)).id for n in range(50)]
    assert ids == sorted(ids)
    assert new_run(RunSpec(image="i"), datetime.now(UTC), run_id="given").id == "given"
