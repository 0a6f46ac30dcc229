"""Input specs and the validation of a run's inputs against them.

A definition declares each input's type (string, int, float, bool, list, object), whether it
is required, and an optional default. `validate_inputs` checks what a client sent: every
required input present, every value of its declared type, no unknown input. It reports every
violation at once, one per input (field "inputs.<name>"), and returns the inputs the run gets:
values normalised to their type, defaults filled in.

Numbers arrive through google.protobuf.Struct, which carries every number as a double: an int
input given as 3.0 is accepted as 3; 3.5 is not an int; a bool is never a number.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.model import JSON

# Every integer up to 2**53 is exact in a double; past it, 2**53 + 1 arrives as 2**53.
MAX_SAFE_INT = 2**53
MAX_INPUT_NAME_LEN = 128
_INPUT_NAME = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


class InputType(StrEnum):
    STRING = "STRING"
    INT = "INT"
    FLOAT = "FLOAT"
    BOOL = "BOOL"
    LIST = "LIST"
    OBJECT = "OBJECT"


# How a violation names each type: "must be an int".
_TYPE_NAMES = {
    InputType.STRING: "a string",
    InputType.INT: "an int",
    InputType.FLOAT: "a float",
    InputType.BOOL: "a bool",
    InputType.LIST: "a list",
    InputType.OBJECT: "an object",
}


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One declared input (or output). `has_default` tells "no default" from a default
    that happens to be None."""

    type: InputType
    required: bool = False
    has_default: bool = False
    default: Any = None


def json_kind(value: Any) -> str:
    """What a JSON value is, as a violation names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _number_text(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def coerce(kind: InputType, value: Any) -> tuple[Any, str | None]:
    """(the value normalised to `kind`, None), or (None, what is wrong with it)."""
    expected = f"must be {_TYPE_NAMES[kind]}"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is InputType.INT:
        if not is_number:
            return None, f"{expected}, got {json_kind(value)}"
        if isinstance(value, float) and not value.is_integer():
            return None, f"{expected}, got {_number_text(value)} (not a whole number)"
        if abs(value) > MAX_SAFE_INT:
            return None, (
                f"{expected} between -2^53 and 2^53 (a Struct number is a double), "
                f"got {_number_text(value)}"
            )
        return int(value), None
    if kind is InputType.FLOAT:
        if not is_number:
            return None, f"{expected}, got {json_kind(value)}"
        if not math.isfinite(value):
            return None, f"{expected}, got {_number_text(value)} (not finite)"
        return float(value), None
    accepted: type | tuple[type, ...] = {
        InputType.STRING: str,
        InputType.BOOL: bool,
        InputType.LIST: list,
        InputType.OBJECT: dict,
    }[kind]
    if not isinstance(value, accepted):
        return None, f"{expected}, got {json_kind(value)}"
    return value, None


def input_spec_violations(specs: Mapping[str, InputSpec], field: str) -> list[FieldViolation]:
    """Problems with the specs themselves (names, defaults), each at `field.<name>`."""
    out: list[FieldViolation] = []
    for name in sorted(specs):
        spec = specs[name]
        path = f"{field}.{name}"
        if len(name) > MAX_INPUT_NAME_LEN or not _INPUT_NAME.fullmatch(name):
            out.append(
                FieldViolation(
                    path,
                    "name must be 1 to "
                    f"{MAX_INPUT_NAME_LEN} letters, digits, '-' or '_', got {name!r}",
                )
            )
        elif spec.required and spec.has_default:
            out.append(FieldViolation(f"{path}.default", "a required input cannot have a default"))
        elif spec.has_default:
            _, problem = coerce(spec.type, spec.default)
            if problem is not None:
                out.append(FieldViolation(f"{path}.default", problem))
    return out


def normalise_specs(specs: Mapping[str, InputSpec]) -> dict[str, InputSpec]:
    """The specs with each default in its type's normal form (an int default 3.0 -> 3);
    call after input_spec_violations found nothing."""
    out: dict[str, InputSpec] = {}
    for name in sorted(specs):
        spec = specs[name]
        if spec.has_default:
            value, problem = coerce(spec.type, spec.default)
            assert problem is None, problem
            spec = InputSpec(spec.type, spec.required, True, value)
        out[name] = spec
    return out


def _unknown(specs: Mapping[str, InputSpec]) -> str:
    if not specs:
        return "unknown input: the definition takes no inputs"
    return f"unknown input: the definition takes {', '.join(sorted(specs))}"


def validate_inputs(specs: Mapping[str, InputSpec], given: Mapping[str, Any]) -> JSON:
    """The run's inputs: `given` checked against `specs`, normalised, defaults filled in.

    Raises InvalidArgument listing every violation, one per input, field "inputs.<name>",
    in name order.
    """
    violations: dict[str, str] = {}
    out: JSON = {}
    for name, value in given.items():
        spec = specs.get(name)
        if spec is None:
            violations[name] = _unknown(specs)
            continue
        normal, problem = coerce(spec.type, value)
        if problem is not None:
            violations[name] = problem
        else:
            out[name] = normal
    for name, spec in specs.items():
        if name in given:
            continue
        if spec.required:
            violations[name] = "required input is missing"
        elif spec.has_default:
            out[name] = copy.deepcopy(spec.default)
    if violations:
        raise InvalidArgument.for_fields(
            FieldViolation(f"inputs.{name}", violations[name]) for name in sorted(violations)
        )
    return {name: out[name] for name in sorted(out)}
