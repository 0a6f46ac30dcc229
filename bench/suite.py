"""The benchmark suite of issue 8: gyoza-grpc beside the ceiling of Python gRPC, in one run.

One command (see bench/README.md):

    .venv/bin/python bench/suite.py                       # SQLite default, 1 replica
    .venv/bin/python bench/suite.py --replicas 1,2 \
        --database-url postgresql+asyncpg://postgres@127.0.0.1/postgres  # one and two replicas

It measures, with client load from a separate process (one client process, like the ceiling):
(a) a bare grpc.aio echo server (bench/bare_server.py's Echo), the ceiling; (b) CreateRun and (c)
AddEvent (PROGRESS) throughput and p50/p99 at concurrency 1, 32, 128; (d) GetRun; (e) ListRuns,
the first page and a page deep in the cursor chain, with 10,000 and 1,000,000 runs stored
(seeded straight into the database); (f) with --with-watch / --with-claims, the watch and claim
benchmarks of their own issues (their JSON is folded into this one).

Output: bench/results/suite-<time>.json and .md (a table with each figure's ratio to the
ceiling at the same concurrency). Every write measured is committed before its reply.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench.bare_server import ECHO
from bench.claims import (
    Server,
    create_postgres_database,
    drop_postgres_database,
    loadavg,
)
from bench.server_process import REPO, ServerProcess, free_port, sigterm_as_exit
from gyoza.v1 import runs_pb2, runs_pb2_grpc

KINDS = ("echo", "floor_create", "create", "add_event", "get", "list_first", "list_deep")
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable


# ----------------------------------------------------------------------------- client load


@dataclass(frozen=True)
class LoadSpec:
    kind: str
    targets: tuple[str, ...]
    concurrency: int
    seconds: float
    warmup: float
    # add_event / get: the runs to spread calls over; list_deep: [cursor run id].
    run_ids: tuple[str, ...] = ()


def _request(spec: LoadSpec, task: int, i: int) -> tuple[str, Any]:
    """(method kind, request) for the i-th call of a task."""
    ids = spec.run_ids
    if spec.kind in ("echo", "create", "floor_create"):
        # floor_create: CreateRun of bench/bare_server.py (its target is that server).
        kind = "create" if spec.kind == "floor_create" else spec.kind
        return kind, runs_pb2.CreateRunRequest(
            image="bench/op:1", inputs={"n": i, "task": task}, priority=5
        )
    if spec.kind == "add_event":
        # Each task keeps to its own runs, as workers do: no two tasks queue on one run's lock.
        run = ids[(task + i * spec.concurrency) % len(ids)]
        return "add_event", runs_pb2.AddEventRequest(
            run_id=run, type=runs_pb2.EVENT_TYPE_PROGRESS, progress=i % 100
        )
    if spec.kind == "get":
        return "get", runs_pb2.GetRunRequest(id=ids[(task * 7919 + i) % len(ids)])
    if spec.kind == "list_first":
        return "list", runs_pb2.ListRunsRequest(limit=10)
    if spec.kind == "list_deep":
        return "list", runs_pb2.ListRunsRequest(limit=10, starting_after=ids[0])
    raise ValueError(spec.kind)


async def _load(spec: LoadSpec) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(t) for t in spec.targets]
    calls: dict[str, list[Any]] = {}
    for ch in channels:
        stub = runs_pb2_grpc.RunServiceStub(ch)
        echo = ch.unary_unary(
            ECHO, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        for name, fn in (
            ("echo", echo),
            ("create", stub.CreateRun),
            ("add_event", stub.AddEvent),
            ("get", stub.GetRun),
            ("list", stub.ListRuns),
        ):
            calls.setdefault(name, []).append(fn)
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()
    measure_from = start + spec.warmup
    stop_at = measure_from + spec.seconds

    async def task(n: int) -> None:
        i = 0
        while True:
            kind, req = _request(spec, n, i)
            fn = calls[kind][(n + i) % len(channels)]
            payload = req.SerializeToString() if kind == "echo" else req
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                await fn(payload, timeout=30)
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] = errors.get(err.code().name, 0) + 1
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(t1 - t0)
            i += 1

    await asyncio.gather(*(task(n) for n in range(spec.concurrency)))
    for ch in channels:
        await ch.close()
    return {"calls": len(latencies), "errors": errors, "latencies": latencies}


def _client_main(spec: LoadSpec, out: Any) -> None:
    try:
        out.put(asyncio.run(_load(spec)))
    except BaseException as err:  # reported to the parent, not lost in a child's stderr
        out.put({"crash": repr(err)})


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def run_load(spec: LoadSpec, servers: Sequence[ServerProcess]) -> dict[str, Any]:
    """One client process drives the load; returns calls/s and latency in ms."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_client_main, args=(spec, out))
    cpu0 = {s.pid: _cpu(s.pid) for s in servers}
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc.start()
    try:
        result = out.get(timeout=spec.seconds + spec.warmup + 120)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    if "crash" in result:
        raise RuntimeError(f"load client for {spec.kind}: {result['crash']}")
    lat = sorted(result["latencies"])
    return {
        "kind": spec.kind,
        "concurrency": spec.concurrency,
        "calls_per_s": round(result["calls"] / spec.seconds, 1),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
        "max_ms": round((lat[-1] if lat else float("nan")) * 1000, 2),
        "errors": result["errors"],
        "server_cpu_s": round(sum(_cpu(s.pid) - cpu0[s.pid] for s in servers), 2),
        # The whole client process (start-up and warm-up included): near seconds + warmup
        # means the client, not the server, set the pace.
        "client_cpu_s": round(client_cpu, 2),
    }


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- servers


