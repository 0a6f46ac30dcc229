"""Pure tests of input validation: every type, required inputs, defaults, unknown inputs, and
every violation reported at once, one per input."""

from __future__ import annotations

from typing import Any

import pytest

from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.inputs import (
    MAX_SAFE_INT,
    InputSpec,
    InputType,
    coerce,
    input_spec_violations,
    normalise_specs,
    validate_inputs,
)

T = InputType

# (type, given value, the value the run gets)
ACCEPTED: list[tuple[InputType, Any, Any]] = [
    (T.STRING, "hello", "hello"),
    (T.STRING, "", ""),
    (T.INT, 3.0, 3),  # Struct carries every number as a double
    (T.INT, 3, 3),
    (T.INT, -7.0, -7),
    (T.INT, 0.0, 0),
    (T.INT, float(MAX_SAFE_INT), MAX_SAFE_INT),
    (T.INT, -float(MAX_SAFE_INT), -MAX_SAFE_INT),
    (T.FLOAT, 2.5, 2.5),
    (T.FLOAT, 2.0, 2.0),
    (T.FLOAT, 2, 2.0),
    (T.FLOAT, -0.0, -0.0),
    (T.BOOL, True, True),
    (T.BOOL, False, False),
    (T.LIST, [], []),
    (T.LIST, [1.0, "a", None, {"k": [True]}], [1.0, "a", None, {"k": [True]}]),
    (T.OBJECT, {}, {}),
    (T.OBJECT, {"a": {"b": [1.0]}}, {"a": {"b": [1.0]}}),
]

# (type, given value, the violation's description)
REJECTED: list[tuple[InputType, Any, str]] = [
    (T.STRING, 3.0, "must be a string, got a number"),
    (T.STRING, None, "must be a string, got null"),
    (T.STRING, True, "must be a string, got a bool"),
    (T.STRING, ["a"], "must be a string, got a list"),
    (T.STRING, {"a": "b"}, "must be a string, got an object"),
    (T.INT, 3.5, "must be an int, got 3.5 (not a whole number)"),
    (T.INT, -0.25, "must be an int, got -0.25 (not a whole number)"),
    (T.INT, True, "must be an int, got a bool"),
    (T.INT, False, "must be an int, got a bool"),
    (T.INT, "3", "must be an int, got a string"),
    (T.INT, None, "must be an int, got null"),
    (T.INT, [3], "must be an int, got a list"),
    (
        T.INT,
        2.0**53 + 2,
        "must be an int between -2^53 and 2^53 (a Struct number is a double), "
        "got 9007199254740994.0",
    ),
    (
        T.INT,
        1e20,
        "must be an int between -2^53 and 2^53 (a Struct number is a double), got 1e+20",
    ),
    (T.FLOAT, True, "must be a float, got a bool"),
    (T.FLOAT, "1.5", "must be a float, got a string"),
    (T.FLOAT, None, "must be a float, got null"),
    (T.FLOAT, float("inf"), "must be a float, got inf (not finite)"),
    (T.BOOL, 1.0, "must be a bool, got a number"),
    (T.BOOL, 0, "must be a bool, got a number"),
    (T.BOOL, "true", "must be a bool, got a string"),
    (T.BOOL, None, "must be a bool, got null"),
    (T.LIST, {}, "must be a list, got an object"),
    (T.LIST, "abc", "must be a list, got a string"),
    (T.LIST, None, "must be a list, got null"),
    (T.OBJECT, [], "must be an object, got a list"),
    (T.OBJECT, "{}", "must be an object, got a string"),
    (T.OBJECT, 1.0, "must be an object, got a number"),
]


@pytest.mark.parametrize(("kind", "given", "expected"), ACCEPTED)
def test_accepted_values_are_normalised(kind: InputType, given: Any, expected: Any) -> None:
    value, problem = coerce(kind, given)
    assert problem is None
    assert value == expected
    assert type(value) is type(expected)
    out = validate_inputs({"x": InputSpec(kind)}, {"x": given})
    assert out == {"x": expected}
    assert type(out["x"]) is type(expected)


@pytest.mark.parametrize(("kind", "given", "description"), REJECTED)
def test_rejected_values_name_the_type(kind: InputType, given: Any, description: str) -> None:
    assert coerce(kind, given) == (None, description)
    with pytest.raises(InvalidArgument) as caught:
        validate_inputs({"x": InputSpec(kind)}, {"x": given})
    assert caught.value.violations == (FieldViolation("inputs.x", description),)
    assert caught.value.message == f"inputs.x: {description}"


def test_int_given_as_whole_double_is_an_int_not_a_float() -> None:
    out = validate_inputs({"n": InputSpec(T.INT, required=True)}, {"n": 3.0})
    assert out == {"n": 3}
    assert isinstance(out["n"], int)


