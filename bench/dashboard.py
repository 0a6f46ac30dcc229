"""The dashboard with 100,000 runs stored (issue 20): how long its list takes, through the
gateway and in a headless Chromium, and how soon a new run shows in it.

    .venv/bin/python bench/dashboard.py                  # 100,000 runs, SQLite
    .venv/bin/python bench/dashboard.py --runs 1000000

A `gyoza-grpc serve` and a `gyoza-grpc gateway` process over a fresh SQLite file, the runs
seeded straight into the tables (bench/suite.py's seeding; a tenth of them get another image,
a third are COMPLETED). Then, each `--repeat` times: (a) GET /runs?limit=50&view=basic (the
list's request): the first page, a page 90% of the way down the keyset chain, the first page
filtered by state and by image; (b) in Chromium: /ui/ until its table shows 50 rows, and the
same deep page; (c) a run created over gRPC until its row shows in the open list (the live
feed). Prints a table and writes bench/results/dashboard-<time>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import grpc

from bench.server_process import REPO, ServerProcess, free_port
from bench.suite import seed_runs
from gyoza.v1 import runs_pb2, runs_pb2_grpc

PAGE = 50


def _ms(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[max(0, int(len(ms) * 0.95) - 1)]
    return f"p50 {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms"


async def _times(n: int, once: Callable[[], Awaitable[None]]) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await once()
        out.append(time.perf_counter() - t)
    return out


def _vary(db_path: Path) -> None:
    """A tenth of the seeded runs get another image, a third are COMPLETED."""
    db = sqlite3.connect(db_path, timeout=60)
    try:
        db.execute("UPDATE runs SET image = 'bench/other:1' WHERE rowid % 10 = 0")
        db.execute("UPDATE runs SET state = 'COMPLETED' WHERE rowid % 3 = 0")
        db.commit()
    finally:
        db.close()


def _wait_for(proc: ServerProcess, pattern: str, limit_s: float = 60) -> str:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        proc.check_alive()
        m = re.search(pattern, proc.log_path.read_text(errors="replace"))
        if m:
            return m[1]
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not start:\n{proc.log_tail()}")


async def _http(base: str, runs: int, repeat: int) -> list[tuple[str, str]]:
    rows = []
    async with aiohttp.ClientSession(base) as http:

        async def page(query: str) -> dict[str, object]:
            async with http.get(f"/runs?limit={PAGE}&view=basic{query}") as resp:
                assert resp.status == 200, await resp.text()
                doc: dict[str, object] = await resp.json()
                return doc

        deep_id = f"seed-{int(runs * 0.1):08d}"  # 90% of the way down, newest first
        for label, query in (
            ("first page", ""),
            ("page 90% down", f"&starting_after={deep_id}"),
            ("first page, state=RUNNING (none)", "&state=RUNNING"),
            ("first page, state=COMPLETED", "&state=COMPLETED"),
            ("first page, image (a tenth)", "&image=bench/other:1"),
        ):
            await page(query)  # warm
            samples = await _times(repeat, lambda q=query: page(q))  # type: ignore[misc]
            rows.append((f"GET /runs {label}", _ms(samples)))
    return rows


async def _browser(base: str, target: str, runs: int, repeat: int) -> list[tuple[str, str]]:
    from playwright.async_api import async_playwright, expect

    rows = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        pg = await browser.new_page(viewport={"width": 1400, "height": 900})
        table_rows = pg.get_by_role("table").get_by_role("row")

        async def load(path: str) -> None:
            await pg.goto(f"{base}{path}")
            await expect(table_rows).to_have_count(PAGE + 1, timeout=30_000)  # + the header

        deep_id = f"seed-{int(runs * 0.1):08d}"
        for label, path in (
            ("/ui/ (first page)", "/ui/"),
            ("/ui/ page 90% down", f"/ui/?starting_after={deep_id}"),
        ):
            await load(path)
            samples = await _times(repeat, lambda p=path: load(p))  # type: ignore[misc]
            rows.append((f"Chromium: {label} until 50 rows show", _ms(samples)))

        await load("/ui/")
        await expect(pg.get_by_role("status").filter(has_text="Live")).to_be_visible()
        async with grpc.aio.insecure_channel(target) as ch:
            stub = runs_pb2_grpc.RunServiceStub(ch)
            samples = []
            for _ in range(repeat):
                run = (await stub.CreateRun(runs_pb2.CreateRunRequest(image="bench/live:1"))).run
                t = time.perf_counter()
                await expect(pg.get_by_role("link", name=run.id)).to_be_visible(timeout=30_000)
                samples.append(time.perf_counter() - t)
        rows.append(("Chromium: a run created over gRPC until its row shows", _ms(samples)))
        await browser.close()
    return rows


async def run(runs: int, repeat: int, work: Path) -> list[tuple[str, str]]:
    db_path = work / "dashboard.db"
    url = f"sqlite+aiosqlite:///{db_path}"
    subprocess_python = sys.executable
    port = free_port()
    migrate = ServerProcess(
        "migrate",
        [subprocess_python, "-m", "gyoza_grpc", "migrate", "--database-url", url],
        work / "migrate.log",
    )
    migrate.proc.wait()
    t = time.perf_counter()
    await seed_runs(url, 0, runs)
    _vary(db_path)
    print(f"seeded {runs:,} runs in {time.perf_counter() - t:.1f} s", flush=True)
    server = ServerProcess(
        "serve",
        [
            subprocess_python,
            "-m",
            "gyoza_grpc",
            "serve",
            "--port",
            str(port),
            "--database-url",
            url,
        ],
        work / "serve.log",
    )
    gateway = None
    try:
        target = _wait_for(server, r"serving on (\S+) ")
        gateway = ServerProcess(
            "gateway",
            [subprocess_python, "-m", "gyoza_grpc", "gateway", "--target", target, "--port", "0"],
            work / "gateway.log",
        )
        address = _wait_for(gateway, r"gateway on http://(\S+) ")
        base = f"http://{address}"
        rows = await _http(base, runs, repeat)
        rows += await _browser(base, target, runs, repeat)
        return rows
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000, help="runs stored")
    parser.add_argument("--repeat", type=int, default=20, help="samples per figure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gyoza-dashboard-") as tmp:
        rows = asyncio.run(run(args.runs, args.repeat, Path(tmp)))
    width = max(len(label) for label, _ in rows)
    lines = [f"# Dashboard with {args.runs:,} runs ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", ""]
    lines += ["```"] + [f"{label:<{width}}  {figure}" for label, figure in rows] + ["```"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dashboard-{datetime.now(UTC):%Y%m%d-%H%M%S}.md"
    path.write_text(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