class EchoServer(ServerProcess):
    """bench/bare_server.py: the echo ceiling, and the floor CreateRun over `sqlite_path`."""

    def __init__(self, log_path: Path, sqlite_path: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        argv = [PYTHON, str(REPO / "bench" / "bare_server.py"), "--port", str(self.port)]
        super().__init__("echo", [*argv, "--sqlite", str(sqlite_path)], log_path)

    async def wait_ready(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as ch:
            await asyncio.wait_for(ch.channel_ready(), 30)


@contextlib.asynccontextmanager
async def gyoza_servers(url: str, replicas: int, tmp: Path, label: str) -> Any:
    """`replicas` gyoza-grpc servers over one database (migrated first)."""
    migrate = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "gyoza_grpc", "migrate", "--database-url", url, cwd=REPO
    )
    if await migrate.wait() != 0:
        raise RuntimeError(f"gyoza-grpc migrate failed on {url}")
    servers = [Server(url, tmp / f"{label}-{n}.log", lease_s=300) for n in range(replicas)]
    try:
        for s in servers:
            async with grpc.aio.insecure_channel(s.address) as ch:
                await s.wait_serving(ch, 60)
        yield servers
    finally:
        for s in servers:
            s.stop()


@contextlib.asynccontextmanager
async def fresh_database(base_url: str, tmp: Path, label: str) -> Any:
    if base_url == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / (label + '.db')}"
        return
    url = await create_postgres_database(base_url)
    try:
        yield url
    finally:
        await drop_postgres_database(url)


# ----------------------------------------------------------------------------- preparing data


