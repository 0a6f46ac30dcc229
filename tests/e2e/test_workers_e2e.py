"""Workers as real processes: `gyoza-grpc serve` and three `gyoza-grpc worker` processes with
mixed capacities run 60 runs of mixed constraints and priorities through a small Python op,
while one worker is killed with SIGKILL in the middle of its runs.

The op writes a marker file when it starts and when it ends (run, attempt, worker, GPU, time),
so the test can check from the outside what ran where and when: every run ends COMPLETED, the
killed worker's runs FAIL with "worker w1 lost" and are retried elsewhere, no run ever ran on
two workers at once, no worker ever held more than it declared, and higher priority runs were
claimed first. The op stops when its worker dies (as it would with the machine): it notices
that its parent process changed and writes an "abandoned" marker.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from tests.e2e.process import serve, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

R = runs_pb2
DEADLINE_S = 45.0

OP = r"""
import json, os, sys, time

inputs = json.load(sys.stdin)
markers = os.environ["E2E_MARKERS"]
run_id, attempt = os.environ["GYOZA_RUN_ID"], int(os.environ["GYOZA_ATTEMPT"])
parent = os.getppid()


def mark(kind):
    doc = {
        "kind": kind, "run": run_id, "attempt": attempt, "pid": os.getpid(), "t": time.time(),
        "worker": os.environ["GYOZA_WORKER_ID"], "gpu": os.environ.get("GYOZA_GPU_ID"),
    }
    path = os.path.join(markers, f"{run_id}.{attempt}.{kind}")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)


def wait(seconds):
    end = time.time() + seconds
    while time.time() < end:
        if os.getppid() != parent:  # the worker died: so does its work
            mark("abandoned")
            sys.exit(1)
        time.sleep(0.02)


