"""Rows <-> domain values: the only code that knows how the store encodes a run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from gyoza_grpc.domain.clock import from_us, to_us
from gyoza_grpc.domain.model import (
    JSON,
    Attempt,
    Constraints,
    Event,
    EventDelivery,
    EventType,
    ExecutionSummary,
    RetryPolicy,
    Run,
    RunState,
)


def opt_from_us(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def opt_to_us(t: datetime | None) -> int | None:
    return None if t is None else to_us(t)


_US = timedelta(microseconds=1)


def _opt_us_or_zero(t: datetime | None) -> int:
    return 0 if t is None else to_us(t)


# One encoder for every document: json.dumps with any option builds a new JSONEncoder per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dumps(doc: JSON) -> str:
    """`doc` as compact JSON text, as json.dumps(doc, separators=(",", ":"),
    ensure_ascii=False, allow_nan=False) spells it; most runs' attributes and a new attempt's
    outputs are empty."""
    return _ENCODE(doc) if doc else "{}"


def loads(text: str) -> JSON:
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def run_values(run: Run, request_hash: str | None = None) -> dict[str, Any]:
    """Every column of the runs row for `run` (inserts)."""
    c = run.constraints
    return {
        "id": run.id,
        "request_id": run.request_id or None,
        "request_hash": request_hash,
        "state": run.state.value,
        "priority": run.priority,
        "image": run.image,
        "inputs": dumps(run.inputs),
        "cpu": c.cpu,
        "ram_mb": c.ram_mb,
        "vram_mb": c.vram_mb,
        "gpu_id": c.gpu_id,
        "max_attempts": run.retry_policy.max_attempts,
        "initial_backoff_us": run.retry_policy.initial_backoff // _US,
        "backoff_multiplier": run.retry_policy.backoff_multiplier,
        "max_backoff_us": (
            None if run.retry_policy.max_backoff is None else run.retry_policy.max_backoff // _US
        ),
        "next_attempt_at": _opt_us_or_zero(run.next_attempt_at),
        "uncounted_attempts": run.uncounted_attempts,
        "topic": run.event_delivery.topic or None,
        "topic_attributes": dumps(run.event_delivery.attributes),
        "op_definition": run.op_definition or None,
        "definition_version": run.definition_version or None,
        "current_attempt": run.current_attempt,
        "last_seq": run.last_seq,
        "created_at": to_us(run.created_at),
        "updated_at": to_us(run.updated_at),
    }


def run_changes(run: Run) -> dict[str, Any]:
    """The columns of a runs row that a transition or an update may change."""
    return {
        "state": run.state.value,
        "priority": run.priority,
        "current_attempt": run.current_attempt,
        "last_seq": run.last_seq,
        "updated_at": to_us(run.updated_at),
        "next_attempt_at": _opt_us_or_zero(run.next_attempt_at),
        "uncounted_attempts": run.uncounted_attempts,
    }


def attempt_values(a: Attempt) -> dict[str, Any]:
    s = a.summary
    return {
        "run_id": a.run_id,
        "attempt": a.number,
        "id": a.id,
        "state": a.state.value,
        "progress": a.progress,
        "outputs": dumps(a.outputs),
        "duration_ms": s.duration_ms,
        "worker_id": s.worker_id,
        "error_message": s.error_message,
        "gpu_id": s.gpu_id,
        "created_at": to_us(a.created_at),
        "started_at": opt_to_us(a.started_at),
        "finished_at": opt_to_us(a.finished_at),
    }


def event_values(e: Event) -> dict[str, Any]:
    return {
        "run_id": e.run_id,
        "seq": e.seq,
        "attempt": e.attempt,
        "type": e.type.value,
        "time": to_us(e.time),
        "state": e.state.value,
        "msg": e.msg,
        "progress": e.progress,
        "payload": dumps(e.payload),
    }


def attempt_from_row(row: Mapping[Any, Any]) -> Attempt:
    return Attempt(
        run_id=row["run_id"],
        number=row["attempt"],
        id=row["id"],
        state=RunState(row["state"]),
        created_at=from_us(row["created_at"]),
        progress=row["progress"],
        outputs=loads(row["outputs"]),
        summary=ExecutionSummary(
            duration_ms=row["duration_ms"],
            worker_id=row["worker_id"],
            error_message=row["error_message"],
            gpu_id=row["gpu_id"],
        ),
        started_at=opt_from_us(row["started_at"]),
        finished_at=opt_from_us(row["finished_at"]),
    )


def run_from_rows(run_row: Mapping[Any, Any], attempt_row: Mapping[Any, Any]) -> Run:
    return Run(
        id=run_row["id"],
        state=RunState(run_row["state"]),
        priority=run_row["priority"],
        image=run_row["image"],
        inputs=loads(run_row["inputs"]),
        constraints=Constraints(
            cpu=run_row["cpu"],
            ram_mb=run_row["ram_mb"],
            vram_mb=run_row["vram_mb"],
            gpu_id=run_row["gpu_id"],
        ),
        retry_policy=RetryPolicy(
            max_attempts=run_row["max_attempts"],
            initial_backoff=timedelta(microseconds=run_row["initial_backoff_us"]),
            backoff_multiplier=run_row["backoff_multiplier"],
            max_backoff=(
                None
                if run_row["max_backoff_us"] is None
                else timedelta(microseconds=run_row["max_backoff_us"])
            ),
        ),
        event_delivery=EventDelivery(
            topic=run_row["topic"] or "", attributes=loads(run_row["topic_attributes"])
        ),
        op_definition=run_row["op_definition"] or "",
        definition_version=run_row["definition_version"] or "",
        request_id=run_row["request_id"] or "",
        current_attempt=run_row["current_attempt"],
        last_seq=run_row["last_seq"],
        created_at=from_us(run_row["created_at"]),
        updated_at=from_us(run_row["updated_at"]),
        attempt=attempt_from_row(attempt_row),
        next_attempt_at=from_us(run_row["next_attempt_at"]) if run_row["next_attempt_at"] else None,
        uncounted_attempts=run_row["uncounted_attempts"],
    )


def event_from_row(row: Mapping[Any, Any]) -> Event:
    return Event(
        run_id=row["run_id"],
        seq=row["seq"],
        attempt=row["attempt"],
        type=EventType(row["type"]),
        time=from_us(row["time"]),
        state=RunState(row["state"]),
        msg=row["msg"],
        progress=row["progress"],
        payload=loads(row["payload"]),
    )
