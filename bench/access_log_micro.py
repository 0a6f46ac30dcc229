"""Micro-benchmark: the cost of one access-log line, `_Method.finish` with metrics on.

The log goes where `configure_logging` sends it, stderr: run with stderr sent to /dev/null or a
file (``2>/dev/null``); the figures go to stdout. Each figure is the best of `--repeat` runs of
`--number` calls, in µs of this process's CPU time per call (CPU time, not wall time: on a
shared machine the time the process waits for a core is not the cost of a line):

- ``finish, no loop``: finish called back to back outside an event loop (each line written at
  once);
- ``finish + loop turn``: one finish per turn of a running asyncio loop, minus the cost of the
  bare turn; the lines are written together, FLUSH_AFTER_S (50 ms) after the first or at 256;
- ``8 finishes per turn``: eight calls ended in the same turn, per call;
- ``metrics only``: the access log off (`--access-log off`): the floor.

Run: ``.venv/bin/python bench/access_log_micro.py --format json 2>/dev/null``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import timeit
from typing import Any

from gyoza.v1 import runs_pb2
from gyoza_grpc.server.api.access_log import _Method
from gyoza_grpc.server.ops.log_format import ACCESS_LOGGER, configure_logging
from gyoza_grpc.server.ops.metrics import ServerMetrics


class _Context:
    def code(self) -> None:
        return None


def _per_turn(m: _Method, request: Any, context: Any, calls: int, turns: int) -> float:
    """Seconds per turn of a loop where `calls` finishes end in each turn."""

    async def run() -> float:
        start = time.process_time()
        for _ in range(turns):
            for _ in range(calls):
                m.finish(request, context, "OK", 0.000123, peer="ipv4:127.0.0.1:50412")
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return (time.process_time() - start) / turns

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--format", choices=("json", "text"), default="json")
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    configure_logging("info", args.format)
    m = _Method("/gyoza.v1.RunService/GetRun", ServerMetrics(), streaming=False)
    request = runs_pb2.GetRunRequest(id="0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b")
    context = _Context()

    def finish() -> None:
        m.finish(request, context, "OK", 0.000123, peer="ipv4:127.0.0.1:50412")

    def best(f: Any) -> float:
        times = timeit.repeat(f, number=args.number, repeat=args.repeat, timer=time.process_time)
        return min(times) / args.number * 1e6

    def best_turn(calls: int) -> float:
        turns = args.number // calls
        return min(_per_turn(m, request, context, calls, turns) for _ in range(args.repeat)) * 1e6

    def bare_turn() -> float:
        return min(_per_turn(m, request, context, 0, args.number) for _ in range(args.repeat)) * 1e6

    figures = {"finish, no loop": best(finish)}
    bare = bare_turn()
    figures["finish + loop turn"] = best_turn(1) - bare
    figures["8 finishes per turn"] = (best_turn(8) - bare) / 8
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    figures["metrics only"] = best(finish)
    for name, us in figures.items():
        print(f"{args.format:4}  {name:20} {us:6.2f} µs")


if __name__ == "__main__":
    main()
