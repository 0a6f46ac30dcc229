"""WatchEvents fan-out benchmark: gyoza-grpc beside a bare grpc.aio streaming server.

For each server (started here as a subprocess; gyoza-grpc on a fresh temporary SQLite file):

1. one run (gyoza: CreateRun + a STARTED event, seq 0, as the backlog; bare: a published
   payload seq 0) and a warm-up watcher that reads the backlog and cancels;
2. the server's VmRSS, then N watchers on that run, opened from P client processes (each over
   C channels of its own), each ready once it has read the backlog; once every watcher is in
   and the server's VmRSS is stable, (RSS after - RSS before) / N is the RSS per idle watcher;
3. E events appended at a steady rate (AddEvent PROGRESS, open loop: each call starts on
   schedule whatever the others do), the time each call returned recorded, then a terminal
   event (COMPLETED; bare: a FINAL payload) that ends every stream;
4. every watcher records when each event arrived (time.monotonic(): CLOCK_MONOTONIC, one
   clock for every process on Linux). Latency = arrival - return of the AddEvent that wrote
   it, over all (watcher, event) pairs. It can be slightly negative: the server wakes the
   watchers before its reply reaches the writer. The raw distribution is reported.

Correctness is checked as well: every watcher must see each of the E events exactly once, in
seq order (missing, duplicate and out-of-order pairs are counted and reported).

Run by hand, never by the test suite: ``.venv/bin/python bench/watch_fanout.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no GOAWAY chatter when a server stops

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if __package__ in (None, ""):  # run as a script: make `bench` importable (also in workers)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bare_server
from bench.server_process import ServerProcess, free_port, sigterm_as_exit
from gyoza.v1 import runs_pb2, runs_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "results" / "watch_fanout.json"
TARGET_P99_MS = 100.0
TARGET_RSS_KIB = 100.0
BACKLOG_SEQ = 0  # the last seq of the backlog every watcher reads before it counts as idle
CLIENT_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel

# ----------------------------------------------------------------------------- watchers


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    kind: str  # "gyoza" | "bare"
    address: str
    run_id: str
    streams: int
    channels: int


@dataclass
class StreamLog:
    """What one watcher received: the seq and arrival time of each event, and how it ended."""

    seqs: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))
    error: str = ""


def watch_worker(spec: WorkerSpec, out: Any, abort: Any) -> None:
    """Entry point of a client process: hold `spec.streams` watchers, report to `out`."""
    try:
        asyncio.run(_worker(spec, out, abort))
    except BaseException:
        out.put(("error", spec.index, traceback.format_exc()))
        raise


async def _worker(spec: WorkerSpec, out: Any, abort: Any) -> None:
    parent = os.getppid()
    channels = [
        grpc.aio.insecure_channel(spec.address, options=CLIENT_OPTIONS)
        for _ in range(spec.channels)
    ]
    logs = [StreamLog() for _ in range(spec.streams)]
    settled = 0  # watchers that read the backlog or failed
    all_settled = asyncio.Event()

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == spec.streams:
            all_settled.set()

    def open_call(ch: grpc.aio.Channel) -> Any:
        if spec.kind == "gyoza":
            stub = runs_pb2_grpc.RunServiceStub(ch)
            return stub.WatchEvents(runs_pb2.WatchEventsRequest(run_id=spec.run_id))
        return ch.unary_stream(bare_server.WATCH)(b"")

    async def watch(i: int) -> None:
        log = logs[i]
        is_gyoza = spec.kind == "gyoza"
        ready = False
        try:
            call = open_call(channels[i % len(channels)])
            async for msg in call:
                now = time.monotonic()
                if is_gyoza:
                    if not msg.HasField("event"):
                        continue  # heartbeat
                    seq = msg.event.seq
                else:
                    seq = int.from_bytes(msg[:8], "big", signed=True)
                log.seqs.append(seq)
                log.times.append(now)
                if not ready and seq >= BACKLOG_SEQ:
                    ready = True
                    settle()
        except grpc.aio.AioRpcError as err:
            log.error = f"{err.code().name}: {err.details()}"
        except asyncio.CancelledError:
            log.error = "CANCELLED by the benchmark (did not end in time)"
        finally:
            if not ready:
                settle()

    tasks = [asyncio.create_task(watch(i)) for i in range(spec.streams)]
    pending: set[asyncio.Task[None]] = set(tasks)

    def must_stop() -> bool:
        return abort.is_set() or os.getppid() != parent

    while not all_settled.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_settled.wait(), 0.2)
        if must_stop():
            break
    failed = sum(1 for log in logs if log.error)
    out.put(("ready", spec.index, spec.streams - failed, time.process_time()))
    while pending and not must_stop():
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = time.process_time()
    for ch in channels:
        await ch.close(grace=None)
    out.put(("result", spec.index, logs, cpu))


class Fleet:
    """The client processes holding the N watchers of one server."""

    def __init__(self, ctx: Any, specs: Sequence[WorkerSpec]) -> None:
        self._queue: Any = ctx.Queue()
        self._abort: Any = ctx.Event()
        self.processes: list[BaseProcess] = [
            ctx.Process(
                target=watch_worker,
                args=(spec, self._queue, self._abort),
                daemon=True,
                name=f"watchers-{spec.kind}-{spec.index}",
            )
            for spec in specs
        ]
        self.ready_cpu: dict[int, float] = {}
        self.connected = 0

    def start(self) -> None:
        for p in self.processes:
            p.start()

    async def _next(self, deadline: float) -> tuple[Any, ...] | None:
        """The next message from a worker, or None once `deadline` passed."""
        import queue

        while time.monotonic() < deadline:
            try:
                msg: tuple[Any, ...] = await asyncio.to_thread(self._queue.get, True, 0.25)
            except queue.Empty:
                dead = [p.name for p in self.processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"watcher process(es) died: {', '.join(dead)}") from None
                continue
            if msg[0] == "error":
                raise RuntimeError(f"watcher process {msg[1]} failed:\n{msg[2]}")
            return msg
        return None

    async def wait_ready(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while len(self.ready_cpu) < len(self.processes):
            msg = await self._next(deadline)
            if msg is None:
                raise TimeoutError(f"watchers not connected after {limit_s:.0f} s")
            _, index, ok, cpu = msg
            self.ready_cpu[index] = cpu
            self.connected += ok

    async def collect(self, limit_s: float) -> tuple[list[StreamLog], float, bool]:
        """Every watcher's log, the client CPU seconds since ready, and whether it timed out
        (then the streams still open were cancelled)."""
        logs: dict[int, list[StreamLog]] = {}
        cpu = 0.0
        timed_out = False
        deadline = time.monotonic() + limit_s
        while len(logs) < len(self.processes):
            msg = await self._next(deadline)
            if msg is None:
                if timed_out:
                    raise TimeoutError("watcher processes did not report after the abort")
                timed_out = True
                self._abort.set()
                deadline = time.monotonic() + 15
                continue
            _, index, found, end_cpu = msg
            logs[index] = found
            cpu += end_cpu - self.ready_cpu.get(index, 0.0)
        for p in self.processes:
            p.join(5)
        return [log for i in sorted(logs) for log in logs[i]], cpu, timed_out

    def kill(self) -> None:
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(3)
            if p.is_alive():
                p.kill()
                p.join(3)


# ----------------------------------------------------------------------------- servers


Server = ServerProcess


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


async def stable_rss(
    pid: int, *, interval: float = 0.5, window: int = 4, limit_s: float = 20
) -> int:
    """VmRSS once `window` samples in a row stay within max(64 KiB, 0.5 %), or after `limit_s`."""
    samples: list[int] = []
    deadline = time.monotonic() + limit_s
    while True:
        samples.append(vm_rss_kib(pid))
        last = samples[-window:]
        if len(last) == window and max(last) - min(last) <= max(64, max(last) // 200):
            return last[-1]
        if time.monotonic() >= deadline:
            return samples[-1]
        await asyncio.sleep(interval)


# ----------------------------------------------------------------------------- targets


class Target:
    """One server under test: how to set up a run, publish an event, end the streams."""

    kind: str
    server: Server
    address: str
    channel: grpc.aio.Channel
    run_id: str = ""

    async def wait_serving(self, limit_s: float) -> None:
        raise NotImplementedError

    async def setup(self) -> None:
        raise NotImplementedError

    async def publish(self, i: int, total: int) -> int:
        """Append event i (0-based) of `total`; returns its seq."""
        raise NotImplementedError

    async def finish(self, seq: int) -> int:
        """Append the terminal event; returns its seq."""
        raise NotImplementedError

    def open_watch(self) -> Any:
        raise NotImplementedError


class GyozaTarget(Target):
    kind = "gyoza"

    def __init__(self, server: Server, address: str) -> None:
        self.server = server
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)
        self.runs = runs_pb2_grpc.RunServiceStub(self.channel)

    async def wait_serving(self, limit_s: float) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + limit_s
        while True:
            self.server.check_alive()
            try:
                resp = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gyoza-grpc not serving after {limit_s:.0f} s")
            await asyncio.sleep(0.2)

    async def setup(self) -> None:
        run = (await self.runs.CreateRun(runs_pb2.CreateRunRequest(image="bench/watch"))).run
        self.run_id = run.id
        started = await self.runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=run.id, type=runs_pb2.EVENT_TYPE_STARTED)
        )
        assert started.event.seq == BACKLOG_SEQ, started.event.seq

    async def publish(self, i: int, total: int) -> int:
        resp = await self.runs.AddEvent(
            runs_pb2.AddEventRequest(
                run_id=self.run_id,
                type=runs_pb2.EVENT_TYPE_PROGRESS,
                progress=i * 100 // total,
                msg=f"step {i + 1}/{total}",
            )
        )
        seq: int = resp.event.seq
        return seq

    async def finish(self, seq: int) -> int:
        resp = await self.runs.AddEvent(
            runs_pb2.AddEventRequest(run_id=self.run_id, type=runs_pb2.EVENT_TYPE_COMPLETED)
        )
        done: int = resp.event.seq
        return done

    def open_watch(self) -> Any:
        return self.runs.WatchEvents(runs_pb2.WatchEventsRequest(run_id=self.run_id))


class BareTarget(Target):
    kind = "bare"
    # About the size of a gyoza WatchEventsResponse carrying a PROGRESS event.
    PAYLOAD = 96

    def __init__(self, server: Server, address: str) -> None:
        self.server = server
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)
        self._publish = self.channel.unary_unary(bare_server.PUBLISH)

    async def wait_serving(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while True:
            self.server.check_alive()
            try:
                await asyncio.wait_for(self.channel.channel_ready(), 1)
                return
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare server not serving after {limit_s:.0f} s")

    async def setup(self) -> None:
        await self._publish(bare_server.encode(BACKLOG_SEQ, size=self.PAYLOAD), timeout=5)

    async def publish(self, i: int, total: int) -> int:
        seq = BACKLOG_SEQ + 1 + i
        await self._publish(bare_server.encode(seq, size=self.PAYLOAD))
        return seq

    async def finish(self, seq: int) -> int:
        await self._publish(bare_server.encode(seq + 1, final=True, size=self.PAYLOAD))
        return seq + 1

    def open_watch(self) -> Any:
        return self.channel.unary_stream(bare_server.WATCH)(b"")


# ----------------------------------------------------------------------------- measuring


@dataclass
class Published:
    seq: int  # -1 when the call failed
    sent: float
    returned: float
    error: str = ""


def _rpc_error(err: grpc.aio.AioRpcError) -> str:
    return f"{err.code().name}: {err.details()} ({err.debug_error_string()})"


async def publish_at_rate(
    publish: Callable[[int], Awaitable[int]], count: int, rate: float
) -> list[Published]:
    """Open loop: call i starts at t0 + i / rate whether or not the earlier ones returned."""

    async def one(i: int) -> Published:
        sent = time.monotonic()
        try:
            seq = await publish(i)
        except grpc.aio.AioRpcError as err:
            return Published(-1, sent, time.monotonic(), _rpc_error(err))
        return Published(seq, sent, time.monotonic())

    t0 = time.monotonic() + 0.05
    tasks: list[asyncio.Task[Published]] = []
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    return list(await asyncio.gather(*tasks))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def distribution_ms(values: list[float]) -> dict[str, float]:
    values.sort()
    if not values:
        return {}
    return {
        "min": values[0] * 1e3,
        "p50": percentile(values, 50) * 1e3,
        "p90": percentile(values, 90) * 1e3,
        "p99": percentile(values, 99) * 1e3,
        "p99.9": percentile(values, 99.9) * 1e3,
        "max": values[-1] * 1e3,
        "mean": sum(values) / len(values) * 1e3,
    }


@dataclass
class Check:
    expected_pairs: int = 0
    received_pairs: int = 0  # unique (watcher, event) pairs among the E events
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0  # seqs that are neither backlog, measured nor terminal
    watchers_without_terminal: int = 0
    watcher_errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.duplicates
            or self.out_of_order
            or self.unexpected
            or self.watchers_without_terminal
            or self.watcher_errors
        )


def analyse(
    logs: list[StreamLog], published: list[Published], terminal_seq: int
) -> tuple[list[float], list[float], Check]:
    """Latencies from each AddEvent's return and from its start, and the correctness check."""
    returned = {p.seq: p.returned for p in published}
    sent = {p.seq: p.sent for p in published}
    latencies: list[float] = []
    from_send: list[float] = []
    check = Check(expected_pairs=len(logs) * len(returned))
    for log in logs:
        seen: set[int] = set()
        prev = -(2**62)
        for seq, t in zip(log.seqs, log.times, strict=True):
            if seq <= prev:
                check.out_of_order += 1
            prev = max(prev, seq)
            ret = returned.get(seq)
            if ret is None:
                if seq > BACKLOG_SEQ and seq != terminal_seq:
                    check.unexpected += 1
                continue
            if seq in seen:
                check.duplicates += 1
                continue
            seen.add(seq)
            latencies.append(t - ret)
            from_send.append(t - sent[seq])
        check.received_pairs += len(seen)
        check.missing += len(returned) - len(seen)
        if terminal_seq not in log.seqs:
            check.watchers_without_terminal += 1
        if log.error:
            key = log.error.split(":", 1)[0]
            check.watcher_errors[key] = check.watcher_errors.get(key, 0) + 1
    return latencies, from_send, check


