"""The tables' schemas against the validation made from the same tables: whatever the gateway
accepts, its schema accepts too (pydantic's lax forms included), and the document is whole."""

from __future__ import annotations

import re
from typing import Any

import pydantic
from hypothesis import example, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_spec

from gyoza_grpc.gateway.fields import LAX_INT_PATTERN, message_schema
from gyoza_grpc.gateway.messages import REQUEST_MESSAGES, RUN_CREATE, RUN_UPDATE
from gyoza_grpc.gateway.openapi import ROUTES, document
from gyoza_grpc.gateway.validation import model
from tests.gateway.schema_check import iter_schema_refs, validate

_INT = pydantic.TypeAdapter(int)
_DIGITY = st.text(alphabet="0123456789+-._ \t\n\x1c\x85\ufeff\u3000\xa0\u2007ax", max_size=12)


def _pydantic_reads(text: str) -> bool:
    try:
        _INT.validate_python(text)
    except pydantic.ValidationError:
        return False
    return True


# Zeros in front are dropped before the rest is read, and the rest may then start with a
# minus: hypothesis found "0-0" (pydantic reads 0) when the pattern did not know it.
_READ_AFTER_ZEROS = ("0-0", "0-1", "00-0", "+0-1", "0_-5", "0-_1", "0-5_0", "0-1.0", "0-0.00")
_ZEROS_AND_UNDERSCORES = ("0__0", "00__1", "-0_1", "0_0.0", "-00")


@given(_DIGITY)
@example("0-0")
@example("\u20070-1 ")
@settings(max_examples=600)
def test_lax_int_pattern_is_what_pydantic_reads_as_an_int(text: str) -> None:
    assert (re.fullmatch(LAX_INT_PATTERN, text) is not None) == _pydantic_reads(text), text


def test_lax_int_pattern_examples() -> None:
    accepted = ("7", " +7 ", "007", "1_000", "7.0", "-7.00", "\u30007\u3000")
    for text in (*accepted, *_READ_AFTER_ZEROS, *_ZEROS_AND_UNDERSCORES):
        assert _pydantic_reads(text) and re.fullmatch(LAX_INT_PATTERN, text), text
    refused = ("7.5", "1e3", "_1", "1__0", "7.", "0x10", "", " ", "\x1c7", "\ufeff7")
    # A sign before the zeros, a second sign, or a rest that is not an integer.
    after_zeros = ("-0-1", "0--1", "0+1", "0-00", "0-0_0", "0-1_", "0-", "10-0", "0-1.5")
    underscores = ("0_", "0_.0", "0.", "00.", "-_1", "+_1", "1_.0", "0-1__0")
    for text in (*refused, *after_zeros, *underscores):
        assert not _pydantic_reads(text) and not re.fullmatch(LAX_INT_PATTERN, text), text
    assert _INT.validate_python("0-1") == -1 and _INT.validate_python("0_-5") == -5


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    _DIGITY,
    st.sampled_from(["PENDING", "INFO", "PROGRESS", "", "img"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def _bodies(message: Any) -> st.SearchStrategy[dict[str, Any]]:
    names = [f.name for f in message.fields]
    nested = st.dictionaries(st.sampled_from(["cpu", "max_attempts", "topic", "x"]), _JSON)
    return st.dictionaries(st.sampled_from([*names, "extra"]), _JSON | nested, max_size=5)


def _handler_refuses(message: Any, body: dict[str, Any]) -> bool:
    """A field with an `enum_error` takes any string in the model, as the original's did: its
    handler then answers 400 for a name outside the enum (inbound.py), so the gateway does
    not accept the body and its schema need not either."""
    return any(
        f.enum_error is not None and body.get(f.name) is not None and body[f.name] not in f.enum
        for f in message.fields
    )


@given(st.sampled_from(REQUEST_MESSAGES).flatmap(lambda m: st.tuples(st.just(m), _bodies(m))))
@example((RUN_CREATE, {"priority": "0-0"}))
@example((RUN_CREATE, {"image": "img", "constraints": {"cpu": " 0_-1"}}))
@example((RUN_UPDATE, {"state": ""}))
@example((RUN_UPDATE, {"state": "PENDING", "priority": " 7 "}))
@settings(max_examples=400, deadline=None)
def test_whatever_a_table_accepts_its_schema_accepts(pair: tuple[Any, dict[str, Any]]) -> None:
    message, body = pair
    try:
        model(message).model_validate(body, from_attributes=True)
    except pydantic.ValidationError:
        return
    if _handler_refuses(message, body):
        return
    validate(body, message_schema(message, lax=True))


def test_a_lax_body_in_the_schema() -> None:
    body = {"image": "i", "priority": " 7 ", "constraints": {"cpu": True, "gpu_id": "1_0"}}
    model(RUN_CREATE).model_validate(body)
    validate(body, message_schema(RUN_CREATE, lax=True))
    for text in _READ_AFTER_ZEROS:
        zeros = {"image": "i", "priority": text}
        model(RUN_CREATE).model_validate(zeros)
        validate(zeros, message_schema(RUN_CREATE, lax=True))


def test_the_document_is_valid_and_whole() -> None:
    doc = document()
    validate_spec(doc)
    schemas = doc["components"]["schemas"]
    used = set(iter_schema_refs(doc["paths"]))
    while True:
        more = used | {r for name in used for r in iter_schema_refs(schemas[name])}
        if more == used:
            break
        used = more
    assert used == set(schemas)  # every component is used, and every $ref resolves
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        names = [p["name"] for p in op["parameters"]]
        assert names == [p.field.name for p in route.params] + ["X-API-Key"]
    stream = doc["paths"]["/runs/{id}/events/stream"]["get"]["responses"]["200"]["content"]
    assert set(stream) == {"text/event-stream"} and "itemSchema" in stream["text/event-stream"]
