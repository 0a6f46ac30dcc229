"""Requests read as the original's FastAPI read them.

The body: no body is `missing`; a JSON content type (or none) is parsed (FastAPI's
`json_invalid` 422 with the error's position, its 400 "There was an error parsing the body" for
bytes that are not text); any other content type is handed on as text, which no message takes.
Then the parameters (path, query, header: the last of a repeated query parameter, as Starlette
reads it) and the body are validated by pydantic models made from the tables in messages.py, in
pydantic's default (lax) mode, and every error of the request comes back in one 422.

Two things JSON can hold but a protobuf message cannot are refused as 422 too: NaN/Infinity
(the original accepted them, then failed writing its answer), strings that are not UTF-8 and
nesting deeper than protobuf decodes.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, create_model

from gyoza_grpc.gateway.errors import HttpError, Unreadable, issue
from gyoza_grpc.gateway.fields import NO_DEFAULT, Field, Message, Parameter, Type
from gyoza_grpc.gateway.messages import REQUEST_MESSAGES

_MESSAGES = {m.name: m for m in REQUEST_MESSAGES}
# protobuf's decoder stops at 100 nested messages, and each JSON level of a Struct is two
# (Struct/ListValue, Value): 32 levels keep every body, and the runs made from it, readable.
MAX_JSON_DEPTH = 32


class _NotJson(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, JSON has no such numbers."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def read_body(raw: bytes, content_type: str | None) -> Any:
    """The body as FastAPI hands it to the model: None when there is none."""
    if not raw:
        return None
    if content_type is not None and not _is_json(content_type):
        return raw.decode("utf-8", "replace")
    try:
        doc = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        ctx = {"error": err.msg}
        where: list[str | int] = ["body", err.pos]
        raise Unreadable([issue(where, "JSON decode error", "json_invalid", {}, ctx)]) from None
    except _NotJson as err:
        ctx = {"error": str(err)}
        raise Unreadable([issue(["body"], "JSON decode error", "json_invalid", {}, ctx)]) from None
    except (ValueError, RecursionError):  # not UTF-8/16/32 text, or nested past the parser
        raise HttpError(400, "There was an error parsing the body") from None
    _check_convertible(doc)
    return doc


def _check_convertible(doc: Any) -> None:
    """422 for what JSON can hold but a protobuf message cannot: a string with a lone
    surrogate (`"\\ud800"`, not UTF-8) or nesting deeper than MAX_JSON_DEPTH."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                msg = "Input should be valid UTF-8"
                raise Unreadable([issue(["body"], msg, "string_unicode", {})]) from None
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                msg = f"Input should be nested at most {MAX_JSON_DEPTH} levels deep"
                raise Unreadable([issue(["body"], msg, "json_invalid", {})])
            items = [*value, *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


# -- pydantic models from the tables ---------------------------------------------------------


def _annotation(f: Field) -> Any:
    lo, hi = f.bounds
    t: Any
    if f.is_integer:
        t = Annotated[int, pydantic.Field(ge=lo, le=hi)]
    elif f.type is Type.NUMBER:
        t = Annotated[float, pydantic.Field(strict=True, allow_inf_nan=False, ge=lo, le=hi)]
    elif f.type is Type.STRING and f.enum and f.enum_error is None:
        t = Literal[f.enum]
    elif f.type is Type.STRING:
        constraints = pydantic.Field(
            min_length=f.min_length, max_length=f.max_length, pattern=f.pattern
        )
        t = Annotated[str, constraints]
    elif f.type is Type.BOOLEAN:
        t = bool
    elif f.type is Type.OBJECT:
        t = dict[str, Any]
    elif f.type is Type.TEXT_OR_INT:
        t = str | int
    elif f.type is Type.MESSAGE:
        t = model(_MESSAGES[str(f.ref)])
    else:
        t = Any
    return t | None if f.nullable else t


def _model(name: str, fields: Iterable[Field]) -> type[BaseModel]:
    """Fields are named by their alias (a parameter may be `created[gte]`). An optional field
    that is absent is None, unless its table gives a default it stands for (`limit`: 10);
    a default the server applies (`priority`: 5) is left to the server."""
    spec: dict[str, Any] = {}
    for i, f in enumerate(fields):
        default: Any = ...
        if not f.required:
            default = None if f.nullable or f.default is NO_DEFAULT else f.default
        spec[f"f{i}"] = (_annotation(f), pydantic.Field(default=default, alias=f.name))
    return create_model(name, __config__=ConfigDict(populate_by_name=False), **spec)


@cache
def model(message: Message) -> type[BaseModel]:
    return _model(message.name, message.fields)


@cache
def _params_model(where: str, params: tuple[Parameter, ...]) -> type[BaseModel]:
    return _model(f"{where}_parameters", (p.field for p in params if p.where == where))


def _issues(err: pydantic.ValidationError, prefix: list[str | int]) -> list[dict[str, Any]]:
    out = []
    for e in err.errors(include_url=False):
        ctx = e.get("ctx")
        item = issue(
            [*prefix, *e["loc"]],
            e["msg"],
            e["type"],
            e["input"],
            {k: v if isinstance(v, int | float | str) else str(v) for k, v in ctx.items()}
            if ctx
            else None,
        )
        out.append(item)
    return out


def _validate(
    m: type[BaseModel], value: Any, prefix: list[str | int], errors: list[dict[str, Any]]
) -> dict[str, Any]:
    try:
        return m.model_validate(value, from_attributes=True).model_dump(by_alias=True)
    except pydantic.ValidationError as err:
        errors.extend(_issues(err, prefix))
        return {}


def read_request(
    params: tuple[Parameter, ...],
    *,
    path: Mapping[str, str],
    query: Any,
    headers: Mapping[str, str],
    body: Message | None = None,
    body_value: Any = None,
    body_required: bool = True,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the parameters by name, the body) read and validated; Unreadable (422) lists every
    error. `query` is a multidict: the last of a repeated name counts."""
    errors: list[dict[str, Any]] = []
    given: dict[str, dict[str, Any]] = {"path": {}, "query": {}, "header": {}}
    for p in params:
        name = p.field.name
        if p.where == "path":
            given["path"][name] = path[name]
        elif p.where == "query" and name in query:
            given["query"][name] = query.getall(name)[-1]
        elif p.where == "header" and name in headers:
            given["header"][name] = headers[name]
    values: dict[str, Any] = {}
    for where in ("path", "query", "header"):
        if any(p.where == where for p in params):
            values.update(_validate(_params_model(where, params), given[where], [where], errors))
    doc: dict[str, Any] | None = None
    if body is not None:
        if body_value is None and body_required:
            errors.append(issue(["body"], "Field required", "missing", None))
        else:
            doc = _validate(model(body), {} if body_value is None else body_value, ["body"], errors)
    if errors:
        raise Unreadable(errors)
    return values, doc
