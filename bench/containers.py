"""CreateRun -> COMPLETED for a no-op container, beside `docker run --rm -i` of the same image
on the same engine, in the same run (issue 15; target: p50 <= 1.3x `docker run`).

    scripts/build-test-images.sh            # gyoza-test/noop:1, once
    .venv/bin/python bench/containers.py [-n 40] [--image gyoza-test/noop:1]

A `gyoza-grpc serve` subprocess (SQLite) and one `gyoza-grpc worker --executor docker`
subprocess (cpu 1, one run at a time); the client creates a run, then watches its events
until COMPLETED, one run at a time. The two kinds of sample alternate (gyoza, docker run,
gyoza, ...) so that the drift of this shared machine falls on both alike. `docker run` gets
the same `--init --network none` and `{}` on stdin; the worker also attaches, inspects nothing
for a no-op without limits, and removes the container beside its COMPLETED report.
Prints p50/p90/p99/max of both and the ratio of the p50s; writes bench/results/containers-*.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_process import REPO, ServerProcess, free_port
from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc

R = runs_pb2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p90_ms": round(percentile(ms, 0.9), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
    }


def gyoza_once(runs: runs_pb2_grpc.RunServiceStub, image: str) -> float:
    t0 = time.perf_counter()
    run = runs.CreateRun(R.CreateRunRequest(image=image), timeout=30).run
    for resp in runs.WatchEvents(R.WatchEventsRequest(run_id=run.id), timeout=60):
        if resp.HasField("event") and resp.event.state in (
            R.RUN_STATE_COMPLETED,
            R.RUN_STATE_FAILED,
        ):
            if resp.event.state != R.RUN_STATE_COMPLETED:
                raise RuntimeError(f"run {run.id} failed: {resp.event}")
            return time.perf_counter() - t0
    raise RuntimeError(f"the watch of run {run.id} ended before COMPLETED")


def docker_run_once(image: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "-i", "--init", "--network", "none", image],
        input=b"{}\n",
        capture_output=True,
        check=True,
        timeout=60,
    )
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="samples of each kind")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--image", default="gyoza-test/noop:1")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gyoza-bench-containers-"))
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = ServerProcess(
        "serve",
        [
            sys.executable, "-m", "gyoza_grpc", "serve", "--port", str(port),
            "--database-url", f"sqlite+aiosqlite:///{work / 'gyoza.db'}",
        ],
        work / "serve.log",
    )  # fmt: skip
    worker = None
    try:
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=30)
        worker = ServerProcess(
            "worker",
            [
                sys.executable, "-m", "gyoza_grpc", "worker", "--executor", "docker",
                "--target", target, "--worker-id", "bench", "--cpu", "1", "--ram-mb", "1000",
            ],
            work / "worker.log",
        )  # fmt: skip
        workers = workers_pb2_grpc.WorkerServiceStub(channel)
        deadline = time.monotonic() + 30
        while True:
            worker.check_alive()
            try:
                w = workers.GetWorker(workers_pb2.GetWorkerRequest(worker_id="bench"), timeout=5)
                if (
                    w.worker.state == workers_pb2.WORKER_STATE_ALIVE
                    and not w.worker.not_ready_reason
                ):
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not register:\n{worker.log_tail()}")
            time.sleep(0.1)
        runs = runs_pb2_grpc.RunServiceStub(channel)
        for _ in range(args.warmup):
            gyoza_once(runs, args.image)
            docker_run_once(args.image)
        gyoza: list[float] = []
        docker: list[float] = []
        for _ in range(args.n):
            gyoza.append(gyoza_once(runs, args.image))
            docker.append(docker_run_once(args.image))
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    result = {
        "image": args.image,
        "gyoza_create_to_completed": summary(gyoza),
        "docker_run": summary(docker),
    }
    ratio = result["gyoza_create_to_completed"]["p50_ms"] / result["docker_run"]["p50_ms"]
    result["p50_ratio"] = round(ratio, 3)
    result["target"] = "p50 ratio <= 1.3"
    result["met"] = ratio <= 1.3
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"containers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("gyoza_create_to_completed", "docker_run"):
        s = result[name]
        print(
            f"{name:27s} n={s['n']:3d} p50 {s['p50_ms']:7.1f} ms  p90 {s['p90_ms']:7.1f}  "
            f"p99 {s['p99_ms']:7.1f}  max {s['max_ms']:7.1f}"
        )
    print(f"p50 ratio {ratio:.2f} (target <= 1.3): {'met' if result['met'] else 'NOT met'}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
