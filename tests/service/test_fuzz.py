"""Thousands of random and malformed requests to every RPC: never UNKNOWN or INTERNAL, the
server stays up, the database stays consistent.

Requests are built generically from the proto descriptors, so a new RPC or field is fuzzed
without touching this file: random values of every field's kind (and its extremes), unknown
enum numbers, huge, wide and deep google.protobuf.Structs, absurd Timestamps and Durations,
negative limits, NULs; and, sent as raw bytes, invalid UTF-8 in string fields, truncated and
random bytes, Structs nested past the decoder's limit. Strings for ids and names are often
taken from real runs, workers, topics and definitions so requests reach the state machine.
Derandomized, so CI sees the same requests every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor, message
from google.protobuf.descriptor import FieldDescriptor as FD
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyoza.v1 import (
    access_pb2,
    definitions_pb2,
    definitions_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    workers_pb2,
    workers_pb2_grpc,
)
from gyoza_grpc.domain.limits import DEFAULT_LIMITS
from gyoza_grpc.server import GyozaServer
from tests import databases
from tests.conftest import launch
from tests.consistency import database_problems

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# Long-polls and streams are cut short: an expired deadline is an allowed answer.
SHORT_TIMEOUT_S = 0.5
UNARY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Method:
    path: str
    request: type[message.Message]
    response: type[message.Message]
    streaming: bool


def _methods() -> list[Method]:
    out = []
    for module in (runs_pb2, topics_pb2, workers_pb2, definitions_pb2, access_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out.append(
                    Method(
                        path=f"/{service.full_name}/{m.name}",
                        request=_message_class(module, m.input_type),
                        response=_message_class(module, m.output_type),
                        streaming=m.server_streaming,
                    )
                )
    return out


def _message_class(module: Any, d: descriptor.Descriptor) -> type[message.Message]:
    cls: type[message.Message] = getattr(module, d.name)
    return cls


METHODS = _methods()


@dataclass
class Pools:
    """Real names the fuzzer mixes into string fields, so requests get past 'not found'."""

    run_ids: list[str] = field(default_factory=list)
    worker_ids: list[str] = field(default_factory=lambda: ["w1", "w2"])
    topics: list[str] = field(default_factory=lambda: ["t", "u"])
    names: list[str] = field(default_factory=lambda: ["op"])
    versions: list[str] = field(default_factory=lambda: ["1.0.0", "1.2.0", "latest"])


# -- value strategies ------------------------------------------------------------------------

INT32 = st.one_of(
    st.sampled_from([0, 1, -1, 2, 5, 60, 100, 101, 1000, 2**31 - 1, -(2**31)]),
    st.integers(-5, 200),
    st.integers(-(2**31), 2**31 - 1),
)
INT64 = st.one_of(INT32, st.integers(-(2**63), 2**63 - 1))
UINT32 = st.one_of(st.integers(0, 200), st.integers(0, 2**32 - 1))
UINT64 = st.one_of(UINT32, st.integers(0, 2**64 - 1))
DOUBLE = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e308, -1e308, float("nan"), float("inf")]),
    st.floats(),
)
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from("a\x00é\u2028\U0001f600 -_.:/"), max_size=8),
    st.integers(0, 300_000).map(lambda n: "x" * n),
)
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=10), INT64.map(float)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


# Plausible values: half the requests use only these, so they get past validation and
# drive the state machine, claims and streams.
SANE_INT = st.sampled_from([0, 1, 2, 3, 5, 10, 100])
SANE_DOUBLE = st.sampled_from([0.0, 1.0, 2.0])
SANE_TEXT = st.sampled_from(["", "a", "hello", "50", "img"])
SANE_STRUCT = st.one_of(
    st.dictionaries(st.sampled_from(["a", "b", "n"]), JSON_LEAF, max_size=3),
    st.sampled_from(
        [{"outputs": {"a": 1.0}}, {"worker_id": "w1"}, {"gpu_id": 0.0}, {"error_message": "x"}]
    ),
)


def _deep(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1.0}
    for _ in range(depth):
        doc = {"d": doc}
    return doc


STRUCT_DOC = st.one_of(
    st.dictionaries(st.text(max_size=6), JSON, max_size=5),
    st.integers(1, 95).map(_deep),  # deep, under the decoder's limit
    st.integers(0, 3_000_000).map(lambda n: {"big": "x" * n}),  # huge
    st.integers(0, 20_000).map(lambda n: {f"k{i}": float(i) for i in range(n)}),  # wide
    st.sampled_from([{"outputs": {"a": 1.0}}, {"worker_id": "w1"}, {"gpu_id": 0.0}]),
)


def _string_for(f: FD, pools: Pools, sane: bool) -> st.SearchStrategy[str]:
    name = f.name
    real: list[str] = []
    if name in ("id", "run_id", "starting_after", "ending_before"):
        real = pools.run_ids
    elif name == "worker_id":
        real = pools.worker_ids
    elif name == "topic":
        real = pools.topics
    elif name in ("name", "op_definition"):
        real = pools.names
    elif name == "version":
        real = pools.versions
    elif name == "image":
        real = ["img"]
    other = SANE_TEXT if sane else TEXT
    if real:
        # An index, not sampled_from: the pool of run ids grows, the strategy's shape must not.
        picked = st.integers(0, 255).map(lambda i: real[i % len(real)])
        return st.one_of(picked, other)
    return other


def _scalar(f: FD, pools: Pools, sane: bool) -> st.SearchStrategy[Any]:
    t = f.type
    if sane and t not in (FD.TYPE_STRING, FD.TYPE_BOOL, FD.TYPE_BYTES, FD.TYPE_ENUM):
        return SANE_DOUBLE if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT) else SANE_INT
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return INT32
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return INT64
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return UINT32
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return UINT64
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return DOUBLE
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_STRING:
        return _string_for(f, pools, sane)
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=20)
    if t == FD.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        if sane:
            return st.sampled_from(known)
        return st.one_of(st.sampled_from(known), INT32)  # proto3 enums are open
    raise AssertionError(f"no strategy for field type {t}")


# Fields a plausible request always sets.
_ALWAYS = frozenset({"id", "run_id", "worker_id", "topic", "name", "version", "image"})


def _fill(data: st.DataObject, msg: message.Message, pools: Pools, depth: int, sane: bool) -> None:
    """Set a random subset of `msg`'s fields to random (or, when `sane`, plausible) values."""
    d = msg.DESCRIPTOR
    full = d.full_name
    m: Any = msg
    if full == "google.protobuf.Struct":
        m.update(data.draw(SANE_STRUCT if sane else STRUCT_DOC))
        return
    if full == "google.protobuf.Value":
        m.CopyFrom(_value(data.draw(JSON_LEAF if sane else st.one_of(JSON, STRUCT_DOC))))
        return
    if full in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        if sane:
            m.seconds = data.draw(st.sampled_from([0, 1, 2, 1_700_000_000, 4_000_000_000]))
            return
        m.seconds = data.draw(st.one_of(st.integers(-100, 10**10), INT64))
        m.nanos = data.draw(st.one_of(st.integers(0, 999_999_999), INT32))
        return
    if full == "google.protobuf.FieldMask":
        paths = st.sampled_from(["state", "outputs", "priority", "bogus", ""])
        m.paths.extend(data.draw(st.lists(paths if sane else st.one_of(paths, TEXT), max_size=4)))
        return
    for f in d.fields:
        if sane and (f.name in _ALWAYS or f.type == FD.TYPE_ENUM):
            pass  # names the target and the kind of change: set, so requests get far
        elif data.draw(st.integers(0, 2) if sane else st.integers(0, 1)) != 1:
            continue
        if f.type == FD.TYPE_MESSAGE:
            if depth >= 4:
                continue
            if f.message_type.GetOptions().map_entry:
                _fill_map(data, msg, f, pools, depth, sane)
            elif f.is_repeated:
                for _ in range(data.draw(st.integers(0, 3))):
                    _fill(data, getattr(msg, f.name).add(), pools, depth + 1, sane)
            else:
                sub = getattr(msg, f.name)
                sub.SetInParent()
                _fill(data, sub, pools, depth + 1, sane)
        elif f.is_repeated:
            values = st.lists(_scalar(f, pools, sane), max_size=4)
            getattr(msg, f.name).extend(data.draw(values))
        else:
            setattr(msg, f.name, data.draw(_scalar(f, pools, sane)))


