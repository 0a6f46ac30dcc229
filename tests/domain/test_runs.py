"""Pure tests of making a run: spec validation, the first attempt, and spec fingerprints."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from gyoza_grpc.domain import runs
from gyoza_grpc.domain.errors import InvalidArgument
from gyoza_grpc.domain.model import (
    DEFAULT_PRIORITY,
    Constraints,
    EventDelivery,
    ExecutionSummary,
    RetryPolicy,
    RunSpec,
    RunState,
)

NOW = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)

FULL_SPEC = RunSpec(
    image="ghcr.io/acme/job:1.2",
    priority=3,
    inputs={"x": 1.0, "nested": {"l": [1.0, "a", None, True]}},
    constraints=Constraints(cpu=2, ram_mb=512, vram_mb=0, gpu_id=1),
    retry_policy=RetryPolicy(max_attempts=3),
    event_delivery=EventDelivery(topic="jobs", attributes={"team": "ml"}),
    op_definition="",
    request_id="req-1",
)


def spec(**changes: Any) -> RunSpec:
    return dataclasses.replace(FULL_SPEC, **changes)


# -- new_run ----------------------------------------------------------------------------------


def test_new_run_is_pending_on_attempt_one() -> None:
    run = runs.new_run(FULL_SPEC, NOW, run_id="run-1")
    assert (run.id, run.state, run.current_attempt, run.last_seq) == (
        "run-1",
        RunState.PENDING,
        1,
        -1,
    )
    assert (run.created_at, run.updated_at) == (NOW, NOW)
    assert (run.image, run.priority, run.inputs) == (FULL_SPEC.image, 3, FULL_SPEC.inputs)
    assert run.constraints == FULL_SPEC.constraints
    assert run.retry_policy == FULL_SPEC.retry_policy
    assert run.event_delivery == FULL_SPEC.event_delivery
    assert (run.op_definition, run.request_id) == ("", "req-1")
    assert not run.is_terminal
    att = run.attempt
    assert (att.run_id, att.number, att.state, att.created_at) == (
        "run-1",
        1,
        RunState.PENDING,
        NOW,
    )
    assert (att.progress, att.outputs, att.summary) == (0, {}, ExecutionSummary())
    assert (att.started_at, att.finished_at) == (None, None)
    assert att.id


def test_new_run_minimal_spec_gets_defaults() -> None:
    run = runs.new_run(RunSpec(image="alpine"), NOW)
    assert run.priority == DEFAULT_PRIORITY
    assert run.retry_policy.max_attempts == 1
    assert run.constraints == Constraints()
    assert (run.inputs, run.op_definition, run.request_id) == ({}, "", "")


@pytest.mark.parametrize("run_id", [None, ""])
def test_new_run_generates_unique_ids(run_id: str | None) -> None:
    a = runs.new_run(FULL_SPEC, NOW, run_id=run_id)
    b = runs.new_run(FULL_SPEC, NOW, run_id=run_id)
    assert a.id and b.id and a.id != b.id
    assert a.attempt.id != b.attempt.id
    assert a.attempt.id != a.id
    assert a.attempt.run_id == a.id


def test_new_run_does_not_mutate_the_spec() -> None:
    original = copy.deepcopy(FULL_SPEC)
    runs.new_run(FULL_SPEC, NOW)
    assert original == FULL_SPEC
    with pytest.raises(dataclasses.FrozenInstanceError):
        FULL_SPEC.image = "x"  # type: ignore[misc]


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good",
    [
        spec(image="a"),
        spec(image="x" * runs.MAX_IMAGE_LEN),
        spec(constraints=Constraints(cpu=0, ram_mb=0, vram_mb=0, gpu_id=0)),
        spec(constraints=Constraints()),
        spec(retry_policy=RetryPolicy(max_attempts=1)),
        spec(retry_policy=RetryPolicy(max_attempts=100)),
        spec(event_delivery=EventDelivery(topic="t" * runs.MAX_TOPIC_LEN)),
        spec(request_id="r" * runs.MAX_REQUEST_ID_LEN),
        spec(request_id=""),
        spec(priority=-5),
    ],
)
def test_valid_specs(good: RunSpec) -> None:
    assert runs.spec_violations(good) == []
    assert runs.new_run(good, NOW).state is RunState.PENDING


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (spec(image=""), "image"),
        (spec(image="   "), "image"),
        (spec(image="\t\n"), "image"),
        (spec(image="x" * (runs.MAX_IMAGE_LEN + 1)), "image"),
        (spec(constraints=Constraints(cpu=-1)), "constraints.cpu"),
        (spec(constraints=Constraints(ram_mb=-1)), "constraints.ram_mb"),
        (spec(constraints=Constraints(vram_mb=-(2**31))), "constraints.vram_mb"),
        (spec(constraints=Constraints(gpu_id=-1)), "constraints.gpu_id"),
        (spec(retry_policy=RetryPolicy(max_attempts=0)), "retry_policy.max_attempts"),
        (spec(retry_policy=RetryPolicy(max_attempts=-3)), "retry_policy.max_attempts"),
        (
            spec(event_delivery=EventDelivery(topic="t" * (runs.MAX_TOPIC_LEN + 1))),
            "event_delivery.topic",
        ),
        (spec(request_id="r" * (runs.MAX_REQUEST_ID_LEN + 1)), "request_id"),
    ],
)
def test_each_violation_names_its_field(bad: RunSpec, field: str) -> None:
    assert [v.field for v in runs.spec_violations(bad)] == [field]
    with pytest.raises(InvalidArgument) as excinfo:
        runs.new_run(bad, NOW)
    err = excinfo.value
    assert err.code == "INVALID_ARGUMENT"
    assert [v.field for v in err.violations] == [field]
    assert err.message.startswith(f"{field}: ")


def test_all_violations_are_reported_together() -> None:
    bad = RunSpec(
        image="",
        constraints=Constraints(cpu=-1, ram_mb=-2, vram_mb=-3, gpu_id=-4),
        retry_policy=RetryPolicy(max_attempts=0),
        event_delivery=EventDelivery(topic="t" * 300),
        request_id="r" * 300,
    )
    fields = [
        "image",
        "constraints.cpu",
        "constraints.ram_mb",
        "constraints.vram_mb",
        "constraints.gpu_id",
        "retry_policy.max_attempts",
        "event_delivery.topic",
        "request_id",
    ]
    assert [v.field for v in runs.spec_violations(bad)] == fields
    with pytest.raises(InvalidArgument) as excinfo:
        runs.new_run(bad, NOW)
    assert [v.field for v in excinfo.value.violations] == fields
    for field in fields:
        assert f"{field}: " in excinfo.value.message
    assert "got -4" in excinfo.value.message
    assert "got 0" in excinfo.value.message


# -- spec_fingerprint -------------------------------------------------------------------------


def test_fingerprint_is_a_sha256_hex_digest() -> None:
    fp = runs.spec_fingerprint(FULL_SPEC)
    assert len(fp) == 64
    assert int(fp, 16) >= 0


@pytest.mark.parametrize(
    "same",
    [
        copy.deepcopy(FULL_SPEC),
        spec(request_id="another-request"),
        spec(request_id=""),
        spec(inputs={"nested": {"l": [1.0, "a", None, True]}, "x": 1.0}),  # key order
        spec(event_delivery=EventDelivery(topic="jobs", attributes={"team": "ml"})),
    ],
)
def test_fingerprint_equal_for_equal_specs(same: RunSpec) -> None:
    assert runs.spec_fingerprint(same) == runs.spec_fingerprint(FULL_SPEC)


@pytest.mark.parametrize(
    "changes",
    [
        {"image": "ghcr.io/acme/job:1.3"},
        {"priority": 4},
        {"inputs": {"x": 2.0, "nested": {"l": [1.0, "a", None, True]}}},
        {"inputs": {"x": 1.0, "nested": {"l": ["a", 1.0, None, True]}}},  # list order counts
        {"inputs": {}},
        {"constraints": Constraints(cpu=2, ram_mb=512, vram_mb=0, gpu_id=None)},
        {"constraints": Constraints(cpu=2, ram_mb=512, vram_mb=None, gpu_id=1)},  # 0 vs unset
        {"retry_policy": RetryPolicy(max_attempts=2)},
        {"event_delivery": EventDelivery(topic="other", attributes={"team": "ml"})},
        {"event_delivery": EventDelivery(topic="jobs", attributes={})},
        {"op_definition": "op-1"},
    ],
)
def test_fingerprint_differs_for_different_specs(changes: dict[str, Any]) -> None:
    assert runs.spec_fingerprint(spec(**changes)) != runs.spec_fingerprint(FULL_SPEC)


def test_fingerprint_is_stable_and_pure() -> None:
    original = copy.deepcopy(FULL_SPEC)
    assert runs.spec_fingerprint(FULL_SPEC) == runs.spec_fingerprint(FULL_SPEC)
    assert original == FULL_SPEC
