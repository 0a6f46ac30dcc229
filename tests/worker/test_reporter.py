"""Reporting an attempt's events: retries while the server is unreachable, fences, and an
ambiguous first try that did land."""

from __future__ import annotations

import grpc
import pytest

from gyoza.v1 import runs_pb2
from gyoza_grpc.worker.reporter import Fenced, ReportFailed, RunReporter
from tests.worker.helpers import FakeClient, rpc_error

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
FENCE = grpc.StatusCode.FAILED_PRECONDITION


def reporter(client: FakeClient, tries: int = 3) -> RunReporter:
    return RunReporter(client, "r", 2, "w", retry_delays_s=[0.01] * tries)  # type: ignore[arg-type]


async def test_transient_failures_are_retried_with_the_attempt() -> None:
    client = FakeClient(fail_next=[rpc_error(UNAVAILABLE), rpc_error(UNAVAILABLE)])
    await reporter(client).send(runs_pb2.EVENT_TYPE_PROGRESS, progress=40)
    (sent,) = client.events
    assert (sent.run_id, sent.attempt, sent.type, sent.progress) == ("r", 2, "PROGRESS", 40)


async def test_giving_up_after_the_last_retry() -> None:
    client = FakeClient(fail_next=[rpc_error(UNAVAILABLE)] * 4)
    with pytest.raises(ReportFailed, match="UNAVAILABLE"):
        await reporter(client).send(runs_pb2.EVENT_TYPE_INFO, msg="x")
    assert client.events == []


async def test_other_errors_are_not_retried() -> None:
    client = FakeClient(fail_next=[rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad")])
    with pytest.raises(ReportFailed, match="INVALID_ARGUMENT: bad"):
        await reporter(client).send(runs_pb2.EVENT_TYPE_INFO, msg="x")
    with pytest.raises(ReportFailed, match=r"payload\.outputs\.x: nan is not a finite number"):
        await reporter(FakeClient()).send(
            runs_pb2.EVENT_TYPE_COMPLETED, payload={"outputs": {"x": float("nan")}}
        )


async def test_failed_precondition_fences_the_attempt() -> None:
    client = FakeClient(fail_next=[rpc_error(FENCE, "attempt 2 is not the current attempt 3")])
    with pytest.raises(Fenced, match="not the current attempt"):
        await reporter(client).send(runs_pb2.EVENT_TYPE_PROGRESS, progress=1)


@pytest.mark.parametrize(
    ("event", "state", "current", "worker", "landed"),
    [
        (runs_pb2.EVENT_TYPE_STARTED, runs_pb2.RUN_STATE_RUNNING, 2, "w", True),
        (runs_pb2.EVENT_TYPE_STARTED, runs_pb2.RUN_STATE_RUNNING, 2, "other", False),
        (runs_pb2.EVENT_TYPE_STARTED, runs_pb2.RUN_STATE_CANCELLED, 2, "w", False),
        (runs_pb2.EVENT_TYPE_COMPLETED, runs_pb2.RUN_STATE_COMPLETED, 2, "w", True),
        (runs_pb2.EVENT_TYPE_COMPLETED, runs_pb2.RUN_STATE_PENDING, 3, "", False),
        (runs_pb2.EVENT_TYPE_FAILED, runs_pb2.RUN_STATE_PENDING, 3, "", True),  # retried
    ],
)
async def test_a_refused_retry_after_a_deadline_checks_whether_the_first_try_landed(
    event: int, state: int, current: int, worker: str, landed: bool
) -> None:
    client = FakeClient(fail_next=[rpc_error(DEADLINE), rpc_error(FENCE, "refused")])
    client.runs["r"] = runs_pb2.Run(
        id="r",
        state=state,  # type: ignore[arg-type]
        current_attempt=current,
        execution_summary=runs_pb2.ExecutionSummary(worker_id=worker),
    )
    send = reporter(client).send(event)  # type: ignore[arg-type]
    if landed:
        await send
    else:
        with pytest.raises(Fenced):
            await send
