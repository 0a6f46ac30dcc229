"""Making a new run: validating what a client asked for, and the run's first attempt."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta

from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.ids import uuid7_pair
from gyoza_grpc.domain.model import Attempt, Run, RunSpec, RunState

MAX_IMAGE_LEN = 1024
MAX_REQUEST_ID_LEN = 256
MAX_TOPIC_LEN = 256
_NO_TIME = timedelta(0)


def spec_violations(spec: RunSpec) -> list[FieldViolation]:
    """Every problem with `spec`, so a client learns all of them from one call."""
    out: list[FieldViolation] = []
    if not spec.image.strip():
        out.append(FieldViolation("image", "must not be empty"))
    elif len(spec.image) > MAX_IMAGE_LEN:
        out.append(FieldViolation("image", f"must be at most {MAX_IMAGE_LEN} characters"))
    for name in ("cpu", "ram_mb", "vram_mb", "gpu_id"):
        value = getattr(spec.constraints, name)
        if value is not None and value < 0:
            out.append(FieldViolation(f"constraints.{name}", f"must be >= 0, got {value}"))
    rp = spec.retry_policy
    if rp.initial_backoff < _NO_TIME:
        out.append(FieldViolation("retry_policy.initial_backoff", "must not be negative"))
    if not (1.0 <= rp.backoff_multiplier <= 1000.0):
        out.append(
            FieldViolation(
                "retry_policy.backoff_multiplier", "must be between 1 and 1000 (0 means 1)"
            )
        )
    if rp.max_backoff is not None and rp.max_backoff < _NO_TIME:
        out.append(FieldViolation("retry_policy.max_backoff", "must not be negative"))
    if spec.retry_policy.max_attempts < 1:
        out.append(
            FieldViolation(
                "retry_policy.max_attempts",
                f"must be >= 1 (0 means 1), got {spec.retry_policy.max_attempts}",
            )
        )
    if len(spec.event_delivery.topic) > MAX_TOPIC_LEN:
        out.append(
            FieldViolation("event_delivery.topic", f"must be at most {MAX_TOPIC_LEN} characters")
        )
    if len(spec.request_id) > MAX_REQUEST_ID_LEN:
        out.append(FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID_LEN} characters"))
    return out


def new_run(spec: RunSpec, now: datetime, run_id: str | None = None) -> Run:
    """A PENDING run with its first attempt; raises InvalidArgument listing every violation."""
    violations = spec_violations(spec)
    if violations:
        raise InvalidArgument.for_fields(violations)
    new_id, attempt_id = uuid7_pair(now)
    rid = run_id or new_id
    attempt = Attempt(run_id=rid, number=1, id=attempt_id, state=RunState.PENDING, created_at=now)
    return Run(
        id=rid,
        state=RunState.PENDING,
        priority=spec.priority,
        image=spec.image,
        inputs=spec.inputs,
        constraints=spec.constraints,
        retry_policy=spec.retry_policy,
        event_delivery=spec.event_delivery,
        op_definition=spec.op_definition,
        definition_version=spec.definition_version,
        request_id=spec.request_id,
        current_attempt=1,
        last_seq=-1,
        created_at=now,
        updated_at=now,
        attempt=attempt,
    )


def spec_fingerprint(spec: RunSpec) -> str:
    """A digest of everything in `spec` but its request_id: two creates with one request_id
    are the same request exactly when their fingerprints match."""
    body = dataclasses.asdict(dataclasses.replace(spec, request_id=""))
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_encode
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(value: object) -> object:
    if isinstance(value, timedelta):
        return value // timedelta(microseconds=1)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")
