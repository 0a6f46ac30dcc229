"""Pure tests of op definitions: semantic-version order (and its byte key, which the store
sorts by), the name rule, definition validation, fingerprints, and the RunSpec of a run made
from a definition."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gyoza_grpc.domain import definitions as defs
from gyoza_grpc.domain.definitions import Definition, Version
from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.inputs import InputSpec, InputType
from gyoza_grpc.domain.model import (
    DEFAULT_PRIORITY,
    Constraints,
    EventDelivery,
    RetryPolicy,
)

NOW = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)

# -- semantic versions ------------------------------------------------------------------------

# Ascending precedence; semver.org's own examples (spec items 11 and 11.4) included.
ASCENDING = [
    "0.0.0",
    "0.0.1",
    "0.1.0",
    "0.9.0",
    "0.10.0",
    "1.0.0-0",
    "1.0.0-0.0",
    "1.0.0-1",
    "1.0.0-2",
    "1.0.0-10",
    "1.0.0-A",
    "1.0.0-Z",
    "1.0.0-a",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-alpha0",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.9.0",
    "1.10.0",
    "1.10.1",
    "1.11.0",
    "2.0.0",
    "2.1.0",
    "2.1.1",
    "9.0.0",
    "10.0.0",
    "100.0.0",
    "12345678901234567890.0.0",
]


def test_ascending_examples_sort_in_semver_order() -> None:
    parsed = [Version.parse(v) for v in ASCENDING]
    for a, b in itertools.pairwise(parsed):
        assert a < b, (a.text, b.text)
        assert a.key < b.key, (a.text, b.text)
    shuffled = ASCENDING[:]
    random.Random(5).shuffle(shuffled)
    assert [v.text for v in sorted(Version.parse(v) for v in shuffled)] == ASCENDING
    assert max(["1.9.0", "1.10.0", "1.2.0", "1.10.0-rc.1"], key=Version.parse) == "1.10.0"


def test_ten_sorts_above_nine() -> None:
    assert Version.parse("1.10.0") > Version.parse("1.9.0")
    assert Version.parse("1.0.10") > Version.parse("1.0.9")
    assert Version.parse("10.0.0") > Version.parse("9.99.99")
    assert Version.parse("1.0.0-rc.10") > Version.parse("1.0.0-rc.9")
    assert Version.parse("1.0.0-rc.1") < Version.parse("1.0.0")


def test_build_metadata_only_breaks_ties() -> None:
    a, b, rel = Version.parse("1.0.0+a"), Version.parse("1.0.0+b"), Version.parse("1.0.0")
    assert rel < a < b < Version.parse("1.0.1")
    assert Version.parse("1.0.0-rc.1+zzz") < rel
    assert a != b
    assert Version.parse("1.0.0+a") == a
    assert (a.major, a.minor, a.patch, a.prerelease, a.build) == (1, 0, 0, (), "a")
    pre = Version.parse("2.1.0-rc.1+exp.sha.5114f85")
    assert (pre.prerelease, pre.build) == (("rc", "1"), "exp.sha.5114f85")


@pytest.mark.parametrize(
    "text",
    [
        "1.0.0",
        "0.0.0",
        "1.0.0-alpha",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--",
        "1.0.0-0A.is.legal",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1.0.0+21AF26D3----117B344092BD",
    ],
)
def test_valid_versions(text: str) -> None:
    assert Version.parse(text).text == text
    assert defs.version_problem(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.0",
        "1.0.0.0",
        "v1.0.0",
        "01.0.0",
        "1.01.0",
        "1.0.01",
        "1.0.0-01",
        "1.0.0-",
        "1.0.0+",
        "1.0.0-a..b",
        "1.0.0-a_b",
        " 1.0.0",
        "1.0.0 ",
        "1.0.0\n",
        "\uff11.0.0",  # a full-width digit
        "1.0.0-ß",
        "-1.0.0",
        "latest",
        "1." + "0" * 200 + ".0",
    ],
)
def test_invalid_versions(text: str) -> None:
    with pytest.raises(ValueError, match="must be a semantic version"):
        Version.parse(text)
    with pytest.raises(InvalidArgument) as caught:
        defs.check_version(text or "x", "version")
    assert caught.value.violations[0].field == "version"


def _reference_cmp(a: str, b: str) -> int:
    """semver.org's precedence rules, written independently of Version.key."""

    def split(v: str) -> tuple[list[int], list[str]]:
        v = v.split("+", 1)[0]
        core, _, pre = v.partition("-")
        return [int(x) for x in core.split(".")], pre.split(".") if pre else []

    (ca, pa), (cb, pb) = split(a), split(b)
    if ca != cb:
        return -1 if ca < cb else 1
    if not pa or not pb:
        return (not pa) - (not pb) if pa != pb else 0
    for x, y in zip(pa, pb, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


_numbers = st.integers(min_value=0, max_value=10**12).map(str)
_ident = st.one_of(
    _numbers,
    st.from_regex(r"[0-9A-Za-z-]{0,6}[A-Za-z-][0-9A-Za-z-]{0,6}", fullmatch=True),
)
_semver = st.builds(
    lambda core, pre: ".".join(core) + ("-" + ".".join(pre) if pre else ""),
    st.lists(
        st.sampled_from(["0", "1", "2", "9", "10", "11", "100"]) | _numbers, min_size=3, max_size=3
    ),
    st.lists(_ident, max_size=4),
)


# No deadline: each example parses up to 144 pairs, slow on a loaded CI machine.
@settings(deadline=None, max_examples=200)
@given(st.lists(_semver, min_size=2, max_size=12))
def test_key_order_matches_the_semver_rules(texts: list[str]) -> None:
    by_key = [v.text for v in sorted(Version.parse(t) for t in texts)]
    by_rules = sorted(texts, key=functools.cmp_to_key(_reference_cmp))
    assert by_key == by_rules
    for a in texts:
        for b in texts:
            ref = _reference_cmp(a, b)
            ka, kb = Version.parse(a).key, Version.parse(b).key
            assert (ka > kb) - (ka < kb) == ref, (a, b)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["op", "my-op_2", "0", "a" * 128, "-", "_x", "sdxl-turbo"])
