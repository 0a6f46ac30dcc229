"""The gateway's description language: a message is a table of fields, and each field's JSON
Schema is made here, so /openapi.json, the request validation (validation.py) and the answers
(responses.py) all read the same tables.

A request field is described as the gateway reads it, lax as pydantic's default mode (which the
original's FastAPI used): an integer may also come as a string of digits (`"7"`, `" +7 "`,
`"1_000"`, `"7.0"`) or a boolean (`true` is 1), so its schema says so (`anyOf`, the integer
first). An answer's field is described exactly as it is written, and an answer holds every field
of its table (`required`), nothing else (`additionalProperties: false`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# What pydantic's lax mode reads as an integer from a string (pydantic-core's `str_as_int`):
# inside whitespace (Rust's `str::trim`, Unicode White_Space), a sign, then digits with single
# `_` between them and an optional `.0...`. Zeros (and `_`) in front of the first other digit
# are dropped before the rest is read, so the rest may be a zero, or even start with a minus
# when no sign came before: "0-1" is -1, "0_-5" is -5, "+0-1" is -1, "-0-1" is refused. A
# number of more than 4,300 digits is refused too (like any value out of a field's range,
# which a string's pattern does not say). Checked against pydantic itself in
# tests/gateway/test_schema_tables.py.
_WS = "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_NONZERO = "[1-9](?:_?[0-9])*"  # no `__`, no `_` at either end
_EXACT = "(?:\\.0+)?"
_SIGNED = f"[+-]?(?:(?:0[0_]*)?{_NONZERO}|0(?:[0_]*0)?){_EXACT}"
_ZEROS_THEN_MINUS = f"\\+?0[0_]*-_?(?:0|{_NONZERO}){_EXACT}"
LAX_INT_PATTERN = f"^{_WS}*(?:{_SIGNED}|{_ZEROS_THEN_MINUS}){_WS}*$"


class Type(StrEnum):
    INT32 = "int32"
    INT64 = "int64"
    INTEGER = "integer"  # any size, as Python's int (the original's query parameters)
    NUMBER = "number"  # read strictly: a JSON number
    STRING = "string"
    BOOLEAN = "boolean"
    OBJECT = "object"  # any JSON object (a google.protobuf.Struct)
    ANY = "any"
    DATETIME = "date-time"
    TEXT_OR_INT = "text_or_int"  # an event's msg: text, or an int (PROGRESS)
    MESSAGE = "message"  # `ref` names the message
    ARRAY = "array"  # of `ref` messages
    MAP = "map"  # string keys, `ref` message values
    CONST = "const"


NO_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message (or one parameter of a route)."""

    name: str
    type: Type
    description: str = ""
    required: bool = False  # a request must give it; an answer always has it
    nullable: bool = False
    default: Any = NO_DEFAULT
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    # The original refused a value outside `enum` in the handler, with this 400 detail
    # ("Invalid state '{}'"), not with FastAPI's 422: the gateway does the same.
    enum_error: str | None = None
    ref: str | None = None
    const: Any = None
    get: Callable[[Any], Any] | None = None  # answers: the JSON value, from the proto message
    schema: dict[str, Any] | None = None  # Type.ANY narrowed by hand (a 422's `loc`)

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The numeric bounds, the type's own narrowed by `minimum`/`maximum`."""
        lo: float | None
        hi: float | None
        lo, hi = {Type.INT32: INT32, Type.INT64: INT64}.get(self.type, (None, None))
        if self.minimum is not None:
            lo = self.minimum if lo is None else max(lo, self.minimum)
        if self.maximum is not None:
            hi = self.maximum if hi is None else min(hi, self.maximum)
        return lo, hi

    @property
    def is_integer(self) -> bool:
        return self.type in (Type.INT32, Type.INT64, Type.INTEGER)


@dataclass(frozen=True, slots=True)
class Message:
    name: str
    fields: tuple[Field, ...]
    description: str = ""

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _base(f: Field, *, lax: bool) -> dict[str, Any]:
    t = f.type
    out: dict[str, Any]
    if f.is_integer:
        out = {"type": "integer"}
        if t is not Type.INTEGER:
            out["format"] = t.value
    elif t is Type.NUMBER:
        out = {"type": "number", "format": "double"}
    elif t is Type.STRING:
        out = {"type": "string"}
    elif t is Type.BOOLEAN:
        out = {"type": "boolean"}
    elif t is Type.OBJECT:
        out = {"type": "object"}
    elif t is Type.ANY:
        out = dict(f.schema or {})
    elif t is Type.DATETIME:
        out = {"type": "string", "format": "date-time"}
    elif t is Type.TEXT_OR_INT:
        out = {"type": ["string", "integer", "boolean"] if lax else ["string", "integer"]}
    elif t is Type.MESSAGE:
        out = ref(str(f.ref))
    elif t is Type.ARRAY:
        out = {"type": "array", "items": ref(str(f.ref))}
    elif t is Type.MAP:
        out = {"type": "object", "additionalProperties": ref(str(f.ref))}
    else:
        out = {"const": f.const}
    lo, hi = f.bounds
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    for key, value in (
        ("minLength", f.min_length),
        ("maxLength", f.max_length),
        ("pattern", f.pattern),
    ):
        if value is not None:
            out[key] = value
    if f.enum:
        out["enum"] = list(f.enum)
    if lax and f.is_integer:
        text = {"type": "string", "pattern": LAX_INT_PATTERN}
        out = {"anyOf": [out, text, {"type": "boolean"}]}
    return out


def field_schema(f: Field, *, lax: bool) -> dict[str, Any]:
    """The JSON Schema of one field: `lax` for what a request may send."""
    out = _base(f, lax=lax)
    if f.nullable:
        if "type" in out and "enum" not in out:
            kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*kinds, "null"]
        elif "type" in out:
            out = {"anyOf": [out, {"type": "null"}]}
        elif "anyOf" in out:
            out["anyOf"].append({"type": "null"})
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    if f.description:
        out["description"] = f.description
    if f.default is not NO_DEFAULT:
        out["default"] = f.default
    return out


def message_schema(m: Message, *, lax: bool) -> dict[str, Any]:
    """A request message (`lax`: unknown keys are ignored, as pydantic's default) or an answer
    (closed: exactly its fields)."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: field_schema(f, lax=lax) for f in m.fields},
    }
    required = [f.name for f in m.fields if f.required]
    if required:
        out["required"] = required
    if not lax:
        out["additionalProperties"] = False
    if m.description:
        out["description"] = m.description
    return out


@dataclass(frozen=True, slots=True)
class Parameter:
    """A route's parameter: `where` is "path", "query" or "header"."""

    where: str
    field: Field


def parameter_schema(p: Parameter) -> dict[str, Any]:
    """An OpenAPI parameter object; every value arrives as text, read as pydantic reads it."""
    f = p.field
    schema = field_schema(f, lax=True)
    if f.is_integer:
        schema["anyOf"] = schema["anyOf"][:2]  # text cannot be a JSON boolean
    description = schema.pop("description", "")
    return {
        "name": f.name,
        "in": p.where,
        "required": f.required,
        "description": description,
        "schema": schema,
    }
