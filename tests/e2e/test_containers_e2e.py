"""Containers through real processes: `gyoza-grpc serve` and `gyoza-grpc worker --executor
docker` processes on a real engine, driven through the generated stubs.

- Two docker workers run 20 runs of an image that reads its inputs and writes outputs and
  progress: all COMPLETED with their own outputs and PROGRESS events, on both workers; beside
  them a run with ram_mb 64 that allocates 200 MB fails as OOM, an unknown image fails naming
  it, and a long run's live container carries the labels and limits; cancelled, its container
  is gone within 3 s (the lease is the default 30 s: no heartbeat brings that stop order).
- A worker SIGKILLed mid-run leaves its container running; restarted with the same id it
  removes it, and the run is retried per its policy and completes.

Needs a container engine and the test images (tests/docker_engine.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests import docker_engine
from tests.docker_engine import image
from tests.e2e.process import serve, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

R = runs_pb2
# Generous for a busy 2-core machine.
DEADLINE_S = 90.0
CANCEL_BOUND_S = 3.0

# Worker ids of this test process: a worker sweeps every container labelled with its id as
# an orphan, so test runs side by side must not share them.
CW1, CW2, KW = (f"{name}-{os.getpid()}" for name in ("cw1", "cw2", "kw"))


@pytest.fixture(autouse=True)
def _engine() -> None:
    docker_engine.require_engine()


def docker_ps(*labels: str) -> list[dict[str, Any]]:
    """The containers (running or not) with all these labels, as `docker ps` lists them."""
    args = ["docker", "ps", "-a", "--no-trunc", "--format", "{{json .}}"]
    for label in labels:
        args += ["--filter", f"label={label}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def docker_inspect(container_id: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "inspect", container_id], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found: dict[str, Any] = json.loads(out)[0]
    return found


def remove_containers(worker_id: str) -> None:
    for c in docker_ps(f"gyoza.worker_id={worker_id}"):
        subprocess.run(["docker", "rm", "-f", c["ID"]], capture_output=True, check=False)


@contextmanager
def workers_of(tmp_path: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        yield started
    finally:
        for _, p in started:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for worker_id, p in started:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            remove_containers(worker_id)


def start_worker(
    tmp_path: Path, target: str, worker_id: str, *extra: str
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "gyoza_grpc", "worker",
        "--executor", "docker",
        "--target", target,
        "--worker-id", worker_id,
        "--cpu", "2",
        "--ram-mb", "2000",
        "--claim-wait", "5",
        "--shutdown-grace", "5",
        "--stop-grace", "5",
        *extra,
    ]  # fmt: skip
    log = (tmp_path / f"{worker_id}.log").open("ab")
    with log:
        return subprocess.Popen(
            args,
            cwd=tmp_path,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def tail_logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:])
        for p in sorted(tmp_path.glob("*.log"))
    )


def wait_until(check: Any, timeout_s: float, what: str, logs: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s\n{tail_logs(logs)}")
        time.sleep(0.05)
    return result


def create(
    runs: runs_pb2_grpc.RunServiceStub,
    image_ref: str,
    inputs: dict[str, Any] | None = None,
    *,
    max_attempts: int = 1,
    **constraints: int,
) -> R.Run:
    req = R.CreateRunRequest(
        image=image_ref,
        constraints=R.Constraints(**constraints),
        retry_policy=R.RetryPolicy(max_attempts=max_attempts),
    )
    req.inputs.update(inputs or {})
    run: R.Run = runs.CreateRun(req, timeout=10).run
    return run


def get(runs: runs_pb2_grpc.RunServiceStub, run_id: str) -> R.Run:
    run: R.Run = runs.GetRun(R.GetRunRequest(id=run_id), timeout=10).run
    return run


def test_two_docker_workers_run_twenty_runs_and_the_failures_say_why(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'gyoza.db'}"
    with (
        serve(tmp_path, "--port", "0", "--database-url", db) as server,
        workers_of(tmp_path) as procs,
    ):
        target = server.wait_serving()
        runs = runs_pb2_grpc.RunServiceStub(grpc.insecure_channel(target))
        echo = {create(runs, image("echo"), {"n": n, "steps": 2}).id: n for n in range(20)}
        oom = create(runs, image("oom"), {"mb": 200}, ram_mb=64)
        unknown = create(runs, "gyoza-test/not-built-anywhere:1")
        for worker_id in (CW1, CW2):
            procs.append((worker_id, start_worker(tmp_path, target, worker_id)))

        def ended(run_id: str) -> bool:
            return get(runs, run_id).state in (R.RUN_STATE_COMPLETED, R.RUN_STATE_FAILED)

        wait_until(
            lambda: all(ended(r) for r in [*echo, oom.id, unknown.id]),
            DEADLINE_S,
            "every run ended",
            tmp_path,
        )
        ran_on: set[str] = set()
        for run_id, n in echo.items():
            run = get(runs, run_id)
            assert run.state == R.RUN_STATE_COMPLETED, run.execution_summary.error_message
            assert dict(run.outputs) == {"n": n, "doubled": 2 * n, "run": run_id}
            ran_on.add(run.execution_summary.worker_id)
            evs = runs.ListEvents(R.ListEventsRequest(run_id=run_id), timeout=10).events
            assert any(e.type == R.EVENT_TYPE_PROGRESS for e in evs)
        assert ran_on == {CW1, CW2}
        failed = get(runs, oom.id)
        assert failed.state == R.RUN_STATE_FAILED
        assert failed.execution_summary.error_message.startswith("out of memory (limit 64 MB)")
        failed = get(runs, unknown.id)
        assert failed.state == R.RUN_STATE_FAILED
        assert failed.execution_summary.error_message.startswith(
            "cannot pull image 'gyoza-test/not-built-anywhere:1': "
        )

        # A long run: its live container carries the labels and limits, and a cancel removes
        # it within a few seconds (no heartbeat is due: the lease is the default 30 s).
        long = create(runs, image("sleep"), {"seconds": 300}, cpu=1, ram_mb=256)
        (live,) = wait_until(
            lambda: [c for c in docker_ps(f"gyoza.run_id={long.id}") if c["State"] == "running"],
            DEADLINE_S,
            "the long run's container is up",
            tmp_path,
        )
        info = docker_inspect(live["ID"])
        labels = info["Config"]["Labels"]
        worker_id = get(runs, long.id).execution_summary.worker_id
        assert (labels["gyoza.run_id"], labels["gyoza.attempt"]) == (long.id, "1")
        assert labels["gyoza.worker_id"] == worker_id in {CW1, CW2}
        host = info["HostConfig"]
        assert (host["Init"], host["NetworkMode"], host["NanoCpus"]) == (True, "none", 10**9)
        assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
        t0 = time.monotonic()
        runs.CancelRun(R.CancelRunRequest(id=long.id), timeout=10)
        wait_until(
            lambda: not docker_ps(f"gyoza.run_id={long.id}"),
            DEADLINE_S,
            "the cancelled run's container is gone",
            tmp_path,
        )
        took = time.monotonic() - t0
        assert took < CANCEL_BOUND_S, f"the container outlived the cancel by {took:.1f}s"

        for _, p in procs:
            p.send_signal(signal.SIGTERM)
        for _, p in procs:
            assert p.wait(30) == 0, tail_logs(tmp_path)
        assert not docker_ps(f"gyoza.worker_id={CW1}") and not docker_ps(f"gyoza.worker_id={CW2}")


def test_a_killed_workers_container_is_removed_when_it_restarts(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'gyoza.db'}"
    with (
        serve(tmp_path, "--port", "0", "--database-url", db) as server,
        workers_of(tmp_path) as procs,
    ):
        target = server.wait_serving()
        runs = runs_pb2_grpc.RunServiceStub(grpc.insecure_channel(target))
        run = create(runs, image("sleep"), {"seconds": 4}, max_attempts=2)
        first = start_worker(tmp_path, target, KW)
        procs.append((KW, first))
        (orphan,) = wait_until(
            lambda: [c for c in docker_ps(f"gyoza.run_id={run.id}") if c["State"] == "running"],
            DEADLINE_S,
            "the run's container is up",
            tmp_path,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        time.sleep(0.5)
        # The engine keeps the container: nothing stopped it.
        assert [c["ID"] for c in docker_ps(f"gyoza.run_id={run.id}")] == [orphan["ID"]]
        procs.append((KW, start_worker(tmp_path, target, KW)))
        wait_until(
            lambda: orphan["ID"] not in [c["ID"] for c in docker_ps(f"gyoza.worker_id={KW}")],
            DEADLINE_S,
            "the orphan is removed",
            tmp_path,
        )
        done = wait_until(
            lambda: (r := get(runs, run.id)).state == R.RUN_STATE_COMPLETED and r,
            DEADLINE_S,
            "the run is retried and completes",
            tmp_path,
        )
        assert done.current_attempt == 2
        attempts = runs.ListAttempts(R.ListAttemptsRequest(run_id=run.id), timeout=10).attempts
        assert attempts[0].state == R.RUN_STATE_FAILED
        assert attempts[0].execution_summary.error_message == (
            f"worker {KW} lost the attempt (restarted)"
        )
        assert dict(done.outputs) == {"slept": 4}
        assert f"removed 1 container(s) left by earlier attempts of worker {KW}" in (
            (tmp_path / f"{KW}.log").read_text()
        )
