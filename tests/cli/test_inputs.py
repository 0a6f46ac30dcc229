"""What `--input` and the JSON files turn into, before anything is sent (no process, no server)."""

from __future__ import annotations

import pytest

from gyoza_grpc.client_cli.failures import UsageError
from gyoza_grpc.client_cli.inputs import parse_pairs, parse_value, timestamp, to_struct


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ('"7"', "7"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("hello", "hello"),
        ("", ""),
        ("NaN", "NaN"),  # not JSON: the text itself, never a NaN the server would refuse
        ("Infinity", "Infinity"),
        ("{oops", "{oops"),
    ],
)
def test_a_value_is_json_when_it_parses_else_text(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_pairs_split_at_the_first_equals_and_later_keys_win() -> None:
    assert parse_pairs(["a=1", "b=x=y", "a=2"], "--input") == {"a": 2, "b": "x=y"}
    for bad in ("novalue", "=1"):
        with pytest.raises(UsageError, match="--input expects KEY=VALUE"):
            parse_pairs([bad], "--input")


def test_numbers_a_struct_cannot_carry_exactly_are_refused() -> None:
    assert to_struct({"n": 2**53, "x": [1.5]}, "inputs")["n"] == 2**53
    with pytest.raises(UsageError, match=r"inputs\.deep\[0\]: .* too large"):
        to_struct({"deep": [2**53 + 1]}, "inputs")
    with pytest.raises(UsageError, match="not a finite number"):
        to_struct({"big": parse_value("1e400")}, "inputs")


def test_times_are_rfc_3339() -> None:
    assert timestamp("2026-01-31T12:00:00Z", "--since").seconds == 1_769_860_800
    with pytest.raises(UsageError, match="--since expects an RFC 3339 time"):
        timestamp("yesterday", "--since")
