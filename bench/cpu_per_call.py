"""CPU per call: how much of the server's event-loop thread (and of all its threads) one call
costs, for A/B comparisons that throughput ratios on a shared 2-CPU machine are too noisy for.

Throughput at concurrency 32 moves by tens of percent within minutes here, with the same code;
the CPU a call costs the server moves far less. This starts a server (gyoza-grpc on a fresh
SQLite file, or bench/bare_server.py's echo), drives one call kind from a separate client
process as suite.py does, and reads the server's per-thread CPU from /proc before and after.
Variants are environment settings the server inherits; they are run in turn, `--rounds` times,
and each is reported by its median:

    .venv/bin/python bench/cpu_per_call.py get --rounds 4 shipped GYOZA_ACCESS_LOG=off
    .venv/bin/python bench/cpu_per_call.py create echo      # kinds: create add_event get echo

Output, one line per variant: calls/s, the event-loop thread's CPU µs per call ("loop") and
the whole server process's ("server"), and each round's loop figure. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `gyoza_grpc` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import EchoServer, LoadSpec, gyoza_servers, run_load, started_runs

KINDS = ("create", "add_event", "get", "echo")
SHIPPED = "shipped"


def _threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`, by thread id."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def _measure(kind: str, env: dict[str, str], seconds: float) -> dict[str, float]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the server subprocess inherits it
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if kind == "echo":
                echo = EchoServer(Path(tmp) / "echo.log", Path(tmp) / "floor.db")
                try:
                    await echo.wait_ready()
                    return await _drive(kind, echo, echo.address, (), seconds)
                finally:
                    echo.stop()
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'cpu.db'}"
            async with gyoza_servers(url, 1, Path(tmp), "cpu") as servers:
                target = servers[0].address
                ids = await started_runs(target, 1000) if kind in ("get", "add_event") else []
                return await _drive(kind, servers[0], target, tuple(ids), seconds)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _drive(
    kind: str, server: Any, target: str, ids: tuple[str, ...], seconds: float
) -> dict[str, float]:
    spec = LoadSpec(kind, (target,), 32, seconds, 1.0, ids)
    before = _threads_cpu(server.pid)
    result = await asyncio.to_thread(run_load, spec, [server])
    after = _threads_cpu(server.pid)
    calls = result["calls_per_s"] * (spec.seconds + spec.warmup)  # the warm-up's calls too
    loop_thread = str(server.pid)  # the main thread, which runs the event loop
    return {
        "calls_per_s": result["calls_per_s"],
        "loop_us": 1e6 * (after[loop_thread] - before[loop_thread]) / calls,
        "server_us": 1e6 * (sum(after.values()) - sum(before.values())) / calls,
    }


def _env(variant: str) -> dict[str, str]:
    """'NAME=value NAME2=value2', or 'shipped': no setting."""
    if variant == SHIPPED:
        return {}
    pairs = [item.split("=", 1) for item in variant.split()]
    return {k: v for k, v in pairs}


async def run(kind: str, variants: Sequence[str], rounds: int, seconds: float) -> None:
    got: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            got[v].append(await _measure(kind, _env(v), seconds))
    for v in variants:
        rows = got[v]
        loop = sorted(r["loop_us"] for r in rows)
        print(
            f"{kind} [{v}]: "
            f"{statistics.median(r['calls_per_s'] for r in rows):.0f} calls/s, "
            f"loop {statistics.median(loop):.1f} µs/call, "
            f"server {statistics.median(r['server_us'] for r in rows):.1f} µs/call "
            f"(loop each round: {', '.join(f'{x:.1f}' for x in loop)})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument(
        "variants", nargs="*", help=f"'{SHIPPED}' or env settings, e.g. 'GYOZA_ACCESS_LOG=off'"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-s", "--seconds", type=float, default=3.0)
    args = parser.parse_intermixed_args(argv)
    asyncio.run(run(args.kind, args.variants or [SHIPPED], args.rounds, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