def _fill_map(
    data: st.DataObject, msg: message.Message, f: FD, pools: Pools, depth: int, sane: bool
) -> None:
    key_field = f.message_type.fields_by_name["key"]
    value_field = f.message_type.fields_by_name["value"]
    target = getattr(msg, f.name)
    for _ in range(data.draw(st.integers(0, 3))):
        key = data.draw(_scalar(key_field, pools, sane))
        if value_field.type == FD.TYPE_MESSAGE:
            _fill(data, target[key], pools, depth + 1, sane)
        else:
            target[key] = data.draw(_scalar(value_field, pools, sane))


def _value(doc: Any) -> Any:
    from google.protobuf import struct_pb2

    holder = struct_pb2.Struct()
    holder.update({"v": doc})
    return holder.fields["v"]


# -- malformed bytes -------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _deep_struct_bytes(depth: int) -> bytes:
    """A Struct nested `depth` times through Value.struct_value (past protobuf's limit)."""
    inner = b""
    for _ in range(depth):
        value = _length_delimited(5, inner)  # Value.struct_value
        entry = _length_delimited(1, b"d") + _length_delimited(2, value)  # map entry
        inner = _length_delimited(1, entry)  # Struct.fields
    return inner


def _mangle(data: st.DataObject, method: Method, body: bytes) -> bytes:
    """The request's bytes, sometimes made undecodable in one of several ways."""
    how = data.draw(
        st.sampled_from(["as is"] * 6 + ["bad utf-8", "truncate", "random", "deep struct"])
    )
    d = method.request.DESCRIPTOR
    if how == "bad utf-8":
        strings = [f for f in d.fields if f.type == FD.TYPE_STRING]
        if strings:
            f = data.draw(st.sampled_from(strings))
            bad = data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"a\xed\xa0\x80b", b"\x80"]))
            return body + _length_delimited(f.number, bad)
    if how == "truncate" and body:
        return body[: data.draw(st.integers(0, len(body) - 1))] + b"\x0a\xff"
    if how == "random":
        return data.draw(st.binary(max_size=64))
    if how == "deep struct":
        structs = [
            f
            for f in d.fields
            if f.type == FD.TYPE_MESSAGE and f.message_type.full_name == "google.protobuf.Struct"
        ]
        if structs:
            f = data.draw(st.sampled_from(structs))
            return body + _length_delimited(
                f.number, _deep_struct_bytes(data.draw(st.integers(90, 400)))
            )
    return body


