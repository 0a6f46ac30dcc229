"""The gyoza-grpc worker SDK: a Worker that heartbeats, claims runs that fit its resources and
runs each with a handler, plus a command handler that makes `gyoza-grpc worker` a real worker.

    from gyoza_grpc.worker import RunContext, Worker

    def double(inputs: dict, ctx: RunContext) -> dict:
        ctx.progress(50)
        return {"y": inputs["x"] * 2}

    asyncio.run(Worker("127.0.0.1:50051", "w1", double, cpu=2).run(handle_signals=True))

Inputs arrive as a plain dict, with whole numbers as ints (a Struct carries every number as a
double: 3.0 comes back as 3).
"""

from __future__ import annotations

from gyoza_grpc.domain.placement import Gpu
from gyoza_grpc.worker.claims import ClaimedRun
from gyoza_grpc.worker.context import RunContext
from gyoza_grpc.worker.execution import Handler
from gyoza_grpc.worker.reporter import Fenced, ReportFailed
from gyoza_grpc.worker.runner import Worker, WorkerError
from gyoza_grpc.worker.subprocess_executor import CommandFailed, CommandHandler

__all__ = [
    "ClaimedRun",
    "CommandFailed",
    "CommandHandler",
    "Fenced",
    "Gpu",
    "Handler",
    "ReportFailed",
    "RunContext",
    "Worker",
    "WorkerError",
]
