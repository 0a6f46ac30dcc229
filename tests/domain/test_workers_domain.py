"""Pure, table-driven tests of the workers domain (no I/O): what a heartbeat tells a worker
to stop, and which registrations are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gyoza_grpc.domain.errors import InvalidArgument
from gyoza_grpc.domain.model import Event, EventType, RunState
from gyoza_grpc.domain.placement import Capacity, Gpu
from gyoza_grpc.domain.workers import (
    MAX_TAGS,
    MAX_WORKER_ID_LEN,
    HeldAttempt,
    RunView,
    StopOrder,
    may_stop_holder,
    outage_credit,
    stop_orders,
    sweep_interval,
    validate_registration,
)

ME = "w-1"
P, A, R = RunState.PENDING, RunState.ASSIGNED, RunState.RUNNING
C, F, X = RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED


def view(state: RunState, current_attempt: int = 2, worker_id: str = ME) -> RunView:
    return RunView("r", state, current_attempt, worker_id)


# -- stop_orders -------------------------------------------------------------------------------

# (case, the run as the server sees it (None: unknown), the attempt the worker reports,
#  the stop reason or None when the worker keeps the run)
STOP_CASES: list[tuple[str, RunView | None, int, str | None]] = [
    ("unknown run", None, 1, "unknown run"),
    ("superseded attempt", view(R, current_attempt=3), 2, "superseded by attempt 3"),
    ("superseded beats cancelled", view(X, current_attempt=3), 2, "superseded by attempt 3"),
    (
        "superseded, run PENDING",
        view(P, current_attempt=3, worker_id=""),
        2,
        "superseded by attempt 3",
    ),
    ("a newer attempt than the server's", view(R, current_attempt=2), 5, "superseded by attempt 2"),
    ("cancelled while running", view(X), 2, "cancelled"),
    ("cancelled while assigned", view(X, worker_id=ME), 2, "cancelled"),
    ("completed", view(C), 2, "run is COMPLETED"),
    ("failed", view(F), 2, "run is FAILED"),
    (
        "back to PENDING (unassigned)",
        view(P, worker_id=""),
        2,
        "reassigned: the run went back to PENDING",
    ),
    ("reassigned while assigned", view(A, worker_id="w-2"), 2, "reassigned to worker w-2"),
    ("reassigned while running", view(R, worker_id="w-2"), 2, "reassigned to worker w-2"),
    ("assigned to no worker", view(A, worker_id=""), 2, "reassigned to worker (none)"),
    ("healthy: ASSIGNED to me", view(A), 2, None),
    ("healthy: RUNNING on me", view(R), 2, None),
]


@pytest.mark.parametrize(
    ("run", "attempt", "reason"), [c[1:] for c in STOP_CASES], ids=[c[0] for c in STOP_CASES]
)
def test_stop_orders_one_run(run: RunView | None, attempt: int, reason: str | None) -> None:
    runs = {} if run is None else {"r": run}
    got = stop_orders(ME, [HeldAttempt("r", attempt)], runs)
    assert got == ([] if reason is None else [StopOrder("r", attempt, reason)])


def test_stop_orders_many_runs_in_reported_order() -> None:
    runs = {
        "keep": RunView("keep", R, 1, ME),
        "cancelled": RunView("cancelled", X, 1, ME),
        "moved": RunView("moved", A, 1, "w-2"),
        "ignored": RunView("ignored", X, 1, ME),  # the worker does not report it
    }
    running = [
        HeldAttempt("moved", 1),
        HeldAttempt("keep", 1),
        HeldAttempt("gone", 4),
        HeldAttempt("cancelled", 1),
    ]
    assert stop_orders(ME, running, runs) == [
        StopOrder("moved", 1, "reassigned to worker w-2"),
        StopOrder("gone", 4, "unknown run"),
        StopOrder("cancelled", 1, "cancelled"),
    ]


def test_stop_orders_nothing_reported_nothing_to_stop() -> None:
    assert stop_orders(ME, [], {"r": view(X)}) == []
    assert stop_orders(ME, iter([]), {}) == []


def test_stop_orders_each_attempt_of_one_run_judged_on_its_own() -> None:
    """A worker reporting an old and the current attempt of one run stops only the old one."""
    running = [HeldAttempt("r", 1), HeldAttempt("r", 2)]
    assert stop_orders(ME, running, {"r": view(R, current_attempt=2)}) == [
        StopOrder("r", 1, "superseded by attempt 2")
    ]


# -- validate_registration ---------------------------------------------------------------------

OK_RESOURCES = Capacity(cpu=4, ram_mb=8000, gpus=(Gpu(0, 16000), Gpu(1, 8000)))

VALID: list[tuple[str, str, Capacity, list[str]]] = [
    ("typical", "w-1", OK_RESOURCES, ["gpu", "fast"]),
    ("no resources at all", "w", Capacity(), []),
    ("longest id", "x" * MAX_WORKER_ID_LEN, Capacity(), []),
    ("most tags", "w", Capacity(), [f"t{i}" for i in range(MAX_TAGS)]),
    ("a GPU with no VRAM, id 0", "w", Capacity(gpus=(Gpu(0, 0),)), []),
    ("unordered GPU ids", "w", Capacity(gpus=(Gpu(7, 1), Gpu(2, 1))), []),
]


@pytest.mark.parametrize(
    ("worker_id", "resources", "tags"), [c[1:] for c in VALID], ids=[c[0] for c in VALID]
)
def test_validate_registration_accepts(
    worker_id: str, resources: Capacity, tags: list[str]
) -> None:
    validate_registration(worker_id, resources, tags)  # does not raise
    validate_registration(worker_id, resources, iter(tags))  # any iterable


# (case, worker_id, resources, tags, the fields named, in order)
INVALID: list[tuple[str, str, Capacity, list[str], list[str]]] = [
    ("empty id", "", Capacity(), [], ["worker_id"]),
    ("id too long", "x" * (MAX_WORKER_ID_LEN + 1), Capacity(), [], ["worker_id"]),
    ("negative cpu", "w", Capacity(cpu=-1), [], ["resources.cpu"]),
    ("negative ram", "w", Capacity(ram_mb=-1), [], ["resources.ram_mb"]),
    ("negative gpu id", "w", Capacity(gpus=(Gpu(-1, 10),)), [], ["resources.gpus[0].gpu_id"]),
    (
        "duplicate gpu id: the second one",
        "w",
        Capacity(gpus=(Gpu(0, 10), Gpu(1, 10), Gpu(0, 10))),
        [],
        ["resources.gpus[2].gpu_id"],
    ),
    (
        "negative vram",
        "w",
        Capacity(gpus=(Gpu(0, 10), Gpu(1, -5))),
        [],
        ["resources.gpus[1].vram_mb"],
    ),
    ("too many tags", "w", Capacity(), ["t"] * (MAX_TAGS + 1), ["tags"]),
    (
        "every problem at once",
        "",
        Capacity(cpu=-1, ram_mb=-2, gpus=(Gpu(-3, -4),)),
        ["t"] * (MAX_TAGS + 1),
        [
            "worker_id",
            "resources.cpu",
            "resources.ram_mb",
            "resources.gpus[0].gpu_id",
            "resources.gpus[0].vram_mb",
            "tags",
        ],
    ),
]


@pytest.mark.parametrize(
    ("worker_id", "resources", "tags", "fields"),
    [c[1:] for c in INVALID],
    ids=[c[0] for c in INVALID],
)
def test_validate_registration_refuses(
    worker_id: str, resources: Capacity, tags: list[str], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        validate_registration(worker_id, resources, tags)
    err = excinfo.value
    assert err.code == "INVALID_ARGUMENT"
    assert [v.field for v in err.violations] == fields
    for f in fields:
        assert f in err.message


# -- the lease clock -----------------------------------------------------------------------------

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("requested", "lease", "interval"),
    [(5 * S, 30 * S, 5 * S), (5 * S, 4 * S, 1 * S), (0.1 * S, 1 * S, 0.1 * S)],
)
def test_sweeps_come_at_least_four_times_a_lease(
    requested: timedelta, lease: timedelta, interval: timedelta
) -> None:
    assert sweep_interval(requested, lease) == interval


@pytest.mark.parametrize(
    ("gap", "credit"),
    [(1 * S, 0 * S), (15 * S, 0 * S), (16 * S, 16 * S), (600 * S, 600 * S)],
)
def test_only_a_gap_of_more_than_half_a_lease_is_an_outage(
    gap: timedelta, credit: timedelta
) -> None:
    assert outage_credit(gap, 30 * S) == credit


def _event(type_: EventType, state: RunState) -> Event:
    return Event(run_id="r", seq=0, attempt=1, type=type_, time=datetime.now(UTC), state=state)


def test_which_events_may_stop_the_holder() -> None:
    keeps_going = [
        _event(EventType.STARTED, RunState.RUNNING),
        _event(EventType.PROGRESS, RunState.RUNNING),
        _event(EventType.INFO, RunState.RUNNING),
        _event(EventType.ERROR, RunState.RUNNING),
    ]
    assert not may_stop_holder(keeps_going)
    for stopping in (
        _event(EventType.CANCELLED, RunState.CANCELLED),
        _event(EventType.COMPLETED, RunState.COMPLETED),
        _event(EventType.FAILED, RunState.FAILED),
        _event(EventType.RETRIED, RunState.PENDING),
        _event(EventType.ASSIGNED, RunState.ASSIGNED),
        # UpdateRun's unassign and ReleaseRun are INFO events that move the run to PENDING.
        _event(EventType.INFO, RunState.PENDING),
    ):
        assert may_stop_holder([*keeps_going, stopping]), stopping