async def started_runs(target: str, n: int) -> list[str]:
    """n RUNNING runs (created, then STARTED), for AddEvent and GetRun."""
    async with grpc.aio.insecure_channel(target) as ch:
        stub = runs_pb2_grpc.RunServiceStub(ch)
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> str:
            async with sem:
                run = (
                    await stub.CreateRun(
                        runs_pb2.CreateRunRequest(image="bench/op:1", inputs={"i": i}), timeout=60
                    )
                ).run
                await stub.AddEvent(
                    runs_pb2.AddEventRequest(run_id=run.id, type=runs_pb2.EVENT_TYPE_STARTED),
                    timeout=60,
                )
                return str(run.id)

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def _seed_rows(start: int, n: int, t0_us: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from gyoza_grpc.domain.model import RunSpec
    from gyoza_grpc.domain.runs import new_run
    from gyoza_grpc.server.store import rows

    template = new_run(RunSpec(image="bench/seed:1", inputs={"k": 1}), datetime.now(UTC))
    run_row = rows.run_values(template)
    attempt_row = rows.attempt_values(template.attempt)
    run_rows, attempt_rows = [], []
    for i in range(start, start + n):
        rid = f"seed-{i:08d}"
        at = t0_us + i * 1000
        run_rows.append({**run_row, "id": rid, "created_at": at, "updated_at": at})
        attempt_rows.append({**attempt_row, "run_id": rid, "id": f"att-{i:08d}", "created_at": at})
    return run_rows, attempt_rows


async def seed_runs(url: str, have: int, want: int) -> None:
    """Top the database up to `want` seeded runs (ids seed-00000000..), oldest first, 1 ms apart,
    written straight to the tables in big batches (the API would take hours for a million)."""
    t0_us = int((datetime.now(UTC) - timedelta(days=30)).timestamp() * 1_000_000)
    batch = 50_000
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.split("///", 1)[1], timeout=60)
        try:
            for start in range(have, want, batch):
                run_rows, attempt_rows = _seed_rows(start, min(batch, want - start), t0_us)
                for table, rs in (("runs", run_rows), ("attempts", attempt_rows)):
                    cols = list(rs[0])
                    marks = ",".join("?" * len(cols))
                    sql = f"INSERT INTO {table} ({','.join(cols)}) VALUES ({marks})"
                    db.executemany(sql, [tuple(r[c] for c in cols) for r in rs])
                db.commit()
        finally:
            db.close()
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(have, want, batch):
            run_rows, attempt_rows = _seed_rows(start, min(batch, want - start), t0_us)
            for table, rs in (("runs", run_rows), ("attempts", attempt_rows)):
                cols = list(rs[0])
                await conn.copy_records_to_table(
                    table, records=[tuple(r[c] for c in cols) for r in rs], columns=cols
                )
        await conn.execute("ANALYZE runs; ANALYZE attempts")
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- the phases


@dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...]
    seconds: float
    warmup: float
    list_sizes: tuple[int, ...]
    started_runs: int
    rounds: int = 3
    # Workers heartbeating every second beside the unary figures (the workload's background).
    idle_workers: int = 0


async def _heartbeats(targets: tuple[str, ...], n: int) -> None:
    """n workers, each a Heartbeat every second (spread over the second), until killed."""
    from gyoza.v1 import workers_pb2, workers_pb2_grpc

    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [workers_pb2_grpc.WorkerServiceStub(c) for c in channels]

    async def beat(i: int) -> None:
        await asyncio.sleep(i / n)
        req = workers_pb2.HeartbeatRequest(
            worker_id=f"idle-{i}", resources=workers_pb2.Resources(cpu=8, ram_mb=16_000)
        )
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stubs[i % len(stubs)].Heartbeat(req, timeout=10)
            await asyncio.sleep(1.0)

    await asyncio.gather(*(beat(i) for i in range(n)))


def _heartbeats_main(targets: tuple[str, ...], n: int) -> None:
    asyncio.run(_heartbeats(targets, n))


@contextlib.contextmanager
def idle_workers(targets: tuple[str, ...], n: int) -> Any:
    """A process of n workers heartbeating every second, for the block."""
    if n <= 0:
        yield
        return
    proc = mp.get_context("spawn").Process(target=_heartbeats_main, args=(targets, n))
    proc.start()
    try:
        yield
    finally:
        proc.kill()
        proc.join(5)


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def bench_gyoza(
    base_url: str,
    replicas: int,
    opts: Options,
    tmp: Path,
    bare: EchoServer,
    *,
    with_lists: bool,
) -> list[dict[str, Any]]:
    """The unary figures of one setup, in rounds: each round measures the echo ceiling, the
    floor CreateRun and then gyoza-grpc's calls back to back, so every ratio compares figures
    taken under the same conditions (a shared 2-CPU machine drifts by tens of percent within
    minutes)."""
    label = f"{'sqlite' if base_url == 'sqlite' else 'postgres'}-x{replicas}"
    out: list[dict[str, Any]] = []
    async with (
        fresh_database(base_url, tmp, label) as url,
        gyoza_servers(url, replicas, tmp, label) as servers,
    ):
        targets = tuple(s.address for s in servers)
        ids = await started_runs(targets[0], opts.started_runs)
        with idle_workers(targets, opts.idle_workers):
            await _unary_rounds(opts, label, bare, servers, ids, out)
    if not with_lists:
        return out
    async with (
        fresh_database(base_url, tmp, label + "-lists") as url,
        gyoza_servers(url, 1, tmp, label + "-lists") as servers,
    ):
        have = 0
        for size in opts.list_sizes:
            t0 = time.monotonic()
            await seed_runs(url, have, size)
            have = size
            _say(f"{label}: seeded {size} runs in {time.monotonic() - t0:.1f} s")
            deep = f"seed-{size // 10:08d}"  # newest first: 90% of the way down the chain
            for kind, ids in (("list_first", ()), ("list_deep", (deep,))):
                spec = LoadSpec(kind, (servers[0].address,), 1, opts.seconds, opts.warmup, ids)
                out.append(
                    {"setup": label, "of": label, "runs_stored": size, **run_load(spec, servers)}
                )
                r = out[-1]
                _say(f"{label} {kind} with {size} runs: p50 {r['p50_ms']} p99 {r['p99_ms']} ms")
    return out


