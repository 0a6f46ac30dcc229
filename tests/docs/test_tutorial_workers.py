"""docs/tutorial.md's "A server and two workers", run for real: `gyoza-grpc serve` and the two
`gyoza-grpc worker` commands of the page as processes, then its grpcurl steps in one session
from the repository's root (the workers run `python examples/double.py`)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests.docs.reader import DOCS, EXAMPLE_TARGET, ROOT, marked_steps, name
from tests.docs.walkthrough import Session, eventually, explain, session_env, stop
from tests.e2e.process import serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TUTORIAL = DOCS / "tutorial.md"
STEPS = ["serve", "worker-1", "worker-2", "list-workers", "submit", "watch", "completed"]


def test_a_server_and_two_workers(tmp_path: Path) -> None:
    steps = {s.name: s for s in marked_steps("tutorial-workers", TUTORIAL)}
    assert list(steps) == STEPS
    assert steps["serve"].command == "gyoza-grpc serve"  # started below on a free port
    env = session_env()  # `python` is this venv's, as in the page's terminals
    with serve(tmp_path, "--port", "0") as server, ExitStack() as stack:
        target = server.wait_serving()
        session = Session(ROOT, env, tmp_path, replace={EXAMPLE_TARGET: target})
        session.env["GYOZA_TARGET"] = target  # the workers' default is the page's address
        workers = [
            stack.enter_context(
                session.background(
                    steps[n].command, f"{name(TUTORIAL)} {n}", tmp_path / f"{n}.log", "registered"
                )
            )
            for n in ("worker-1", "worker-2")
        ]

        def run(step: str) -> str:
            where = f"{name(TUTORIAL)}:{steps[step].line} ({step})"
            result = session.run(steps[step].command, where)
            assert result.returncode == 0, f"{where}: {explain(result)}"
            return result.stdout

        listed = json.loads(run("list-workers"))
        assert sorted(w["worker_id"] for w in listed["workers"]) == ["w1", "w2"]
        created = run("submit")
        assert created.count('"state": "RUN_STATE_PENDING"') == 7
        watched = run("watch")
        for shown in ("EVENT_TYPE_ASSIGNED", "EVENT_TYPE_STARTED", "EVENT_TYPE_PROGRESS",
                      '"msg": "doubling 21', '"y": 42', "EVENT_TYPE_COMPLETED"):  # fmt: skip
            assert shown in watched, watched

        with grpc.insecure_channel(target) as channel:
            runs = runs_pb2_grpc.RunServiceStub(channel)

            def all_completed() -> bool:
                data = runs.ListRuns(runs_pb2.ListRunsRequest(limit=100), timeout=10).data
                return len(data) == 8 and all(r.state == runs_pb2.RUN_STATE_COMPLETED for r in data)

            eventually(all_completed, 60, "the page's runs complete")
        got = run("completed").splitlines()
        shown = (steps["completed"].shown or "").splitlines()
        # Which worker ran a CPU-only run depends on timing; the GPU run can only run on w2.
        assert sorted(line.rsplit(" ", 1)[0] for line in got) == sorted(
            line.rsplit(" ", 1)[0] for line in shown
        )
        assert "{'x': 100} {'y': 200} w2" in got
        assert {line.rsplit(" ", 1)[1] for line in got} <= {"w1", "w2"}
        for worker in workers:  # Ctrl-C stops a worker cleanly
            assert stop(worker) == 0
        assert server.stop() == 0, server.log
