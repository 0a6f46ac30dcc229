"""Reading what a command sends: `--input k=v`, JSON files (or `-` for stdin), times."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from gyoza_grpc.client_cli.failures import UsageError

# A Struct carries numbers as doubles: larger integers would silently change.
_MAX_EXACT_INT = 2**53
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _in_range(text: str, bounds: tuple[int, int]) -> int:
    value = int(text)  # a ValueError is argparse's "invalid int32 value: ..."
    if not bounds[0] <= value <= bounds[1]:
        raise argparse.ArgumentTypeError(f"{value} is out of range ({bounds[0]}..{bounds[1]})")
    return value


# argparse types of the integer flags that become int32/int64 fields: an out-of-range value
# is argparse's usage error, not protobuf's ValueError when the request is built.
def int32(text: str) -> int:
    return _in_range(text, _INT32)


def int64(text: str) -> int:
    return _in_range(text, _INT64)


def check_utf8(text: str, where: str) -> None:
    """Protobuf strings are UTF-8: a lone surrogate (an argument with bytes that are not
    UTF-8, or a JSON "\\ud800") cannot be sent."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise UsageError(f"{where}: {text!r} is not valid UTF-8") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON; the server refuses them too


def parse_value(text: str) -> Any:
    """The value of `--input k=v`: JSON when it parses as JSON, else the text itself."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def parse_pairs(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """`k=v` pairs into a dict; a later key replaces an earlier one."""
    doc: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        doc[key] = parse_value(value)
    return doc


def read_json_file(path: str, flag: str) -> Any:
    """A JSON document from a file, or from stdin for `-`."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise UsageError(f"{flag}: cannot read {path}: {reason}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        raise UsageError(f"{flag}: {path} is not JSON: {err}") from None


def read_json_object(path: str, flag: str) -> dict[str, Any]:
    doc = read_json_file(path, flag)
    if not isinstance(doc, dict):
        raise UsageError(f"{flag}: {path} must hold a JSON object, got {type(doc).__name__}")
    return doc


def to_struct(doc: dict[str, Any], flag: str) -> struct_pb2.Struct:
    _check_numbers(doc, flag)
    s = struct_pb2.Struct()
    s.update(doc)
    return s


def _check_numbers(value: Any, where: str) -> None:
    """Numbers a Struct carries exactly, and (the name aside) strings protobuf can encode."""
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        check_utf8(value, where)
    if isinstance(value, int) and abs(value) > _MAX_EXACT_INT:
        raise UsageError(f"{where}: {value} is too large to send exactly (at most 2^53)")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{where}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            check_utf8(k, where)
            _check_numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_numbers(v, f"{where}[{i}]")


def timestamp(text: str, flag: str) -> timestamp_pb2.Timestamp:
    """An RFC 3339 time, e.g. 2026-01-31T12:00:00Z."""
    ts = timestamp_pb2.Timestamp()
    try:
        ts.FromJsonString(text)
    except ValueError:
        raise UsageError(
            f"{flag} expects an RFC 3339 time like 2026-01-31T12:00:00Z, got {text!r}"
        ) from None
    return ts
