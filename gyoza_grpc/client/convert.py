"""Python values <-> the well-known protobuf types a client sends and reads: JSON objects
(Struct), times (Timestamp) and durations (Duration). The client's only code touching them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

JSON = dict[str, Any]
# A Struct carries every number as a double: whole numbers up to 2**53 come back exact.
_MAX_EXACT_INT = 2**53

JsonObject = Mapping[str, Any] | struct_pb2.Struct
"""A JSON object to send: a mapping (str keys; JSON values), or a ready Struct."""


def to_struct(doc: JsonObject, field: str) -> struct_pb2.Struct:
    """A JSON object as a Struct. ValueError naming `field` for what JSON cannot carry (NaN,
    infinities, integers a double cannot hold exactly, keys that are not strings, sets...)."""
    if isinstance(doc, struct_pb2.Struct):
        return doc
    if not isinstance(doc, Mapping):
        raise ValueError(f"{field}: expected a JSON object (a mapping), got {type(doc).__name__}")
    _check(doc, field)
    struct = struct_pb2.Struct()
    try:
        json_format.ParseDict(dict(doc), struct)
    except (json_format.ParseError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"{field}: not a JSON object: {err}") from None
    return struct


def _check(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a finite number")
    if isinstance(value, int) and abs(value) > _MAX_EXACT_INT:
        raise ValueError(f"{where}: {value} is past 2**53, which JSON numbers here lose")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            _check(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            _check(item, f"{where}[{n}]")


def to_dict(struct: struct_pb2.Struct) -> JSON:
    """A Struct as a plain dict; whole numbers as ints (a Struct turns 3 into 3.0)."""
    doc: JSON = _plain(json_format.MessageToDict(struct))
    return doc


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_EXACT_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_duration(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def to_timestamp(value: datetime, field: str) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp; a naive one is refused (its zone is a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}: a naive datetime has no time zone; pass an aware one")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