async def _unary_rounds(
    opts: Options,
    label: str,
    bare: EchoServer,
    servers: Sequence[ServerProcess],
    ids: list[str],
    out: list[dict[str, Any]],
) -> None:
    """Each round: the echo ceiling, the floor CreateRun, gyoza-grpc's calls, back to back."""
    targets = tuple(s.address for s in servers)
    for c in opts.concurrency:
        for n in range(opts.rounds):
            for kind in ("echo", "floor_create", "create", "add_event", "get"):
                own = kind in ("echo", "floor_create")
                spec = LoadSpec(
                    kind,
                    (bare.address,) if own else targets,
                    c,
                    opts.seconds,
                    opts.warmup,
                    () if own else tuple(ids),
                )
                setup = {"echo": "ceiling", "floor_create": "floor"}.get(kind, label)
                result = run_load(spec, [bare] if own else servers)
                out.append({"setup": setup, "of": label, "round": n, **result})
                r = out[-1]
                _say(
                    f"{setup} {kind} c={c} round {n + 1}: {r['calls_per_s']}/s "
                    f"p99 {r['p99_ms']} ms {r['errors']}"
                )


def run_side_benchmark(script: str, args: list[str], tmp: Path) -> dict[str, Any]:
    """bench/claims.py or bench/watch_fanout.py, with its JSON result folded in."""
    before = set((REPO / "bench" / "results").glob("*.json"))
    proc = subprocess.run([PYTHON, str(REPO / "bench" / script), *args], cwd=REPO)
    after = set((REPO / "bench" / "results").glob("*.json")) - before
    result: dict[str, Any] = {"script": script, "args": args, "exit": proc.returncode}
    if after:
        newest = max(after, key=lambda p: p.stat().st_mtime)
        result["file"] = str(newest.relative_to(REPO))
        result["result"] = json.loads(newest.read_text())
    return result


# ----------------------------------------------------------------------------- report


TARGETS = {  # kind -> (minimum ratio of the echo ceiling's calls/s at c=32, p99 limit ms)
    "create": (0.5, 25.0),
    "add_event": (0.5, None),
    "get": (0.7, None),
}


