"""Cross-replica wake-up hints: what one write transaction changed, sent as one NOTIFY.

On PostgreSQL the store collects, per write transaction, the runs and topics that got events,
whether a run became claimable, and the workers whose free capacity changed, and sends them as
one `pg_notify` just before COMMIT (PostgreSQL delivers it only if the transaction commits).
Other replicas read the tables on receipt: a notification is a hint, never the data, so a lost
one only delays (the periodic catch-up in streams/pg_wakeup.py bounds the delay).

A payload is JSON, `{"o": origin, "r": [run ids], "t": [topics], "w": 1, "k": [worker ids],
"x": [run ids whose holder may have to stop]}`,
kept under PostgreSQL's 8000-byte limit: a transaction that touched too many keys sends
`{"o": origin, "all": 1}` instead, and receivers check every key they follow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from gyoza_grpc.domain.model import Event, Run, RunState
from gyoza_grpc.domain.workers import may_stop_holder

CHANNEL = "gyoza_wakeup"
# PostgreSQL refuses payloads of 8000 bytes or more; leave room.
MAX_PAYLOAD_BYTES = 7900


def claim_wakeup(run: Run, events: Sequence[Event]) -> tuple[bool, str]:
    """What committed `events` mean for long-polling claims: (a run became claimable, the
    worker whose capacity was freed or "")."""
    last = events[-1]
    if last.state is RunState.PENDING:
        return True, ""  # a retry (or an unassigned run) is claimable again
    if last.state.is_terminal and run.attempt.summary.worker_id:
        return False, run.attempt.summary.worker_id
    return False, ""


@dataclass(slots=True)
class Wakeups:
    """The keys one write transaction touched (sets: a key is sent once)."""

    runs: set[str] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)
    workers: set[str] = field(default_factory=set)
    # Runs whose holder may have to stop (wakes WaitForStopOrders on other replicas).
    stops: set[str] = field(default_factory=set)
    claimable: bool = False

    def __bool__(self) -> bool:
        return bool(self.runs or self.topics or self.workers or self.stops or self.claimable)

    def merge(self, other: Wakeups) -> None:
        self.runs |= other.runs
        self.topics |= other.topics
        self.workers |= other.workers
        self.stops |= other.stops
        self.claimable |= other.claimable

    def add_events(self, run: Run, events: Sequence[Event]) -> None:
        if not events:
            return
        self.runs.add(run.id)
        if run.event_delivery.topic:
            self.topics.add(run.event_delivery.topic)
        claimable, worker = claim_wakeup(run, events)
        self.claimable |= claimable
        if worker:
            self.workers.add(worker)
        if may_stop_holder(events):
            self.stops.add(run.id)

    def encode(self, origin: str) -> str:
        doc: dict[str, object] = {"o": origin}
        if self.runs:
            doc["r"] = sorted(self.runs)
        if self.topics:
            doc["t"] = sorted(self.topics)
        if self.workers:
            doc["k"] = sorted(self.workers)
        if self.stops:
            doc["x"] = sorted(self.stops)
        if self.claimable:
            doc["w"] = 1
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= MAX_PAYLOAD_BYTES:
            return text
        return json.dumps({"o": origin, "all": 1}, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Wakeup:
    """A decoded notification."""

    origin: str
    runs: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()
    stops: tuple[str, ...] = ()
    claimable: bool = False
    # Too many keys for one payload: check everything this replica follows.
    everything: bool = False


def decode(payload: str) -> Wakeup | None:
    """The notification in `payload`, or None when it is not one of ours."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("o"), str):
        return None

    def strings(name: str) -> tuple[str, ...]:
        value = doc.get(name, [])
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

    return Wakeup(
        origin=doc["o"],
        runs=strings("r"),
        topics=strings("t"),
        workers=strings("k"),
        stops=strings("x"),
        claimable=bool(doc.get("w")),
        everything=bool(doc.get("all")),
    )