@dataclass
class Result:
    server: str
    watchers: int
    connected: int
    connect_s: float
    rss_before_kib: int
    rss_idle_kib: int
    rss_per_watcher_kib: float
    rss_after_events_kib: int
    idle_cpu_pct: float  # server CPU (% of one core) with the N watchers connected and idle
    events: int
    target_rate: float
    achieved_rate: float
    publish_ms: dict[str, float]
    # Failed AddEvent calls: left out of the figures (their events, if they were committed
    # all the same, count as "unexpected" in the check).
    publish_errors: int
    publish_error_first: str
    latency_ms: dict[str, float]  # receipt - return of the AddEvent (the figure asked for)
    latency_from_send_ms: dict[str, float]  # receipt - start of the AddEvent (with queueing)
    events_window_s: float
    server_cpu_s: float
    clients_cpu_s: float
    bench_cpu_s: float
    machine_busy_pct: float
    others_cpu_s: float  # CPU the machine spent on anything else (other jobs) meanwhile
    loadavg_before: str
    drain_timed_out: bool
    check: dict[str, Any]
    check_ok: bool


async def bench_one(
    target: Target, args: argparse.Namespace, ctx: Any, fleets: list[Fleet]
) -> Result:
    out = sys.stderr
    loadavg_before = loadavg()
    await target.wait_serving(args.startup_timeout)
    await target.setup()
    # Warm-up: one watcher reads the backlog and leaves, so first-call costs are not counted.
    warm = target.open_watch()
    async with asyncio.timeout(10):
        async for _ in warm:
            break
    warm.cancel()
    await asyncio.sleep(0.5)
    rss_before = await stable_rss(target.server.pid)
    print(f"[{target.kind}] RSS before watchers: {rss_before} KiB", file=out)

    shares = [
        args.watchers // args.processes + (i < args.watchers % args.processes)
        for i in range(args.processes)
    ]
    specs = [
        WorkerSpec(i, target.kind, target.address, target.run_id, n, args.channels)
        for i, n in enumerate(shares)
        if n
    ]
    fleet = Fleet(ctx, specs)
    fleets.append(fleet)
    t_connect = time.monotonic()
    fleet.start()
    await fleet.wait_ready(args.connect_timeout)
    connect_s = time.monotonic() - t_connect
    target.server.check_alive()
    print(
        f"[{target.kind}] {fleet.connected}/{args.watchers} watchers in after {connect_s:.1f} s;"
        " waiting for a stable RSS",
        file=out,
    )
    rss_idle = await stable_rss(target.server.pid)
    per_watcher = (rss_idle - rss_before) / max(1, args.watchers)
    idle_cpu0, idle_t0 = cpu_seconds(target.server.pid), time.monotonic()
    await asyncio.sleep(args.idle_seconds)
    idle_cpu_pct = 100 * (cpu_seconds(target.server.pid) - idle_cpu0) / (time.monotonic() - idle_t0)
    print(f"[{target.kind}] RSS idle: {rss_idle} KiB ({per_watcher:.1f} KiB/watcher)", file=out)

    print(f"[{target.kind}] {args.events} events at {args.rate:g}/s ...", file=out)
    profiler = start_profiler(args, target) if args.profile else None
    try:
        cpu0, busy0, own0 = cpu_seconds(target.server.pid), machine_busy(), time.process_time()
        t_events = time.monotonic()
        published = await publish_at_rate(
            lambda i: target.publish(i, args.events), args.events, args.rate
        )
        failed = [p.error for p in published if p.error]
        published = [p for p in published if not p.error]
        if not published:
            target.server.check_alive()
            raise RuntimeError(f"every publish call failed, the first with {failed[0]}")
        try:
            terminal = await target.finish(max(p.seq for p in published))
        except grpc.aio.AioRpcError as err:  # the streams then end at the drain timeout
            failed.append(f"terminal event: {_rpc_error(err)}")
            terminal = -1
        logs, clients_cpu, timed_out = await fleet.collect(args.drain_timeout)
        target.server.check_alive()
        cpu1, busy1, own1 = cpu_seconds(target.server.pid), machine_busy(), time.process_time()
        window_s = time.monotonic() - t_events
        rss_after = vm_rss_kib(target.server.pid)
    finally:
        if profiler is not None:
            stop_profiler(profiler)
    busy_s = (busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK")

    latencies, from_send, check = analyse(logs, published, terminal)
    span = max(p.returned for p in published) - min(p.sent for p in published)
    return Result(
        server=target.kind,
        watchers=args.watchers,
        connected=fleet.connected,
        connect_s=connect_s,
        rss_before_kib=rss_before,
        rss_idle_kib=rss_idle,
        rss_per_watcher_kib=per_watcher,
        rss_after_events_kib=rss_after,
        idle_cpu_pct=idle_cpu_pct,
        events=args.events,
        target_rate=args.rate,
        achieved_rate=(len(published) - 1) / span if span > 0 else float("nan"),
        publish_ms=distribution_ms([p.returned - p.sent for p in published]),
        publish_errors=len(failed),
        publish_error_first=failed[0] if failed else "",
        latency_ms=distribution_ms(latencies),
        latency_from_send_ms=distribution_ms(from_send),
        events_window_s=window_s,
        server_cpu_s=cpu1 - cpu0,
        clients_cpu_s=clients_cpu,
        bench_cpu_s=own1 - own0,
        machine_busy_pct=100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        others_cpu_s=max(0.0, busy_s - (cpu1 - cpu0) - clients_cpu - (own1 - own0)),
        loadavg_before=loadavg_before,
        drain_timed_out=timed_out,
        check=asdict(check),
        check_ok=check.ok,
    )


def start_profiler(args: argparse.Namespace, target: Target) -> subprocess.Popen[bytes]:
    """py-spy sampling the server from outside, without changing or restarting it."""
    exe = Path(sys.executable).with_name("py-spy")
    path = args.output.with_suffix(f".{target.kind}.pyspy.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(exe), "record", "--gil", "--format", "raw", "--rate", "200"]
    argv += ["--output", str(path), "--pid", str(target.server.pid)]
    # --native (C and Cython frames: grpc's own work) needs to pause the target per sample.
    argv.append("--native" if args.profile == "native" else "--nonblocking")
    print(f"[{target.kind}] profiling into {path}", file=sys.stderr)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)  # let it attach
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# ----------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _cpu_per_message(r: Result) -> float:
    received: int = r.check["received_pairs"]
    return 1e6 * r.server_cpu_s / max(1, received)


def _latency(q: str) -> Callable[[Result], float]:
    return lambda r: r.latency_ms.get(q, float("nan"))


def markdown(results: dict[str, Result]) -> str:
    g, b = results.get("gyoza"), results.get("bare")

    def row(label: str, get: Callable[[Result], float], digits: int = 1, ratio: bool = True) -> str:
        gv = get(g) if g else float("nan")
        bv = get(b) if b else float("nan")
        r = _fmt(gv / bv, 2) if ratio and b and g and bv > 0 else "-"
        return f"| {label} | {_fmt(gv, digits)} | {_fmt(bv, digits)} | {r} |"

    lines = [
        "| metric | gyoza-grpc | bare grpc.aio | gyoza / bare |",
        "| --- | ---: | ---: | ---: |",
        row("watchers connected", lambda r: r.connected, 0, False),
        row("connect all watchers (s)", lambda r: r.connect_s),
    ]
    for q in ("min", "p50", "p90", "p99", "p99.9", "max"):
        lines.append(row(f"latency {q} (ms)", _latency(q), 2))
    lines += [
        row("from AddEvent's start: p50 (ms)", lambda r: r.latency_from_send_ms["p50"], 2),
        row("from AddEvent's start: p99 (ms)", lambda r: r.latency_from_send_ms["p99"], 2),
        row("RSS before watchers (KiB)", lambda r: r.rss_before_kib, 0),
        row("RSS with N idle watchers (KiB)", lambda r: r.rss_idle_kib, 0),
        row("RSS per idle watcher (KiB)", lambda r: r.rss_per_watcher_kib),
        row("RSS after the events (KiB)", lambda r: r.rss_after_events_kib, 0),
        row("server CPU, watchers idle (% of a core)", lambda r: r.idle_cpu_pct),
        row("publish call p50 (ms)", lambda r: r.publish_ms.get("p50", float("nan")), 2),
        row("publish call p99 (ms)", lambda r: r.publish_ms.get("p99", float("nan")), 2),
        row("publish completion rate (events/s)", lambda r: r.achieved_rate),
        row("server CPU during events (s)", lambda r: r.server_cpu_s, 2),
        row("server CPU per delivered event (us)", _cpu_per_message),
        row("client processes' CPU during events (s)", lambda r: r.clients_cpu_s, 2, False),
        row("machine busy during events (%)", lambda r: r.machine_busy_pct, 0, False),
        row("other jobs' CPU during events (s)", lambda r: r.others_cpu_s, 2, False),
        row("pairs expected (N x E)", lambda r: r.check["expected_pairs"], 0, False),
        row("pairs received", lambda r: r.check["received_pairs"], 0, False),
        row("missing", lambda r: r.check["missing"], 0, False),
        row("duplicates", lambda r: r.check["duplicates"], 0, False),
        row("out of order", lambda r: r.check["out_of_order"], 0, False),
        row("unexpected", lambda r: r.check["unexpected"], 0, False),
        row("failed publish calls", lambda r: r.publish_errors, 0, False),
    ]
    return "\n".join(lines)


def verdict(results: dict[str, Result]) -> list[str]:
    out: list[str] = []
    g = results.get("gyoza")
    if g is not None:
        p99 = g.latency_ms.get("p99", float("nan"))
        out.append(
            f"gyoza p99 {p99:.1f} ms (target <= {TARGET_P99_MS:g} ms): "
            + ("MET" if p99 <= TARGET_P99_MS else "MISSED")
        )
        out.append(
            f"gyoza RSS per idle watcher {g.rss_per_watcher_kib:.1f} KiB "
            f"(target <= {TARGET_RSS_KIB:g} KiB): "
            + ("MET" if g.rss_per_watcher_kib <= TARGET_RSS_KIB else "MISSED")
        )
    for r in results.values():
        if r.achieved_rate < 0.95 * r.target_rate:
            out.append(
                f"{r.server}: saturated, publish calls completed at {r.achieved_rate:.1f}/s of "
                f"{r.target_rate:g}/s; the latency from AddEvent's return then leaves out the "
                f"queueing (from AddEvent's start: p99 {r.latency_from_send_ms['p99']:,.0f} ms)"
            )
        if r.publish_errors:
            out.append(
                f"{r.server}: {r.publish_errors} publish call(s) failed, left out of the "
                f"figures; the first: {r.publish_error_first}"
            )
        if not r.check_ok:
            out.append(f"CORRECTNESS PROBLEM on {r.server}: {json.dumps(r.check)}")
        if r.drain_timed_out:
            out.append(f"{r.server}: some streams had not ended within the drain timeout")
    return out


# ----------------------------------------------------------------------------- main


async def run(
    args: argparse.Namespace, servers: list[Server], fleets: list[Fleet]
) -> dict[str, Result]:
    ctx = mp.get_context("spawn")
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="gyoza-bench-") as tmp:
        for kind in args.servers:
            port = free_port()
            address = f"127.0.0.1:{port}"
            if kind == "gyoza":
                argv = [
                    sys.executable, "-m", "gyoza_grpc", "serve",
                    "--host", "127.0.0.1", "--port", str(port),
                    "--database-url", f"sqlite+aiosqlite:///{tmp}/bench.db",
                ]  # fmt: skip
            else:
                argv = [sys.executable, str(BENCH_DIR / "bare_server.py"), "--port", str(port)]
            server = Server(kind, argv, Path(tmp) / f"{kind}.log")
            servers.append(server)
            target: Target = (GyozaTarget if kind == "gyoza" else BareTarget)(server, address)
            try:
                results[kind] = await bench_one(target, args, ctx, fleets)
            except BaseException:
                print(f"[{kind}] server log tail:\n{server.log_tail()}", file=sys.stderr)
                raise
            finally:
                await target.channel.close(grace=None)
                if fleets:
                    fleets[-1].kill()
                server.stop()
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="WatchEvents fan-out: gyoza-grpc beside a bare grpc.aio streaming server."
    )
    p.add_argument("-n", "--watchers", type=int, default=1000, help="watchers on the run (1000)")
    p.add_argument("-e", "--events", type=int, default=200, help="events appended (200)")
    p.add_argument("-r", "--rate", type=float, default=50.0, help="events per second (50)")
    p.add_argument("-p", "--processes", type=int, default=2, help="client processes (2)")
    p.add_argument("-c", "--channels", type=int, default=4, help="channels per process (4)")
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    p.add_argument(
        "--servers",
        nargs="+",
        choices=("gyoza", "bare"),
        default=["gyoza", "bare"],
        help="which servers to measure, in order (both)",
    )
    p.add_argument(
        "--profile",
        choices=("python", "native"),
        help="sample each server with py-spy (.venv/bin/py-spy) while the events flow; "
        "collapsed stacks next to the JSON file",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=3.0,
        help="how long to measure the server's CPU with every watcher idle (3)",
    )
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds after the last event for every stream to end",
    )
    p.add_argument(
        "--max-seconds", type=float, default=900.0, help="hard limit for the whole run (900)"
    )
    args = p.parse_args(argv)
    if min(args.watchers, args.events, args.processes, args.channels) < 1 or args.rate <= 0:
        p.error("watchers, events, processes, channels and rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    servers: list[Server] = []
    fleets: list[Fleet] = []
    started = time.time()
    try:
        with sigterm_as_exit():
            results = asyncio.run(asyncio.wait_for(run(args, servers, fleets), args.max_seconds))
    finally:
        for fleet in fleets:
            fleet.kill()
        for server in servers:
            server.stop()
    lines = verdict(results)
    report = {
        "benchmark": "watch_fanout",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "platform": platform.platform(),
        },
        "targets": {"p99_ms": TARGET_P99_MS, "rss_per_watcher_kib": TARGET_RSS_KIB},
        "results": {k: asdict(v) for k, v in results.items()},
        "verdict": lines,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"## watch_fanout: {args.watchers} watchers, {args.events} events at {args.rate:g}/s, "
        f"{args.processes} client processes x {args.channels} channels, {os.cpu_count()} CPUs\n"
    )
    print(markdown(results))
    print()
    for line in lines:
        print(f"- {line}")
    print(f"\n(JSON: {args.output})")
    ok = all(r.check_ok for r in results.values())
    g = results.get("gyoza")
    met = g is None or (
        g.latency_ms.get("p99", float("inf")) <= TARGET_P99_MS
        and g.rss_per_watcher_kib <= TARGET_RSS_KIB
    )
    return 0 if ok and met else 1  # 1: a correctness problem or a missed target


if __name__ == "__main__":
    sys.exit(main())
