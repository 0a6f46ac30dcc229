"""docs/workers.md, run for real: the docker walkthrough (the example op's image built, a
docker worker, a run of the image followed to its outputs) against a real container engine,
and the Python worker program against a `gyoza-grpc serve` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from tests import docker_engine
from tests.docs.reader import DOCS, EXAMPLE_TARGET, ROOT, marked_steps, name
from tests.docs.walkthrough import Session, eventually, explain, session_env, stop
from tests.e2e.process import serve, server_env

pytestmark = pytest.mark.e2e

PAGE = DOCS / "workers.md"
DOCKER_STEPS = ["build", "worker", "create", "keep-run", "watch", "outputs"]
BUILD_TIMEOUT_S = 300.0


@pytest.mark.slow
def test_a_docker_worker_runs_the_example_image(tmp_path: Path) -> None:
    steps = marked_steps("workers-docker", PAGE)
    assert [s.name for s in steps] == DOCKER_STEPS
    docker_engine.require_engine()
    base = docker_engine.require_python_image()  # no registry here: a local python image
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///wc.db") as server:
        target = server.wait_serving()
        session = Session(
            ROOT,
            session_env({"GYOZA_TARGET": target}),  # the worker's default is the page's address
            tmp_path,
            replace={
                EXAMPLE_TARGET: target,
                "docker build ": f"docker build -q --build-arg BASE={base} ",
                # A worker sweeps the containers labelled with its id: one of its own, so that
                # it never takes another test's (on the same engine) for its orphans.
                "--worker-id d1 ": f"--worker-id d1-{uuid.uuid4().hex[:8]} ",
            },
        )
        with ExitStack() as stack:
            worker = None
            for step in steps:
                where = f"{name(PAGE)}:{step.line} ({step.name})"
                if step.name == "worker":
                    log = tmp_path / "worker.log"
                    background = session.background(step.command, where, log, "registered")
                    worker = stack.enter_context(background)
                    continue
                timeout_s = BUILD_TIMEOUT_S if step.name == "build" else 120.0
                result = session.run(step.command, where, timeout_s, merge=step.name == "watch")
                assert result.returncode == 0, f"{where}: {explain(result)}"
                session.check(step, result, where, loose=step.shown_lang == "text")
            assert worker is not None
            assert stop(worker) == 0, (tmp_path / "worker.log").read_text()
        assert server.stop() == 0, server.log


def test_a_worker_in_python(tmp_path: Path) -> None:
    (step,) = marked_steps("workers-sdk", PAGE, langs=("python",))
    assert EXAMPLE_TARGET in step.command
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///sdk.db") as server:
        target = server.wait_serving()
        program = tmp_path / "double_worker.py"
        program.write_text(step.command.replace(EXAMPLE_TARGET, target))
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(program)],
                cwd=tmp_path,
                env=server_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with grpc.insecure_channel(target) as channel:
                runs = runs_pb2_grpc.RunServiceStub(channel)
                workers = workers_pb2_grpc.WorkerServiceStub(channel)

                def registered() -> bool:
                    listed = workers.ListWorkers(workers_pb2.ListWorkersRequest(), timeout=10)
                    return [w.worker_id for w in listed.workers] == ["w3"]

                eventually(registered, 30, f"{name(PAGE)}:{step.line}: the worker registers")
                request = runs_pb2.CreateRunRequest(image="double")
                request.inputs.update({"x": 21})
                run_id = runs.CreateRun(request, timeout=10).run.id

                def completed() -> bool:
                    got = runs.GetRun(runs_pb2.GetRunRequest(id=run_id), timeout=10).run
                    return got.state == runs_pb2.RUN_STATE_COMPLETED

                eventually(completed, 30, "the run completes")
                got = runs.GetRun(runs_pb2.GetRunRequest(id=run_id), timeout=10).run
                assert dict(got.outputs) == {"y": 42}
                events = runs.ListEvents(runs_pb2.ListEventsRequest(run_id=run_id), timeout=10)
                notes = [(e.type, e.msg, e.progress) for e in events.events]
                assert (runs_pb2.EVENT_TYPE_INFO, "doubling 21 on GPU None", 0) in notes
                assert (runs_pb2.EVENT_TYPE_PROGRESS, "", 50) in notes
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            assert process.wait(30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert server.stop() == 0, server.log
