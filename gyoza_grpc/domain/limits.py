"""The server's limits, in one place: what a client may send and hold, each refused with a
precise status rather than a crash or a slow death.

| limit | default | refused with |
| --- | --- | --- |
| `max_message_bytes` | 4 MiB | RESOURCE_EXHAUSTED from grpc itself (a request larger than this) |
| `max_json_bytes` | 1 MiB | INVALID_ARGUMENT naming the field (`inputs`, `outputs`, ...) |
| `max_payload_bytes` | 64 KiB | INVALID_ARGUMENT naming `payload` |
| `max_events_per_run` | 10,000 | RESOURCE_EXHAUSTED (reason EVENT_LIMIT_REACHED) |
| `max_watch_streams` | 10,000 | RESOURCE_EXHAUSTED (reason TOO_MANY_WATCHERS) |
| `max_response_bytes` | 4 MiB - 256 KiB | not refused: fewer runs claimed, a page ends early |

JSON sizes are those of the canonical encoding (compact separators, UTF-8), checked where
the document is read from the request (api/convert.py: encoded only when its wire size,
times six, could exceed the cap); only a COMPLETED payload is measured again, its outputs and
the rest each against their cap.

The event cap leaves a run able to finish: once a run holds `max_events_per_run` events,
only the events that move it through its lifecycle (ASSIGNED, STARTED, COMPLETED, FAILED,
CANCELLED, and the automatic retry that follows a FAILED) are accepted; INFO, PROGRESS,
ERROR and manual retries (AddEvent RETRIED, RetryRun, UpdateRun to PENDING) are refused.
Each lifecycle event happens at most once per attempt and attempts past the cap only come
from the retry policy or from evictions, so a run overshoots the cap by a bounded amount.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gyoza_grpc.domain.errors import InvalidArgument, ResourceExhausted
from gyoza_grpc.domain.model import EventType, Run

MIB = 1024 * 1024
KIB = 1024

# Events refused once a run is at its cap: the ones a client can add without limit.
CAPPED_EVENT_TYPES = frozenset(
    {EventType.INFO, EventType.PROGRESS, EventType.ERROR, EventType.RETRIED}
)


# Nesting of objects and arrays in a JSON document (inputs, outputs, payloads, attributes).
# Not a setting: protobuf decodes at most 100 nested messages, a JSON level is two of them
# (Struct and Value), and a run's inputs sit three deep inside a ListRunsResponse.
MAX_JSON_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Limits:
    # Largest request the server accepts (grpc.max_receive_message_length).
    max_message_bytes: int = 4 * MIB
    # Largest JSON document for a run's inputs, its outputs, and a topic's attributes.
    max_json_bytes: int = 1 * MIB
    # Largest event payload (a COMPLETED event's `outputs` counts against max_json_bytes).
    max_payload_bytes: int = 64 * KIB
    # Events a run may hold before it accepts only lifecycle events (see the module doc).
    max_events_per_run: int = 10_000
    # WatchEvents, WatchTopic and WatchRuns streams open at once on one server process.
    max_watch_streams: int = 10_000
    # Largest answer built of many items (a claim's runs, a list page): under the 4 MiB that
    # grpcio and grpc-js receive by default, with room to spare (api/response_budget.py).
    max_response_bytes: int = 4 * MIB - 256 * KIB

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


DEFAULT_LIMITS = Limits()


def json_size(doc: Any) -> int:
    """Bytes of the canonical JSON encoding of `doc`."""
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def check_json_size(doc: Any, field: str, max_bytes: int) -> None:
    """INVALID_ARGUMENT naming `field` and the cap when `doc` encodes to more than `max_bytes`."""
    size = json_size(doc)
    if size > max_bytes:
        raise InvalidArgument.field(
            field, f"is {size} bytes of JSON; at most {max_bytes} bytes are allowed"
        )


def check_payload(payload: dict[str, Any], event_type: EventType, limits: Limits) -> None:
    """An event payload within its cap; a COMPLETED event's outputs within the outputs cap."""
    if event_type is EventType.COMPLETED and "outputs" in payload:
        check_json_size(payload["outputs"], "payload.outputs", limits.max_json_bytes)
        rest = {k: v for k, v in payload.items() if k != "outputs"}
        check_json_size(rest, "payload", limits.max_payload_bytes)
    else:
        check_json_size(payload, "payload", limits.max_payload_bytes)


def check_event_cap(run: Run, event_type: EventType, max_events: int | None) -> None:
    """RESOURCE_EXHAUSTED when `run` is at its event cap and `event_type` is one it refuses."""
    if max_events is None or event_type not in CAPPED_EVENT_TYPES:
        return
    held = run.last_seq + 1
    if held >= max_events:
        raise ResourceExhausted(
            f"run '{run.id}' holds {held} events, the most a run may hold is {max_events}: "
            f"no more {event_type} events; it can still be started, completed, failed or "
            "cancelled",
            reason="EVENT_LIMIT_REACHED",
            metadata={"run_id": run.id, "max_events_per_run": str(max_events)},
        )