# -- the server under fuzz -------------------------------------------------------------------


@dataclass
class Target:
    server: GyozaServer
    channel: grpc.aio.Channel
    url: str
    pools: Pools
    sent: dict[str, int] = field(default_factory=dict)
    rounds: int = 0


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=databases.BACKENDS)
async def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    if request.param == "sqlite":
        url = databases.sqlite_url(tmp_path_factory.mktemp("fuzz"))
    else:
        url = await databases.create_postgres_database()
    try:
        gs = await launch(url, lease_seconds=1, sweep_interval_s=0.2)
        try:
            async with grpc.aio.insecure_channel(gs.target) as ch:
                yield Target(gs, ch, url, await _seed(ch))
        finally:
            await gs.stop(0)
    finally:
        if request.param != "sqlite":
            await databases.drop_postgres_database(url)


async def _seed(ch: grpc.aio.Channel) -> Pools:
    """A few runs in various states, two workers and a definition for the fuzzer to aim at."""
    pools = Pools()
    runs = runs_pb2_grpc.RunServiceStub(ch)
    for i in range(6):
        delivery = runs_pb2.EventDelivery(topic="t" if i % 2 else "")
        req = runs_pb2.CreateRunRequest(
            image="img", event_delivery=delivery, retry_policy=runs_pb2.RetryPolicy(max_attempts=3)
        )
        pools.run_ids.append((await runs.CreateRun(req)).run.id)
    workers = workers_pb2_grpc.WorkerServiceStub(ch)
    for wid in pools.worker_ids:
        await workers.Heartbeat(
            workers_pb2.HeartbeatRequest(
                worker_id=wid, resources=workers_pb2.Resources(cpu=8, ram_mb=8000)
            )
        )
    defs = definitions_pb2_grpc.DefinitionServiceStub(ch)
    await defs.UpsertDefinition(
        definitions_pb2.UpsertDefinitionRequest(
            definition=definitions_pb2.Definition(name="op", version="1.0.0", image="img")
        )
    )
    return pools