mark("start")
wait(inputs["sleep_s"] / 2)
print("progress: 50", file=sys.stderr, flush=True)
wait(inputs["sleep_s"] / 2)
mark("end")
json.dump({"run": run_id, "n": inputs["n"]}, sys.stdout)
"""


@dataclass(frozen=True)
class Spec:
    kind: str
    priority: int
    sleep_s: float
    cpu: int = 1
    ram_mb: int = 0
    vram_mb: int = 0


@dataclass(frozen=True)
class WorkerSpec:
    worker_id: str
    cpu: int
    ram_mb: int
    gpus: dict[int, int]


WORKERS = {
    "w1": WorkerSpec("w1", cpu=4, ram_mb=4000, gpus={}),
    "w2": WorkerSpec("w2", cpu=2, ram_mb=2000, gpus={}),
    "w3": WorkerSpec("w3", cpu=2, ram_mb=2000, gpus={0: 8000}),
}


def specs() -> list[Spec]:
    rng = random.Random(4)
    out = [Spec("long", 10, 3.0) for _ in range(4)]  # w1 takes these, then is killed
    out += [Spec("high", 9, 0.3) for _ in range(10)]
    out += [Spec("low", 1, 0.3) for _ in range(10)]
    out += [Spec("gpu", 5, 0.4, vram_mb=3000) for _ in range(8)]  # only w3, two at a time
    out += [Spec("wide", 6, 0.4, cpu=2, ram_mb=1000) for _ in range(8)]
    out += [
        Spec("mixed", rng.randint(2, 8), rng.choice([0.2, 0.3, 0.5]), ram_mb=rng.choice([0, 500]))
        for _ in range(20)
    ]
    assert len(out) == 60
    return out


@dataclass
class Interval:
    run: str
    attempt: int
    worker: str
    gpu: str | None
    start: float
    end: float
    how: str  # "end" or "abandoned"


def read_markers(markers: Path) -> list[Interval]:
    docs: dict[tuple[str, int], dict[str, Any]] = defaultdict(dict)
    for path in markers.iterdir():
        if path.suffix == ".tmp":
            continue
        doc = json.loads(path.read_text())
        docs[(doc["run"], doc["attempt"])][doc["kind"]] = doc
    out = []
    for (run, attempt), kinds in docs.items():
        start = kinds["start"]
        finish = kinds.get("end") or kinds.get("abandoned")
        assert finish is not None, f"run {run} attempt {attempt} started but never finished"
        out.append(
            Interval(
                run,
                attempt,
                start["worker"],
                start["gpu"],
                start["t"],
                finish["t"],
                finish["kind"],
            )
        )
    return out


def peak(intervals: list[Interval], weight: Any) -> float:
    """The largest total `weight(interval)` held at one moment."""
    points = sorted(
        [(i.start, 1, weight(i)) for i in intervals] + [(i.end, 0, -weight(i)) for i in intervals]
    )  # at equal times an end (0) sorts before a start (1)
    level = top = 0.0
    for _, _, delta in points:
        level += delta
        top = max(top, level)
    return top


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()


def start_worker(
    tmp_path: Path, target: str, w: WorkerSpec, op: Path, markers: Path
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "gyoza_grpc", "worker",
        "--target", target,
        "--worker-id", w.worker_id,
        "--cpu", str(w.cpu),
        "--ram-mb", str(w.ram_mb),
        "--command", f"{sys.executable} {op}",
        "--claim-wait", "5",
        "--shutdown-grace", "5",
    ]  # fmt: skip
    for gpu_id, vram in w.gpus.items():
        args += ["--gpu", f"{gpu_id}:{vram}"]
    with (tmp_path / f"{w.worker_id}.log").open("wb") as log:
        return subprocess.Popen(
            args,
            cwd=tmp_path,
            env=server_env({"E2E_MARKERS": str(markers)}),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until(check: Any, timeout_s: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s\n{tail_logs(logs)}")
        time.sleep(0.05)


def tail_logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
        for p in sorted(tmp_path.glob("*.log"))
    )


def ts(t: Any) -> float:
    return float(t.seconds + t.nanos / 1e9)


def test_three_workers_sixty_runs_one_killed(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    op = tmp_path / "op.py"
    op.write_text(OP)
    db = f"sqlite+aiosqlite:///{tmp_path / 'gyoza.db'}"
    args = ("--port", "0", "--database-url", db, "--lease-seconds", "2", "--sweep-interval", "0.2")
    with serve(tmp_path, *args) as server, processes() as procs:
        target = server.wait_serving()
        channel = grpc.insecure_channel(target)
        runs = runs_pb2_grpc.RunServiceStub(channel)
        workers = workers_pb2_grpc.WorkerServiceStub(channel)

        kinds: dict[str, Spec] = {}
        for n, spec in enumerate(specs()):
            req = R.CreateRunRequest(
                image="e2e",
                priority=spec.priority,
                retry_policy=R.RetryPolicy(max_attempts=3),
                constraints=R.Constraints(cpu=spec.cpu),
            )
            if spec.ram_mb:
                req.constraints.ram_mb = spec.ram_mb
            if spec.vram_mb:
                req.constraints.vram_mb = spec.vram_mb
            req.inputs.update({"n": n, "sleep_s": spec.sleep_s})
            kinds[runs.CreateRun(req, timeout=10).run.id] = spec

        def started_on(worker_id: str) -> list[str]:
            found: list[str] = []
            for path in markers.glob("*.start"):
                doc = json.loads(path.read_text())
                if doc["worker"] == worker_id:
                    found.append(doc["run"])
            return found

        # w1 alone first: it claims the four long runs (the highest priority) and starts them.
        w1 = start_worker(tmp_path, target, WORKERS["w1"], op, markers)
        procs.append(w1)
        wait_until(lambda: len(started_on("w1")) == 4, 20, "w1 starts 4 runs", tmp_path)
        w1_runs = set(started_on("w1"))
        assert {kinds[r].kind for r in w1_runs} == {"long"}
        w1.send_signal(signal.SIGKILL)
        w1.wait(10)

        for name in ("w2", "w3"):
            procs.append(start_worker(tmp_path, target, WORKERS[name], op, markers))

        def states() -> dict[str, int]:
            page = runs.ListRuns(R.ListRunsRequest(limit=100), timeout=10).data
            return {r.id: r.state for r in page}

        wait_until(
            lambda: set(states().values()) == {R.RUN_STATE_COMPLETED},
            DEADLINE_S,
            "every run COMPLETED",
            tmp_path,
        )
        for p in procs[1:]:  # a clean stop: SIGTERM, nothing left running
            p.send_signal(signal.SIGTERM)
        for p in procs[1:]:
            assert p.wait(15) == 0, tail_logs(tmp_path)

        # -- every run completed, with its own outputs --------------------------------------
        final = {rid: runs.GetRun(R.GetRunRequest(id=rid), timeout=10).run for rid in kinds}
        attempts = {
            rid: list(runs.ListAttempts(R.ListAttemptsRequest(run_id=rid), timeout=10).attempts)
            for rid in kinds
        }
        evs = {
            rid: list(runs.ListEvents(R.ListEventsRequest(run_id=rid), timeout=10).events)
            for rid in kinds
        }
        for rid, run in final.items():
            assert run.state == R.RUN_STATE_COMPLETED
            assert dict(run.outputs)["run"] == rid

        # -- the killed worker's runs FAILED "worker w1 lost" and were retried elsewhere -----
        w1_detail = workers.GetWorker(workers_pb2.GetWorkerRequest(worker_id="w1"), timeout=10)
        assert w1_detail.worker.state == workers_pb2.WORKER_STATE_EVICTED
        for rid in w1_runs:
            first, *rest = attempts[rid]
            assert first.state == R.RUN_STATE_FAILED
            assert first.execution_summary.worker_id == "w1"
            assert first.execution_summary.error_message == "worker w1 lost"
            assert rest and rest[-1].state == R.RUN_STATE_COMPLETED
            assert rest[-1].execution_summary.worker_id in {"w2", "w3"}
        for rid in set(kinds) - w1_runs:
            assert len(attempts[rid]) == 1, f"run {rid} was retried"

        # -- never on two workers at once ----------------------------------------------------
        intervals = read_markers(markers)
        by_run: dict[str, list[Interval]] = defaultdict(list)
        for i in intervals:
            by_run[i.run].append(i)
        assert set(by_run) == set(kinds)
        for rid, its in by_run.items():
            its.sort(key=lambda i: i.start)
            for a, b in itertools.pairwise(its):
                assert a.end <= b.start, f"run {rid}: {a} overlaps {b}"
            server_view = {a.attempt: a.execution_summary.worker_id for a in attempts[rid]}
            for i in its:
                assert server_view[i.attempt] == i.worker
        for a_list in attempts.values():  # the server's attempts follow each other too
            for a, b in itertools.pairwise(a_list):
                assert ts(a.finished_at) <= ts(b.started_at)
        abandoned = {i.run for i in intervals if i.how == "abandoned"}
        assert abandoned == w1_runs

        # -- no worker ever held more than it declared ----------------------------------------
        for name, w in WORKERS.items():
            mine = [i for i in intervals if i.worker == name]
            assert peak(mine, lambda i: kinds[i.run].cpu) <= w.cpu, name
            assert peak(mine, lambda i: kinds[i.run].ram_mb) <= w.ram_mb, name
            for gpu_id, vram in w.gpus.items():
                on_gpu = [i for i in mine if i.gpu == str(gpu_id)]
                assert peak(on_gpu, lambda i: kinds[i.run].vram_mb) <= vram, name
        for i in intervals:
            if kinds[i.run].vram_mb:
                assert (i.worker, i.gpu) == ("w3", "0")
            else:
                assert i.gpu is None
        assert peak([i for i in intervals if i.worker == "w3"], lambda i: 1) >= 2  # concurrent

        # -- higher priority first, where capacity allowed ------------------------------------
        def first_event(rid: str, event_type: int) -> float:
            return min(ts(e.time) for e in evs[rid] if e.type == event_type and e.attempt == 1)

        high = [r for r, s in kinds.items() if s.kind == "high"]
        low = [r for r, s in kinds.items() if s.kind == "low"]
        # The same constraints, created together: every high run was claimed before any low one.
        assigned_high = max(first_event(r, R.EVENT_TYPE_ASSIGNED) for r in high)
        assigned_low = min(first_event(r, R.EVENT_TYPE_ASSIGNED) for r in low)
        assert assigned_high <= assigned_low
        started_high = sorted(first_event(r, R.EVENT_TYPE_STARTED) for r in high)
        started_low = sorted(first_event(r, R.EVENT_TYPE_STARTED) for r in low)
        assert started_high[len(high) // 2] < started_low[len(low) // 2]
        # Each run reported its progress through the worker.
        for rid in kinds:
            assert R.EVENT_TYPE_PROGRESS in {e.type for e in evs[rid]}, evs[rid]
        channel.close()