SPECS = {
    "prompt": InputSpec(T.STRING, required=True),
    "steps": InputSpec(T.INT, has_default=True, default=20),
    "scale": InputSpec(T.FLOAT, has_default=True, default=7.5),
    "seed": InputSpec(T.INT),
    "tags": InputSpec(T.LIST, has_default=True, default=["a"]),
    "opts": InputSpec(T.OBJECT, has_default=True, default={"k": {"v": 1}}),
    "fast": InputSpec(T.BOOL, required=True),
}


def test_defaults_filled_and_optional_inputs_without_default_left_out() -> None:
    out = validate_inputs(SPECS, {"prompt": "cat", "fast": False})
    assert out == {
        "prompt": "cat",
        "fast": False,
        "steps": 20,
        "scale": 7.5,
        "tags": ["a"],
        "opts": {"k": {"v": 1}},
    }
    assert "seed" not in out
    assert list(out) == sorted(out)


def test_given_values_override_defaults() -> None:
    out = validate_inputs(
        SPECS, {"prompt": "cat", "fast": True, "steps": 5.0, "seed": 42.0, "tags": []}
    )
    assert out["steps"] == 5 and out["seed"] == 42 and out["tags"] == []


def test_filled_defaults_are_copies() -> None:
    out = validate_inputs(SPECS, {"prompt": "cat", "fast": True})
    out["tags"].append("mutated")
    out["opts"]["k"]["v"] = 2
    again = validate_inputs(SPECS, {"prompt": "cat", "fast": True})
    assert again["tags"] == ["a"] and again["opts"] == {"k": {"v": 1}}
    assert SPECS["tags"].default == ["a"]


def test_every_violation_is_listed_one_per_input_in_name_order() -> None:
    given = {
        "steps": 2.5,  # not a whole number
        "scale": "high",  # wrong type
        "tags": {"a": 1},  # wrong type
        "zzz": 1.0,  # unknown
        "aaa": "x",  # unknown
    }  # prompt and fast missing
    with pytest.raises(InvalidArgument) as caught:
        validate_inputs(SPECS, given)
    known = "fast, opts, prompt, scale, seed, steps, tags"
    assert caught.value.violations == (
        FieldViolation("inputs.aaa", f"unknown input: the definition takes {known}"),
        FieldViolation("inputs.fast", "required input is missing"),
        FieldViolation("inputs.prompt", "required input is missing"),
        FieldViolation("inputs.scale", "must be a float, got a string"),
        FieldViolation("inputs.steps", "must be an int, got 2.5 (not a whole number)"),
        FieldViolation("inputs.tags", "must be a list, got an object"),
        FieldViolation("inputs.zzz", f"unknown input: the definition takes {known}"),
    )
    assert caught.value.code == "INVALID_ARGUMENT"


def test_unknown_input_of_a_definition_without_inputs() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_inputs({}, {"x": 1.0})
    assert caught.value.violations == (
        FieldViolation("inputs.x", "unknown input: the definition takes no inputs"),
    )
    assert validate_inputs({}, {}) == {}


def test_required_input_given_as_null_is_a_type_error_not_missing() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_inputs({"p": InputSpec(T.STRING, required=True)}, {"p": None})
    assert caught.value.violations == (FieldViolation("inputs.p", "must be a string, got null"),)


def test_validation_does_not_change_its_arguments() -> None:
    given = {"prompt": "cat", "fast": True, "steps": 3.0}
    before = dict(given)
    validate_inputs(SPECS, given)
    assert given == before


# -- the specs themselves ---------------------------------------------------------------------


def test_spec_violations_defaults_and_names() -> None:
    specs = {
        "ok": InputSpec(T.INT, has_default=True, default=3.0),
        "bad_default": InputSpec(T.INT, has_default=True, default=3.5),
        "null_default": InputSpec(T.STRING, has_default=True, default=None),
        "req": InputSpec(T.BOOL, required=True, has_default=True, default=True),
        "has space": InputSpec(T.STRING),
        "": InputSpec(T.STRING),
    }
    assert input_spec_violations(specs, "definition.input_specs") == [
        FieldViolation(
            "definition.input_specs.",
            "name must be 1 to 128 letters, digits, '-' or '_', got ''",
        ),
        FieldViolation(
            "definition.input_specs.bad_default.default",
            "must be an int, got 3.5 (not a whole number)",
        ),
        FieldViolation(
            "definition.input_specs.has space",
            "name must be 1 to 128 letters, digits, '-' or '_', got 'has space'",
        ),
        FieldViolation("definition.input_specs.null_default.default", "must be a string, got null"),
        FieldViolation(
            "definition.input_specs.req.default", "a required input cannot have a default"
        ),
    ]


def test_normalise_specs_puts_defaults_in_normal_form() -> None:
    out = normalise_specs(
        {
            "i": InputSpec(T.INT, has_default=True, default=3.0),
            "f": InputSpec(T.FLOAT, has_default=True, default=2),
            "s": InputSpec(T.STRING),
        }
    )
    assert out["i"] == InputSpec(T.INT, has_default=True, default=3)
    assert isinstance(out["i"].default, int)
    assert isinstance(out["f"].default, float)
    assert out["s"] == InputSpec(T.STRING)