def test_valid_names(name: str) -> None:
    assert defs.name_problem(name) is None
    assert defs.check_name(name) == name


@pytest.mark.parametrize(
    "name", ["Op", "my op", "a.b", "a/b", "é", "a" * 129, "op\n", "\uff4fp", "a:b", "UPPER"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        defs.check_name(name, "definition.name")
    assert caught.value.violations == (
        FieldViolation(
            "definition.name",
            f"must be 1 to 128 lower-case letters, digits, '-' or '_', got {name!r}",
        ),
    )


def test_empty_name() -> None:
    assert defs.name_problem("") == "must not be empty"


# -- definitions ------------------------------------------------------------------------------

FULL = Definition(
    name="sdxl",
    version="1.2.0",
    image="ghcr.io/acme/sdxl:1.2",
    description="text to image",
    input_specs={
        "prompt": InputSpec(InputType.STRING, required=True),
        "steps": InputSpec(InputType.INT, has_default=True, default=30.0),
        "scale": InputSpec(InputType.FLOAT, has_default=True, default=7),
    },
    output_specs={"image_url": InputSpec(InputType.STRING)},
    constraints=Constraints(cpu=2, ram_mb=4096, vram_mb=8000),
    retry_policy=RetryPolicy(max_attempts=3),
    event_delivery=EventDelivery(topic="images", attributes={"team": "ml"}),
)


def test_new_definition_normalises_defaults_and_stamps_created_at() -> None:
    d = defs.new_definition(FULL, NOW)
    assert d.created_at == NOW
    assert d.input_specs["steps"].default == 30 and isinstance(d.input_specs["steps"].default, int)
    assert d.input_specs["scale"].default == 7.0
    assert isinstance(d.input_specs["scale"].default, float)
    assert d.semver == Version.parse("1.2.0")


def test_definition_violations_lists_every_problem() -> None:
    bad = dataclasses.replace(
        FULL,
        name="SDXL",
        version="1.2",
        image="",
        constraints=Constraints(cpu=-1),
        retry_policy=RetryPolicy(max_attempts=0),
        input_specs={
            "n": InputSpec(InputType.INT, has_default=True, default="x"),
            "r": InputSpec(InputType.BOOL, required=True, has_default=True, default=True),
        },
        output_specs={"bad name": InputSpec(InputType.STRING)},
    )
    with pytest.raises(InvalidArgument) as caught:
        defs.new_definition(bad, NOW)
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        "definition.name",
        "definition.version",
        "definition.image",
        "definition.constraints.cpu",
        "definition.retry_policy.max_attempts",
        "definition.input_specs.n.default",
        "definition.input_specs.r.default",
        "definition.output_specs.bad name",
    ]
    by_field = {v.field: v.description for v in caught.value.violations}
    assert by_field["definition.image"] == "must not be empty"
    assert by_field["definition.input_specs.n.default"] == "must be an int, got a string"


def test_empty_version_is_refused_for_a_definition() -> None:
    with pytest.raises(InvalidArgument) as caught:
        defs.new_definition(dataclasses.replace(FULL, version=""), NOW)
    assert caught.value.violations == (FieldViolation("definition.version", "must not be empty"),)


def test_fingerprint_covers_the_body_not_the_creation_time() -> None:
    a = defs.new_definition(FULL, NOW)
    b = defs.new_definition(FULL, NOW + timedelta(days=1))
    assert defs.definition_fingerprint(a) == defs.definition_fingerprint(b)
    changes: list[dict[str, object]] = [
        {"image": "other"},
        {"description": "other"},
        {"version": "1.2.1"},
        {"input_specs": {**FULL.input_specs, "seed": InputSpec(InputType.INT)}},
        {"input_specs": {**FULL.input_specs, "steps": InputSpec(InputType.INT)}},
        {"output_specs": {}},
        {"constraints": Constraints(cpu=2, ram_mb=4096, vram_mb=8000, gpu_id=0)},
        {"retry_policy": RetryPolicy(max_attempts=4)},
        {"retry_policy": RetryPolicy(max_attempts=3, initial_backoff=timedelta(seconds=1))},
        {"event_delivery": EventDelivery(topic="images", attributes={})},
    ]
    seen = {defs.definition_fingerprint(a)}
    for change in changes:
        other = defs.new_definition(dataclasses.replace(FULL, **change), NOW)  # type: ignore[arg-type]
        fp = defs.definition_fingerprint(other)
        assert fp not in seen, change
        seen.add(fp)


def test_run_spec_inherits_the_definition() -> None:
    d = defs.new_definition(FULL, NOW)
    spec = defs.run_spec_for(d, {"prompt": "a cat"})
    assert spec.image == FULL.image
    assert spec.constraints == FULL.constraints
    assert spec.retry_policy == FULL.retry_policy
    assert spec.event_delivery == FULL.event_delivery
    assert (spec.op_definition, spec.definition_version) == ("sdxl", "1.2.0")
    assert spec.priority == DEFAULT_PRIORITY
    assert spec.inputs == {"prompt": "a cat", "scale": 7.0, "steps": 30}
    assert spec.request_id == ""


def test_run_spec_request_fields_override() -> None:
    d = defs.new_definition(FULL, NOW)
    spec = defs.run_spec_for(d, {"prompt": "x", "steps": 5.0}, priority=9, request_id="r-1")
    assert (spec.priority, spec.request_id, spec.inputs["steps"]) == (9, "r-1", 5)
    assert defs.run_spec_for(d, {"prompt": "x"}, priority=0).priority == 0


def test_run_spec_refuses_bad_inputs_listing_each() -> None:
    d = defs.new_definition(FULL, NOW)
    with pytest.raises(InvalidArgument) as caught:
        defs.run_spec_for(d, {"steps": 1.5, "extra": True})
    assert [v.field for v in caught.value.violations] == [
        "inputs.extra",
        "inputs.prompt",
        "inputs.steps",
    ]


def test_request_fingerprint() -> None:
    base = defs.request_fingerprint("op", "", {"x": 1.0}, None)
    assert base == defs.request_fingerprint("op", "", {"x": 1.0}, None)
    others = {
        defs.request_fingerprint("op2", "", {"x": 1.0}, None),
        defs.request_fingerprint("op", "1.0.0", {"x": 1.0}, None),
        defs.request_fingerprint("op", "", {"x": 2.0}, None),
        defs.request_fingerprint("op", "", {"x": 1.0}, 5),
    }
    assert base not in others and len(others) == 4


def test_not_found_messages() -> None:
    err = defs.definition_not_found("op")
    assert (err.code, err.message, err.reason) == (
        "NOT_FOUND",
        "definition 'op' not found",
        "DEFINITION_NOT_FOUND",
    )
    assert defs.definition_not_found("op", "1.0.0").message == (
        "definition 'op' version '1.0.0' not found"
    )
