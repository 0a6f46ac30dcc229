"""docs/deploy.md's commands, run for real on PostgreSQL: `gyoza-grpc migrate` on an empty
database, then two replicas started with the page's `serve` command (on loopback and free
ports, over the test database), which see each other's runs; then the migration step of a
rollout, with the URL from the environment as the page writes it."""

from __future__ import annotations

import asyncio
import signal
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests import databases
from tests.docs.reader import DOCS, ROOT, marked_steps, name
from tests.docs.walkthrough import Session, explain, session_env, stop
from tests.e2e.process import ServeProcess

pytestmark = pytest.mark.e2e

PAGE = DOCS / "deploy.md"
PAGE_URL = "postgresql+asyncpg://gyoza:PASSWORD@db:5432/gyoza"


def test_migrate_and_two_replicas(tmp_path: Path) -> None:
    steps = {s.name: s for s in marked_steps("deploy", PAGE)}
    assert list(steps) == ["migrate", "replica", "migrate-env"]
    url = asyncio.run(databases.create_empty_postgres_database())
    try:
        session = Session(
            ROOT,
            session_env(),
            tmp_path,
            replace={
                PAGE_URL: url,
                "--host 0.0.0.0": "--host 127.0.0.1",
                "--port 50051": "--port 0",
            },
        )

        def run(step: str) -> str:
            where = f"{name(PAGE)}:{steps[step].line} ({step})"
            result = session.run(steps[step].command, where)
            assert result.returncode == 0, f"{where}: {explain(result)}"
            assert result.stdout.startswith("database at revision "), explain(result)
            return result.stdout

        head = run("migrate")
        with ExitStack() as stack:
            replicas = []
            for n in (1, 2):
                where = f"{name(PAGE)}:{steps['replica'].line} (replica {n})"
                log = tmp_path / f"replica-{n}.log"
                started = session.background(steps["replica"].command, where, log, "serving on")
                replicas.append(ServeProcess(stack.enter_context(started), log))
            a, b = (replica.wait_serving() for replica in replicas)
            with grpc.insecure_channel(a) as to_a, grpc.insecure_channel(b) as to_b:
                runs_a, runs_b = (
                    runs_pb2_grpc.RunServiceStub(to_a),
                    runs_pb2_grpc.RunServiceStub(to_b),
                )
                run_id = runs_a.CreateRun(runs_pb2.CreateRunRequest(image="img"), timeout=10).run.id
                event = runs_pb2.AddEventRequest(run_id=run_id, type=runs_pb2.EVENT_TYPE_STARTED)
                assert runs_b.AddEvent(event, timeout=10).run.state == runs_pb2.RUN_STATE_RUNNING
                got = runs_a.GetRun(runs_pb2.GetRunRequest(id=run_id), timeout=10).run
                assert got.state == runs_pb2.RUN_STATE_RUNNING
            for replica in replicas:
                assert stop(replica.process, signal.SIGTERM) == 0, replica.log
        session.env["GYOZA_DATABASE_URL"] = url
        assert run("migrate-env") == head  # nothing left to apply
    finally:
        asyncio.run(databases.drop_postgres_database(url))