def _rounds(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (setup, call, concurrency): the round with the median ratio to the echo
    ceiling measured in the same round, and every round's ratio."""
    unary = [r for r in report["gyoza"] if "round" in r]
    echo = {(r["of"], r["concurrency"], r["round"]): r for r in unary if r["kind"] == "echo"}
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for r in unary:
        base = echo.get((r["of"], r["concurrency"], r["round"]))
        ratio = r["calls_per_s"] / base["calls_per_s"] if base else float("nan")
        groups.setdefault((r["of"], r["setup"], r["kind"], r["concurrency"]), []).append(
            {**r, "x_echo": ratio}
        )
    rows = []
    for (of, _setup, _kind, _c), rs in groups.items():
        ranked = sorted(rs, key=lambda r: r["x_echo"])
        rows.append({**ranked[len(ranked) // 2], "of": of, "all_x_echo": [r["x_echo"] for r in rs]})
    return rows


def markdown(report: dict[str, Any]) -> str:
    rows = _rounds(report)
    lines = [
        f"Machine: {report['cpus']} CPUs, load average before {report['load_before']}, "
        f"after {report['load_after']}; {report['seconds']} s per figure after "
        f"{report['warmup']} s of warm-up; one client process; {report['rounds']} rounds, each "
        "measuring the echo ceiling, the floor CreateRun and gyoza-grpc back to back. A row is "
        "the round with the median ratio to its own round's echo.",
        "",
        "| setup | call | concurrency | calls/s | x echo | p50 ms | p99 ms | max ms | "
        "x echo, each round | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items())
        every = " ".join(f"{x:.2f}" for x in r["all_x_echo"])
        setup = r["setup"] if r["setup"] == r["of"] else f"{r['setup']} ({r['of']} run)"
        lines.append(
            f"| {setup} | {r['kind']} | {r['concurrency']} | {r['calls_per_s']:.0f} | "
            f"{r['x_echo']:.2f} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {every} | "
            f"{errs} |"
        )
    lists = [r for r in report["gyoza"] if r["kind"].startswith("list")]
    if lists:
        lines += [
            "",
            "| setup | ListRuns page | runs stored | p50 ms | p99 ms | x fewest runs |",
            "|---|---|---:|---:|---:|---:|",
        ]
        first: dict[tuple[str, str], float] = {}
        for r in lists:
            key = (r["setup"], r["kind"])
            first.setdefault(key, r["p50_ms"])
            lines.append(
                f"| {r['setup']} | {r['kind'].removeprefix('list_')} | {r['runs_stored']:,} | "
                f"{r['p50_ms']} | {r['p99_ms']} | {r['p50_ms'] / first[key]:.2f} |"
            )
    lines += ["", "Targets (SQLite, one replica, concurrency 32; median round):", ""]
    for kind, (ratio, p99) in TARGETS.items():
        for r in rows:
            if r["kind"] == kind and r["concurrency"] == 32 and r["setup"] == "sqlite-x1":
                got = r["x_echo"]
                ok = got >= ratio and (p99 is None or r["p99_ms"] <= p99)
                limit = f", p99 <= {p99} ms (got {r['p99_ms']})" if p99 else ""
                verdict = "met" if ok else "MISSED"
                lines.append(f"- {kind}: >= {ratio}x echo (got {got:.2f}x){limit}: {verdict}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--database-url",
        action="append",
        help="'sqlite' (a temp file: the default) or a PostgreSQL URL (a fresh database is "
        "made on that server and dropped after); repeat for several",
    )
    p.add_argument("--replicas", default="1", help="comma list, e.g. 1,2")
    p.add_argument("-c", "--concurrency", default="1,32,128")
    p.add_argument("-s", "--seconds", type=float, default=3.0, help="measured time per figure")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the unary figures")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--list-sizes", default="10000,1000000", help="runs stored for ListRuns")
    p.add_argument("--started-runs", type=int, default=1000, help="runs AddEvent/GetRun use")
    p.add_argument(
        "--idle-workers",
        type=int,
        default=0,
        help="workers heartbeating every second beside the unary figures (issue 17: 8)",
    )
    p.add_argument("--with-watch", action="store_true", help="also run bench/watch_fanout.py")
    p.add_argument("--with-claims", action="store_true", help="also run bench/claims.py")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return p.parse_args(argv)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    opts = Options(
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        seconds=args.seconds,
        warmup=args.warmup,
        list_sizes=tuple(int(n) for n in args.list_sizes.split(",") if n),
        started_runs=args.started_runs,
        rounds=args.rounds,
        idle_workers=args.idle_workers,
    )
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_before": loadavg(),
        **asdict(replace(opts)),
    }
    report["gyoza"] = []
    bare = EchoServer(tmp / "bare.log", tmp / "floor.db")
    try:
        await bare.wait_ready()
        for url in args.database_url or ["sqlite"]:
            for replicas in (int(r) for r in args.replicas.split(",")):
                with_lists = replicas == 1 and bool(opts.list_sizes)
                report["gyoza"] += await bench_gyoza(
                    url, replicas, opts, tmp, bare, with_lists=with_lists
                )
    finally:
        bare.stop()
    if args.with_watch:
        report["watch"] = run_side_benchmark("watch_fanout.py", [], tmp)
    if args.with_claims:
        report["claims"] = run_side_benchmark("claims.py", ["-b", "2000"], tmp)
    report["load_after"] = loadavg()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="gyoza-suite-") as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    stem = args.out / f"suite-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"written: {stem}.json, {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