async def _call(t: Target, method: Method, body: bytes) -> grpc.StatusCode:
    """Send `body` to `method` as raw bytes; the status it ends with."""
    t.sent[method.path] = t.sent.get(method.path, 0) + 1
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    slow = method.streaming or method.path.endswith("/ClaimRuns")
    timeout = SHORT_TIMEOUT_S if slow else UNARY_TIMEOUT_S
    try:
        if method.streaming:
            call = t.channel.unary_stream(
                method.path, request_serializer=identity, response_deserializer=identity
            )(body, timeout=timeout)
            try:
                for _ in range(3):
                    if await call.read() is grpc.aio.EOF:
                        break
            finally:
                call.cancel()
            return grpc.StatusCode.OK
        reply = await t.channel.unary_unary(
            method.path, request_serializer=identity, response_deserializer=identity
        )(body, timeout=timeout)
    except grpc.aio.AioRpcError as err:
        if err.code() in FORBIDDEN or (
            # Only a request over the message size, a run at its event cap and too many
            # watchers are RESOURCE_EXHAUSTED (not, say, trailers too large for the client).
            err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and len(body) <= DEFAULT_LIMITS.max_message_bytes
            and _reason(err) not in ("EVENT_LIMIT_REACHED", "TOO_MANY_WATCHERS")
        ):
            raise AssertionError(
                f"{method.path} answered {err.code().name}: {err.details()}\n"
                f"request ({len(body)} bytes): {body[:300]!r}"
            ) from None
        return err.code()
    if method.path.endswith("CreateRun") or method.path.endswith("CreateRunFromDefinition"):
        run_id = method.response.FromString(reply).run.id  # type: ignore[attr-defined]
        if len(t.pools.run_ids) < 200:
            t.pools.run_ids.append(run_id)
    return grpc.StatusCode.OK


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


async def _healthy(ch: grpc.aio.Channel) -> None:
    resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def _plausible_event(data: st.DataObject, msg: runs_pb2.AddEventRequest) -> None:
    """Mostly what a worker sends, so runs move through their lifecycle under the fuzz."""
    if msg.type != runs_pb2.EVENT_TYPE_PROGRESS:
        msg.ClearField("progress")
    elif data.draw(st.booleans()):
        msg.progress = data.draw(st.integers(0, 100))
    if data.draw(st.integers(0, 3)) != 0:
        msg.ClearField("attempt")


def _draw_batch(data: st.DataObject, pools: Pools) -> list[tuple[Method, bytes]]:
    batch = []
    for _ in range(data.draw(st.integers(1, 10))):
        method = data.draw(st.sampled_from(METHODS))
        msg = method.request()
        sane = data.draw(st.booleans())
        _fill(data, msg, pools, 0, sane)
        if sane and isinstance(msg, runs_pb2.AddEventRequest):
            _plausible_event(data, msg)
        body = msg.SerializeToString()
        batch.append((method, body if sane else _mangle(data, method, body)))
    return batch


_FUZZ = settings(
    max_examples=350,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


async def _fuzz_round(target: Target, data: st.DataObject) -> None:
    batch = _draw_batch(data, target.pools)
    target.rounds += 1
    if target.url.startswith("postgresql") and target.rounds % 6:
        return  # every sixth round is sent on PostgreSQL: the same shapes, a bounded time
    await asyncio.gather(*(_call(target, m, body) for m, body in batch))
    await _healthy(target.channel)


@_FUZZ
@given(data=st.data())
async def test_random_and_malformed_requests_never_crash_the_server(
    target: Target, data: st.DataObject
) -> None:
    await _fuzz_round(target, data)


async def test_every_rpc_was_fuzzed_and_the_database_is_consistent(target: Target) -> None:
    """Runs after the fuzz test of the same backend (same module-scoped server)."""
    await _healthy(target.channel)
    assert {m.path for m in METHODS} <= set(target.sent), set(target.sent)
    total = sum(target.sent.values())
    assert total >= (1000 if target.url.startswith("sqlite") else 150), target.sent
    # The server still does real work after all that.
    runs = runs_pb2_grpc.RunServiceStub(target.channel)
    run = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))).run
    assert (await runs.GetRun(runs_pb2.GetRunRequest(id=run.id))).run.id == run.id
    problems = await database_problems(target.url)
    assert problems == [], "\n".join(problems[:20])
