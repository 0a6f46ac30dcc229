"""The workload gyoza-grpc exists for: producers creating runs, workers claiming and finishing them.

    .venv/bin/python bench/lifecycle.py                               # SQLite, B=4 and B=1
    .venv/bin/python bench/lifecycle.py -B 4 --replicas 1,2 \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

One client process (grpc.aio, typed stubs, one channel per server) drives, for `-s` seconds
after a warm-up:
- `--producers` (8) tasks calling CreateRun while fewer than `--backlog` runs wait (a queue that
  stays full without growing without bound);
- `--workers` (8) simulated workers, each with a Heartbeat every `--heartbeat` (2) s and a loop of
  ClaimRuns(max_runs=B, wait=5 s), then for each claimed run, concurrently, AddEvent STARTED and
  AddEvent COMPLETED (with outputs) naming the claimed attempt.

A run needs 3 + 1/B calls (CreateRun, STARTED, COMPLETED, a share of a claim), so the ceiling is
the same client's echo rate (bench/bare_server.py, concurrency `--echo-concurrency`) divided by
3 + 1/B, measured in the same round. Each round: echo, then the lifecycle on a fresh database.

Then, at half the saturating rate measured in that round, an open-loop producer creates runs one
by one and each worker records when its claim arrived: the time from CreateRun's return to the
claim (p50/p99; `time.monotonic()` in one process).

Every run completes exactly once: after each phase the producers stop, the workers drain what
is left, and the report checks that every created run was completed once (from the workers'
side) and that the server lists that many COMPLETED runs.

Output: a table on stdout, JSON in bench/results/lifecycle-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
from google.protobuf import duration_pb2

from bench.bare_server import ECHO
from bench.claims import loadavg
from bench.server_process import REPO, sigterm_as_exit
from bench.suite import EchoServer, _cpu, fresh_database, gyoza_servers, percentile
from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc

RESOURCES = workers_pb2.Resources(cpu=1024, ram_mb=1_000_000)
TARGETS = {("sqlite", 4): 0.5, ("sqlite", 1): 0.4, ("postgres", 4): 0.25}


@dataclass(frozen=True)
class Spec:
    targets: tuple[str, ...]
    batch: int
    producers: int
    workers: int
    backlog: int
    heartbeat_s: float
    seconds: float
    warmup: float
    echo_concurrency: int
    # The latency phase: runs created open-loop at this rate (0: skip), and how many.
    latency_rate: float = 0.0
    latency_runs: int = 0


def _wait(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


# ----------------------------------------------------------------------------- the client


async def _echo(spec: Spec) -> dict[str, Any]:
    """The echo ceiling at `echo_concurrency`, with a CreateRunRequest's bytes."""
    async with grpc.aio.insecure_channel(spec.targets[0]) as ch:
        echo = ch.unary_unary(
            ECHO, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        await asyncio.wait_for(ch.channel_ready(), 30)
        payload = runs_pb2.CreateRunRequest(
            image="bench/op:1", inputs={"n": 1, "task": 2}, priority=5
        ).SerializeToString()
        calls = 0
        start = time.perf_counter()
        measure_from, stop_at = start + spec.warmup, start + spec.warmup + spec.seconds

        async def task() -> None:
            nonlocal calls
            while (t0 := time.perf_counter()) < stop_at:
                await echo(payload, timeout=30)
                if t0 >= measure_from:
                    calls += 1

        await asyncio.gather(*(task() for _ in range(spec.echo_concurrency)))
    return {"calls_per_s": calls / spec.seconds}


class Lifecycle:
    """Producers and workers over one channel per server; counts and checks every run."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.channels = [grpc.aio.insecure_channel(t) for t in spec.targets]
        self.runs = [runs_pb2_grpc.RunServiceStub(c) for c in self.channels]
        self.workers = [workers_pb2_grpc.WorkerServiceStub(c) for c in self.channels]
        self.created: dict[str, float] = {}  # run id -> CreateRun's return (monotonic)
        self.completed: Counter[str] = Counter()
        self.completed_at: list[float] = []
        self.claimed_at: dict[str, float] = {}
        self.errors: Counter[str] = Counter()
        self.calls = 0
        # Seconds each call took, by kind (create, heartbeat, claim, started, completed).
        self.took: dict[str, list[float]] = {}
        self.producing = True
        self.stopping = False
        self.room = asyncio.Event()
        self.room.set()
        self.progress = asyncio.Event()  # set at each completion

    def _stub(self, i: int) -> tuple[runs_pb2_grpc.RunServiceStub, Any]:
        n = i % len(self.channels)
        return self.runs[n], self.workers[n]

    def _took(self, kind: str, t0: float) -> None:
        self.took.setdefault(kind, []).append(time.monotonic() - t0)

    def _error(self, where: str, err: grpc.aio.AioRpcError) -> None:
        self.errors[f"{where}:{err.code().name}"] += 1

    async def create_one(self, i: int) -> None:
        runs, _ = self._stub(i)
        req = runs_pb2.CreateRunRequest(image="bench/op:1", inputs={"n": i}, priority=5)
        t0 = time.monotonic()
        try:
            resp = await runs.CreateRun(req, timeout=30)
        except grpc.aio.AioRpcError as err:
            self._error("create", err)
            return
        self._took("create", t0)
        self.calls += 1
        self.created[resp.run.id] = time.monotonic()

    async def producer(self, n: int) -> None:
        i = n
        while self.producing:
            if len(self.created) - len(self.completed) >= self.spec.backlog:
                self.room.clear()
                await self.room.wait()
                continue
            await self.create_one(i)
            i += self.spec.producers

    async def open_loop(self, rate: float, count: int) -> None:
        """`count` runs at `rate` per second, on a fixed schedule."""
        start = time.monotonic()
        tasks = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.create_one(i)))
        await asyncio.gather(*tasks)

    async def worker(self, n: int) -> None:
        worker_id = f"bench-w{n}"
        _, workers = self._stub(n)
        running: dict[str, int] = {}  # what it holds and has not finished: run id -> attempt

        async def heartbeat() -> None:
            req = workers_pb2.HeartbeatRequest(
                worker_id=worker_id,
                resources=RESOURCES,
                running=[workers_pb2.HeldAttempt(run_id=r, attempt=a) for r, a in running.items()],
            )
            t0 = time.monotonic()
            try:
                await workers.Heartbeat(req, timeout=30)
                self._took("heartbeat", t0)
                self.calls += 1
            except grpc.aio.AioRpcError as err:
                self._error("heartbeat", err)

        async def heartbeats() -> None:
            while True:
                await asyncio.sleep(self.spec.heartbeat_s)
                await heartbeat()

        await heartbeat()
        beating = asyncio.create_task(heartbeats())
        try:
            while not self.stopping:
                t0 = time.monotonic()
                try:
                    resp = await workers.ClaimRuns(
                        workers_pb2.ClaimRunsRequest(
                            worker_id=worker_id, max_runs=self.spec.batch, wait=_wait(1.0)
                        ),
                        timeout=30,
                    )
                except grpc.aio.AioRpcError as err:
                    self._error("claim", err)
                    await asyncio.sleep(0.1)
                    continue
                self.calls += 1
                now = time.monotonic()
                if resp.claims:
                    self._took("claim", t0)
                for c in resp.claims:
                    self.claimed_at.setdefault(c.run.id, now)
                    running[c.run.id] = c.attempt
                await asyncio.gather(*(self.finish(n, c) for c in resp.claims))
                for c in resp.claims:
                    running.pop(c.run.id, None)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    async def finish(self, n: int, claim: workers_pb2.Claim) -> None:
        runs, _ = self._stub(n)
        run = claim.run
        try:
            t0 = time.monotonic()
            await runs.AddEvent(
                runs_pb2.AddEventRequest(
                    run_id=run.id, attempt=claim.attempt, type=runs_pb2.EVENT_TYPE_STARTED
                ),
                timeout=30,
            )
            self._took("started", t0)
            self.calls += 1
            done = runs_pb2.AddEventRequest(
                run_id=run.id, attempt=claim.attempt, type=runs_pb2.EVENT_TYPE_COMPLETED
            )
            done.payload.update({"outputs": {"ok": True}})
            t0 = time.monotonic()
            await runs.AddEvent(done, timeout=30)
            self._took("completed", t0)
            self.calls += 1
        except grpc.aio.AioRpcError as err:
            self._error("finish", err)
            return
        self.completed[run.id] += 1
        self.completed_at.append(time.monotonic())
        self.progress.set()
        if len(self.created) - len(self.completed) < self.spec.backlog:
            self.room.set()

    async def drain(self, limit_s: float = 60) -> None:
        deadline = time.monotonic() + limit_s
        while set(self.created) - set(self.completed):
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return

    async def completed_on_server(self) -> int:
        """COMPLETED runs the server lists, paged to the end."""
        total, after = 0, ""
        while True:
            page = await self.runs[0].ListRuns(
                runs_pb2.ListRunsRequest(
                    limit=100, state=runs_pb2.RUN_STATE_COMPLETED, starting_after=after
                ),
                timeout=60,
            )
            total += len(page.data)
            if not page.has_more or not page.data:
                return total
            after = page.data[-1].id

    def check(self) -> dict[str, Any]:
        twice = sum(1 for n in self.completed.values() if n > 1)
        never = len(set(self.created) - set(self.completed))
        took = {
            kind: {
                "n": len(v),
                "p50_ms": round(percentile(sorted(v), 0.5) * 1000, 2),
                "p99_ms": round(percentile(sorted(v), 0.99) * 1000, 2),
            }
            for kind, v in self.took.items()
        }
        return {
            "call_ms": took,
            "created": len(self.created),
            "completed": len(self.completed),
            "completed_twice": twice,
            "never_completed": never,
            "errors": dict(self.errors),
        }


async def _saturate(spec: Spec) -> dict[str, Any]:
    lc = Lifecycle(spec)
    for ch in lc.channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    workers = [asyncio.create_task(lc.worker(n)) for n in range(spec.workers)]
    producers = [asyncio.create_task(lc.producer(n)) for n in range(spec.producers)]
    start = time.monotonic()
    await asyncio.sleep(spec.warmup)
    done0, calls0 = len(lc.completed_at), lc.calls
    await asyncio.sleep(spec.seconds)
    done1, calls1 = len(lc.completed_at), lc.calls
    lc.producing = False
    lc.room.set()
    await asyncio.gather(*producers)
    await lc.drain()
    lc.stopping = True
    await asyncio.gather(*workers)
    result = {
        "runs_per_s": (done1 - done0) / spec.seconds,
        "calls_per_s": (calls1 - calls0) / spec.seconds,
        "wall_s": time.monotonic() - start,
        **lc.check(),
        "completed_on_server": await lc.completed_on_server(),
    }
    for ch in lc.channels:
        await ch.close()
    return result


async def _latency(spec: Spec) -> dict[str, Any]:
    lc = Lifecycle(spec)
    for ch in lc.channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    workers = [asyncio.create_task(lc.worker(n)) for n in range(spec.workers)]
    await asyncio.sleep(0.5)  # every worker registered and waiting in its claim
    await lc.open_loop(spec.latency_rate, spec.latency_runs)
    await lc.drain()
    lc.stopping = True
    await asyncio.gather(*workers)
    lat = sorted(lc.claimed_at[r] - t for r, t in lc.created.items() if r in lc.claimed_at)
    result = {
        "rate_per_s": spec.latency_rate,
        "claim_p50_ms": percentile(lat, 0.5) * 1000,
        "claim_p99_ms": percentile(lat, 0.99) * 1000,
        "claim_max_ms": (lat[-1] if lat else float("nan")) * 1000,
        **lc.check(),
        "completed_on_server": await lc.completed_on_server(),
    }
    for ch in lc.channels:
        await ch.close()
    return result


def _client(kind: str, spec: Spec, out: Any) -> None:
    fn = {"echo": _echo, "saturate": _saturate, "latency": _latency}[kind]
    try:
        out.put(asyncio.run(fn(spec)))
    except BaseException as err:  # reported to the parent, not lost in a child's stderr
        out.put({"crash": repr(err)})


def in_client(kind: str, spec: Spec, pids: Sequence[int]) -> dict[str, Any]:
    """Runs one phase in a fresh client process; adds the servers' CPU seconds."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_client, args=(kind, spec, out))
    cpu0 = [_cpu(p) for p in pids]
    proc.start()
    try:
        result: dict[str, Any] = out.get(timeout=spec.seconds + spec.warmup + 600)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if "crash" in result:
        raise RuntimeError(f"{kind} client: {result['crash']}")
    result["server_cpu_s"] = round(sum(_cpu(p) - c for p, c in zip(pids, cpu0, strict=True)), 2)
    return result


# ----------------------------------------------------------------------------- the rounds


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def one_round(
    args: argparse.Namespace, base_url: str, replicas: int, batch: int, tmp: Path, n: int
) -> dict[str, Any]:
    backend = "sqlite" if base_url == "sqlite" else "postgres"
    label = f"{backend}-x{replicas}-b{batch}-r{n}"
    spec = Spec(
        targets=(),
        batch=batch,
        producers=args.producers,
        workers=args.workers,
        backlog=args.backlog or max(64, 4 * args.workers * batch),
        heartbeat_s=args.heartbeat,
        seconds=args.seconds,
        warmup=args.warmup,
        echo_concurrency=args.echo_concurrency,
    )
    bare = EchoServer(tmp / f"{label}-echo.log", tmp / f"{label}-floor.db")
    try:
        await bare.wait_ready()
        echo = in_client("echo", replace(spec, targets=(bare.address,)), [bare.pid])
    finally:
        bare.stop()
    ceiling = echo["calls_per_s"] / (3 + 1 / batch)
    row: dict[str, Any] = {
        "backend": backend,
        "replicas": replicas,
        "batch": batch,
        "round": n,
        "echo_calls_per_s": round(echo["calls_per_s"], 1),
        "ceiling_runs_per_s": round(ceiling, 1),
    }
    async with (
        fresh_database(base_url, tmp, label) as url,
        gyoza_servers(url, replicas, tmp, label) as servers,
    ):
        targets = tuple(s.address for s in servers)
        pids = [s.pid for s in servers]
        sat = in_client("saturate", replace(spec, targets=targets), pids)
        row["saturate"] = sat
        row["ratio"] = round(sat["runs_per_s"] / ceiling, 3)
    if args.latency_runs:
        async with (
            fresh_database(base_url, tmp, label + "-lat") as url,
            gyoza_servers(url, replicas, tmp, label + "-lat") as servers,
        ):
            rate = max(1.0, sat["runs_per_s"] / 2)
            lat_spec = replace(
                spec,
                targets=tuple(s.address for s in servers),
                latency_rate=rate,
                latency_runs=args.latency_runs,
            )
            row["latency"] = in_client("latency", lat_spec, [s.pid for s in servers])
    return row


def _ok(result: dict[str, Any]) -> bool:
    return (
        result["completed_twice"] == 0
        and result["never_completed"] == 0
        and result["completed_on_server"] == result["created"]
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"lifecycle, {report['when']}, {report['cpus']} CPUs, load {report['load_before']}",
        "",
        "| backend | replicas | B | round | echo/s | ceiling runs/s | runs/s | ratio | target "
        "| claim p50 / p99 ms at half load | every run once |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        sat = r["saturate"]
        target = TARGETS.get((r["backend"], r["batch"]))
        lat = r.get("latency")
        lat_text = f"{lat['claim_p50_ms']:.1f} / {lat['claim_p99_ms']:.1f}" if lat else "-"
        once = _ok(sat) and (lat is None or _ok(lat))
        lines.append(
            f"| {r['backend']} | {r['replicas']} | {r['batch']} | {r['round'] + 1} "
            f"| {r['echo_calls_per_s']:,.0f} | {r['ceiling_runs_per_s']:,.0f} "
            f"| {sat['runs_per_s']:,.1f} | {r['ratio']:.2f} "
            f"| {'>= ' + str(target) if target else '-'} | {lat_text} | {'yes' if once else 'NO'} |"
        )
    lines.append("")
    groups: dict[tuple[str, int, int], list[float]] = {}
    for r in report["rows"]:
        groups.setdefault((r["backend"], r["replicas"], r["batch"]), []).append(r["ratio"])
    for (backend, replicas, batch), ratios in groups.items():
        lines.append(
            f"- {backend} x{replicas}, B={batch}: median ratio {statistics.median(ratios):.2f} "
            f"over {len(ratios)} round(s) [{min(ratios):.2f}-{max(ratios):.2f}]"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", action="append", help="'sqlite' (default) or a PG URL")
    p.add_argument("--replicas", default="1", help="comma list, e.g. 1,2")
    p.add_argument("-B", "--batch", default="4,1", help="ClaimRuns max_runs, comma list")
    p.add_argument("--producers", type=int, default=8)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--backlog", type=int, default=0, help="0: max(64, 4 x workers x B)")
    p.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    p.add_argument("-s", "--seconds", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--echo-concurrency", type=int, default=32)
    p.add_argument("--latency-runs", type=int, default=300, help="0: skip the latency phase")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return p.parse_args(argv)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_before": loadavg(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [],
    }
    for url in args.database_url or ["sqlite"]:
        for replicas in (int(r) for r in args.replicas.split(",")):
            for batch in (int(b) for b in args.batch.split(",")):
                for n in range(args.rounds):
                    row = await one_round(args, url, replicas, batch, tmp, n)
                    report["rows"].append(row)
                    sat, lat = row["saturate"], row.get("latency") or {}
                    _say(
                        f"{row['backend']} x{replicas} B={batch} round {n + 1}: "
                        f"{sat['runs_per_s']:.1f} runs/s = {row['ratio']:.2f}x of "
                        f"{row['ceiling_runs_per_s']:.0f}; claim p99 "
                        f"{lat.get('claim_p99_ms', float('nan')):.1f} ms; "
                        f"errors {sat['errors']} once={_ok(sat)}"
                    )
    report["load_after"] = loadavg()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="gyoza-lifecycle-") as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    path = args.out / f"lifecycle-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"written: {path}", file=sys.stderr)
    every_once = all(
        _ok(r["saturate"]) and ("latency" not in r or _ok(r["latency"])) for r in report["rows"]
    )
    return 0 if every_once else 1


if __name__ == "__main__":
    raise SystemExit(main())
