"""ClaimRuns benchmark: claim throughput with 16 workers, and CreateRun -> waiting-claim latency.

For each database (default: a fresh temporary SQLite file; a PostgreSQL URL gets a fresh
database of its own on that server, dropped afterwards), a fresh ``gyoza-grpc serve``
subprocess is started and, once grpc.health.v1 says SERVING:

1. throughput (once per --max-runs value): a backlog of B runs (no constraints) is created;
   W worker processes each register with a Heartbeat, then on one signal loop
   ``ClaimRuns(max_runs=k, wait=0)`` until a call returns nothing. Reported: claims per second
   (all claims / (last call end - first call start)), the per-call latency of the calls that
   claimed (p50/p99/max), and that every run was claimed exactly once. With ``--finish`` each
   worker also reports STARTED and COMPLETED for what it claimed (a worker that finishes
   instantly) so that it never holds more than k runs; by default the claimed runs stay
   ASSIGNED, so each worker's holdings grow through the phase.
2. wake-up latency: W' worker processes each register and block in
   ``ClaimRuns(max_runs=1, wait=10s)`` (again at once after each claim); the main process
   creates N runs one at a time at a steady pace. Each worker records when its claim returned
   (time.monotonic(): CLOCK_MONOTONIC, one clock for every process on Linux); latency = claim
   receipt - the return of the CreateRun that made the run. It can be slightly negative (the
   server wakes the waiters before its reply reaches the creator); the raw distribution is
   reported. Target (issue 4): p99 <= 50 ms.

The server runs with a long lease (--lease-seconds) so that no worker is evicted while it
is busy being measured. The server's CPU time per phase is reported: it is one Python
process, so ~100% of one core means it is the bottleneck.

Run by hand, never by the test suite: ``.venv/bin/python bench/claims.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no GOAWAY chatter when a server stops

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

if __package__ in (None, ""):  # run as a script: make the repo importable (also in workers)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_process import ServerProcess, free_port, sigterm_as_exit
from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "results" / "claims.json"
TARGET_P99_MS = 50.0
RESOURCES = workers_pb2.Resources(cpu=64, ram_mb=256_000)

# ----------------------------------------------------------------------------- helpers


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil
    return sorted_values[min(rank, len(sorted_values)) - 1]


def distribution_ms(seconds: Sequence[float]) -> dict[str, float]:
    values = sorted(s * 1000 for s in seconds)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(values[0], 3),
        "p50": round(percentile(values, 50), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(values[-1], 3),
        "mean": round(sum(values) / len(values), 3),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ----------------------------------------------------------------------------- the server


class Server(ServerProcess):
    """`gyoza-grpc serve` in a process group of its own."""

    def __init__(self, database_url: str, log_path: Path, lease_s: int) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        argv = [
            str(REPO / ".venv" / "bin" / "python"), "-m", "gyoza_grpc", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--database-url", database_url,
            "--lease-seconds", str(lease_s),
        ]  # fmt: skip
        if not Path(argv[0]).exists():
            argv[0] = sys.executable
        super().__init__("gyoza-grpc", argv, log_path)

    async def wait_serving(self, channel: grpc.aio.Channel, limit_s: float) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + limit_s
        while True:
            self.check_alive()
            try:
                resp = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not SERVING after {limit_s} s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)


# ----------------------------------------------------------------------------- databases


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


async def create_postgres_database(url: str) -> str:
    """A fresh, empty database on the server of `url`; returns its URL."""
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"gyoza_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    conn = await asyncpg.connect(_asyncpg_dsn(url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def backend_of(url: str) -> str:
    return "postgres" if url.startswith("postgresql") else "sqlite"


# ----------------------------------------------------------------------------- worker processes


@dataclass(frozen=True)
class WorkerSpec:
    address: str
    worker_id: str
    max_runs: int = 1
    wait_s: float = 0.0
    finish: bool = False
    limit_s: float = 300.0


def throughput_worker(spec: WorkerSpec, ready: Any, go: Any, out: Any) -> None:
    """Phase 1 in a process of its own: register, wait for `go`, claim until nothing is left."""
    try:
        out.put(("done", asyncio.run(_throughput_worker(spec, ready, go))))
    except BaseException as err:
        out.put(("error", f"{spec.worker_id}: {err!r}"))
        raise


async def _throughput_worker(spec: WorkerSpec, ready: Any, go: Any) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(spec.address) as ch:
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        runs = runs_pb2_grpc.RunServiceStub(ch)
        await workers.Heartbeat(
            workers_pb2.HeartbeatRequest(worker_id=spec.worker_id, resources=RESOURCES)
        )
        ready.put(spec.worker_id)
        if not await asyncio.to_thread(go.wait, spec.limit_s):
            raise TimeoutError("no go signal")
        request = workers_pb2.ClaimRunsRequest(
            worker_id=spec.worker_id, max_runs=spec.max_runs, wait=duration(0)
        )
        latencies: list[float] = []
        ids: list[str] = []
        first = time.monotonic()
        deadline = first + spec.limit_s
        last = first
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            resp = await workers.ClaimRuns(request, timeout=30)
            last = time.monotonic()
            if not resp.claims:
                break
            latencies.append(last - t0)
            ids.extend(c.run.id for c in resp.claims)
            if spec.finish:
                for c in resp.claims:
                    for t in (runs_pb2.EVENT_TYPE_STARTED, runs_pb2.EVENT_TYPE_COMPLETED):
                        await runs.AddEvent(
                            runs_pb2.AddEventRequest(run_id=c.run.id, type=t, attempt=c.attempt),
                            timeout=30,
                        )
        return {
            "worker_id": spec.worker_id,
            "latencies": latencies,
            "ids": ids,
            "first": first,
            "last": last,
        }


def waiting_worker(spec: WorkerSpec, ready: Any, stop: Any, out: Any) -> None:
    """Phase 2 in a process of its own: block in ClaimRuns(wait) and report each claim."""
    try:
        asyncio.run(_waiting_worker(spec, ready, stop, out))
    except BaseException as err:
        if not stop.is_set():
            out.put(("error", f"{spec.worker_id}: {err!r}"))
            raise


async def _waiting_worker(spec: WorkerSpec, ready: Any, stop: Any, out: Any) -> None:
    async with grpc.aio.insecure_channel(spec.address) as ch:
        workers = workers_pb2_grpc.WorkerServiceStub(ch)
        await workers.Heartbeat(
            workers_pb2.HeartbeatRequest(worker_id=spec.worker_id, resources=RESOURCES)
        )
        request = workers_pb2.ClaimRunsRequest(
            worker_id=spec.worker_id, max_runs=1, wait=duration(spec.wait_s)
        )
        ready.put(spec.worker_id)
        deadline = time.monotonic() + spec.limit_s
        while not stop.is_set() and time.monotonic() < deadline:
            resp = await workers.ClaimRuns(request, timeout=spec.wait_s + 10)
            received = time.monotonic()
            for c in resp.claims:
                out.put(("claim", c.run.id, received, spec.worker_id))


class Fleet:
    """Worker processes, always reaped: terminate, then kill."""

    def __init__(self) -> None:
        self.procs: list[BaseProcess] = []

    def add(self, proc: BaseProcess) -> None:
        proc.daemon = True
        proc.start()
        self.procs.append(proc)

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        self.procs.clear()


def drain_ready(ready: Any, out: Any, fleet: Fleet, limit_s: float, server: Server) -> None:
    """Wait until every worker of `fleet` has registered; fail early when one of them failed."""
    n = len(fleet.procs)
    deadline = time.monotonic() + limit_s
    got = 0
    while got < n:
        server.check_alive()
        dead = [p for p in fleet.procs if p.exitcode is not None]
        with contextlib.suppress(queue.Empty):
            kind, value = out.get_nowait()[:2]
            if kind == "error":
                raise RuntimeError(f"worker failed while registering: {value}")
        if dead:
            raise RuntimeError(f"{len(dead)} worker process(es) exited, codes {dead[0].exitcode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {got} of {n} workers registered in {limit_s} s")
        try:
            ready.get(timeout=0.5)
            got += 1
        except queue.Empty:
            pass


# ----------------------------------------------------------------------------- the phases


async def create_backlog(runs: runs_pb2_grpc.RunServiceStub, n: int, concurrency: int) -> float:
    """Create n runs, `concurrency` calls in flight; returns creates per second."""
    sem = asyncio.Semaphore(concurrency)
    request = runs_pb2.CreateRunRequest(image="bench")

    async def one() -> None:
        async with sem:
            await runs.CreateRun(request, timeout=60)

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.monotonic() - t0)


async def phase_throughput(
    ctx: Any,
    server: Server,
    runs: runs_pb2_grpc.RunServiceStub,
    args: argparse.Namespace,
    max_runs: int,
    fleet: Fleet,
) -> dict[str, Any]:
    creates_per_s = await create_backlog(runs, args.backlog, args.create_concurrency)
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    tag = secrets.token_hex(2)
    for i in range(args.workers):
        spec = WorkerSpec(
            server.address,
            f"tp-{max_runs}-{tag}-{i}",
            max_runs=max_runs,
            finish=args.finish,
            limit_s=args.phase_timeout,
        )
        fleet.add(ctx.Process(target=throughput_worker, args=(spec, ready, go, out)))
    await asyncio.to_thread(drain_ready, ready, out, fleet, args.phase_timeout, server)
    cpu0 = cpu_seconds(server.pid)
    go.set()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.phase_timeout + 30
    while len(results) < args.workers:
        server.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"throughput phase: {len(results)} of {args.workers} finished")
        try:
            kind, value = await asyncio.to_thread(out.get, True, 0.5)
        except queue.Empty:
            continue
        if kind == "error":
            raise RuntimeError(f"throughput worker failed: {value}")
        results.append(value)
    cpu1 = cpu_seconds(server.pid)
    fleet.kill()
    first = min(r["first"] for r in results)
    last = max(r["last"] for r in results)
    ids = [i for r in results for i in r["ids"]]
    latencies = [x for r in results for x in r["latencies"]]
    wall = last - first
    return {
        "max_runs": max_runs,
        "workers": args.workers,
        "backlog": args.backlog,
        "finish": args.finish,
        "creates_per_s": round(creates_per_s, 1),
        "claimed": len(ids),
        "distinct": len(set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "wall_s": round(wall, 3),
        "claims_per_s": round(len(ids) / wall, 1) if wall > 0 else float("nan"),
        "calls": len(latencies),
        "call_ms": distribution_ms(latencies),
        "per_worker_claims": sorted(len(r["ids"]) for r in results),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_cpu_share": round((cpu1 - cpu0) / wall, 2) if wall > 0 else float("nan"),
    }


async def phase_latency(
    ctx: Any,
    server: Server,
    runs: runs_pb2_grpc.RunServiceStub,
    args: argparse.Namespace,
    fleet: Fleet,
) -> dict[str, Any]:
    ready, stop, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    tag = secrets.token_hex(2)
    limit = args.runs / args.rate + args.phase_timeout
    for i in range(args.waiters):
        spec = WorkerSpec(server.address, f"wait-{tag}-{i}", wait_s=args.wait, limit_s=limit)
        fleet.add(ctx.Process(target=waiting_worker, args=(spec, ready, stop, out)))
    await asyncio.to_thread(drain_ready, ready, out, fleet, args.phase_timeout, server)
    await asyncio.sleep(args.settle)  # every waiter is parked in ClaimRuns by now
    cpu0 = cpu_seconds(server.pid)
    created: dict[str, float] = {}
    create_ms: list[float] = []
    request = runs_pb2.CreateRunRequest(image="bench-latency")
    interval = 1.0 / args.rate
    start = time.monotonic()
    late = 0
    for i in range(args.runs):
        due = start + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late += 1
        t0 = time.monotonic()
        resp = await runs.CreateRun(request, timeout=30)
        t1 = time.monotonic()
        created[resp.run.id] = t1
        create_ms.append(t1 - t0)
    claims: dict[str, list[float]] = {}
    by_worker: dict[str, int] = {}
    deadline = time.monotonic() + args.phase_timeout
    while sum(len(v) for v in claims.values()) < len(created) and time.monotonic() < deadline:
        server.check_alive()
        try:
            msg = await asyncio.to_thread(out.get, True, 0.5)
        except queue.Empty:
            continue
        if msg[0] == "error":
            raise RuntimeError(f"waiting worker failed: {msg[1]}")
        _, run_id, received, worker_id = msg
        claims.setdefault(run_id, []).append(received)
        by_worker[worker_id] = by_worker.get(worker_id, 0) + 1
    wall = time.monotonic() - start
    cpu1 = cpu_seconds(server.pid)
    stop.set()
    fleet.kill()
    latencies = [claims[r][0] - t for r, t in created.items() if r in claims]
    missing = [r for r in created if r not in claims]
    return {
        "waiters": args.waiters,
        "runs": args.runs,
        "rate_per_s": args.rate,
        "wait_s": args.wait,
        "claimed": len(latencies),
        "missing": len(missing),
        "duplicates": sum(len(v) - 1 for v in claims.values()),
        "unexpected": len(set(claims) - set(created)),
        "late_creates": late,
        "latency_ms": distribution_ms(latencies),
        "negative": sum(1 for x in latencies if x < 0),
        "create_call_ms": distribution_ms(create_ms),
        "claims_by_worker": sorted(by_worker.values()),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_cpu_share": round((cpu1 - cpu0) / wall, 2) if wall > 0 else float("nan"),
    }


def start_profiler(args: argparse.Namespace, server: Server, label: str) -> subprocess.Popen[bytes]:
    py_spy = REPO / ".venv" / "bin" / "py-spy"
    out = args.output.parent / f"claims-{label}.{'txt' if args.profile == 'raw' else 'svg'}"
    argv = [str(py_spy), "record", "--gil", "-p", str(server.pid), "-o", str(out), "-r", "200"]
    if args.profile == "raw":
        argv += ["--format", "raw"]
    print(f"[profile] py-spy -> {out}", file=sys.stderr)
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def bench_one(
    url: str, args: argparse.Namespace, tmp: Path, cleanup: list[Any]
) -> dict[str, Any]:
    backend = backend_of(url)
    if backend == "postgres":
        url = await create_postgres_database(url)
        cleanup.append(("postgres", url))
    ctx = mp.get_context("spawn")
    server = Server(url, tmp / f"server-{backend}.log", args.lease_seconds)
    cleanup.append(("server", server))
    fleet = Fleet()
    cleanup.append(("fleet", fleet))
    result: dict[str, Any] = {"backend": backend, "throughput": [], "latency": None}
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            await server.wait_serving(ch, args.startup_timeout)
            runs = runs_pb2_grpc.RunServiceStub(ch)
            for k in args.max_runs:
                print(f"[{backend}] throughput, max_runs={k} ...", file=sys.stderr)
                prof = start_profiler(args, server, f"{backend}-tp{k}") if args.profile else None
                try:
                    tp = await phase_throughput(ctx, server, runs, args, k, fleet)
                finally:
                    if prof is not None:
                        stop_profiler(prof)
                result["throughput"].append(tp)
                print(f"[{backend}]   {json.dumps(tp)}", file=sys.stderr)
            if args.runs > 0:
                print(f"[{backend}] wake-up latency ...", file=sys.stderr)
                prof = start_profiler(args, server, f"{backend}-latency") if args.profile else None
                try:
                    result["latency"] = await phase_latency(ctx, server, runs, args, fleet)
                finally:
                    if prof is not None:
                        stop_profiler(prof)
                print(f"[{backend}]   {json.dumps(result['latency'])}", file=sys.stderr)
    except BaseException:
        print(f"[{backend}] server log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        fleet.kill()
        server.stop()
    return result


# ----------------------------------------------------------------------------- report


def ms3(d: dict[str, float]) -> str:
    """p50 / p99 / max of a distribution_ms, to 0.1 ms."""
    return " / ".join(f"{d[q]:.1f}" for q in ("p50", "p99", "max")) if d.get("n") else "-"


def markdown(results: list[dict[str, Any]]) -> str:
    cols = [r["backend"] for r in results]
    lines = [
        "| | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    ks = sorted({tp["max_runs"] for r in results for tp in r["throughput"]})
    for k in ks:
        tps = [next((t for t in r["throughput"] if t["max_runs"] == k), None) for r in results]

        def get(t: dict[str, Any] | None, *path: str) -> str:
            if t is None:
                return "-"
            v: Any = t
            for p in path:
                v = v.get(p, "-") if isinstance(v, dict) else "-"
            return str(v)

        first = next(t for t in tps if t is not None)
        label = f"{first['workers']} workers, max_runs={k}"
        row(f"claims/s ({label})", [get(t, "claims_per_s") for t in tps])
        row(
            f"ClaimRuns p50 / p99 / max ms (max_runs={k})",
            ["-" if t is None else ms3(t["call_ms"]) for t in tps],
        )
        row(
            f"runs claimed / duplicates (max_runs={k})",
            [
                "-" if t is None else f"{t['distinct']}/{t['backlog']} / {t['duplicates']}"
                for t in tps
            ],
        )
        row(f"server CPU share (max_runs={k})", [get(t, "server_cpu_share") for t in tps])
    lats = [r["latency"] for r in results]
    if any(lats):
        first_l = next(x for x in lats if x)
        row(
            f"CreateRun -> claim p50 / p99 / max ms ({first_l['runs']} runs, "
            f"{first_l['waiters']} waiters, {first_l['rate_per_s']:g}/s)",
            ["-" if x is None else ms3(x["latency_ms"]) for x in lats],
        )
        row(
            f"p99 <= {TARGET_P99_MS:g} ms",
            [
                "-" if x is None else ("yes" if x["latency_ms"]["p99"] <= TARGET_P99_MS else "NO")
                for x in lats
            ],
        )
        row(
            "claimed / missing / duplicates",
            [
                "-" if x is None else f"{x['claimed']} / {x['missing']} / {x['duplicates']}"
                for x in lats
            ],
        )
        row(
            "server CPU share (latency phase)",
            [str(x["server_cpu_share"]) if x else "-" for x in lats],
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ClaimRuns throughput and wake-up latency.")
    p.add_argument("-w", "--workers", type=int, default=16, help="claiming workers (16)")
    p.add_argument("-b", "--backlog", type=int, default=5000, help="runs to claim (5000)")
    p.add_argument(
        "-k",
        "--max-runs",
        type=lambda s: [] if s in ("", "none") else [int(x) for x in s.split(",")],
        default=[1, 4],
        help="ClaimRuns max_runs, one throughput phase each (1,4); 'none' skips the phase",
    )
    p.add_argument(
        "--finish",
        action="store_true",
        help="workers report STARTED and COMPLETED for each claim (holdings stay small)",
    )
    p.add_argument(
        "--create-concurrency", type=int, default=16, help="backlog CreateRuns in flight"
    )
    p.add_argument(
        "-n", "--runs", type=int, default=300, help="runs for the latency phase (300; 0 skips it)"
    )
    p.add_argument("-r", "--rate", type=float, default=20.0, help="CreateRun per second (20)")
    p.add_argument("--waiters", type=int, default=16, help="workers waiting in ClaimRuns (16)")
    p.add_argument("--wait", type=float, default=10.0, help="ClaimRuns wait, seconds (10)")
    p.add_argument("--settle", type=float, default=1.0, help="pause before the first CreateRun")
    p.add_argument(
        "--database-url",
        action="append",
        help="'sqlite' (a fresh temporary file; the default) or a postgresql+asyncpg:// URL "
        "(a fresh database is created on that server and dropped afterwards); repeatable",
    )
    p.add_argument("--lease-seconds", type=int, default=3600)
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    p.add_argument(
        "--profile",
        choices=("svg", "raw"),
        help="sample the server with .venv/bin/py-spy during each phase (flame graph or "
        "collapsed stacks next to the JSON file)",
    )
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--phase-timeout", type=float, default=180.0, help="seconds per phase")
    p.add_argument("--max-seconds", type=float, default=1200.0, help="limit for everything")
    args = p.parse_args(argv)
    if min(args.workers, args.backlog, args.waiters, *args.max_runs) < 1 or args.rate <= 0:
        p.error("workers, backlog, waiters, max-runs and rate must be positive")
    if not 0 < args.wait <= 60:
        p.error("--wait must be in (0, 60]")
    return args


async def run_all(args: argparse.Namespace, tmp: Path, cleanup: list[Any]) -> list[dict[str, Any]]:
    results = []
    for url in args.database_url or ["sqlite"]:
        if url == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp}/bench-{secrets.token_hex(3)}.db"
        results.append(await bench_one(url, args, tmp, cleanup))
    return results


def cleanup_all(cleanup: list[Any]) -> None:
    for kind, thing in reversed(cleanup):
        try:
            if kind in ("server", "fleet"):
                thing.kill() if kind == "fleet" else thing.stop()
            elif kind == "postgres":
                asyncio.run(drop_postgres_database(thing))
        except Exception as err:  # keep cleaning up the rest
            print(f"cleanup of {kind} failed: {err!r}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    cleanup: list[Any] = []
    load_before = loadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gyoza-claims-") as tmp:
        try:
            with sigterm_as_exit():
                results = asyncio.run(
                    asyncio.wait_for(run_all(args, Path(tmp), cleanup), args.max_seconds)
                )
        finally:
            cleanup_all(cleanup)
    report = {
        "benchmark": "claims",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "target_p99_ms": TARGET_P99_MS,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "results": results,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print(f"\n{os.cpu_count()} CPUs, load {load_before} -> {loadavg()}; JSON: {args.output}")
    ok = all(
        r["latency"] is None or r["latency"]["latency_ms"].get("p99", 1e9) <= TARGET_P99_MS
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
