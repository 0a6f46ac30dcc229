"""examples/wordcount: its op follows the contract as a command, and the image its Dockerfile
builds runs it on a docker worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.worker import Worker
from gyoza_grpc.worker.context import Note, RunContext
from gyoza_grpc.worker.subprocess_executor import CommandFailed, CommandHandler
from tests import docker_engine
from tests.conftest import served
from tests.worker.helpers import make_claim
from tests.worker.test_worker import until_state, working

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wordcount"


async def test_the_example_op_counts_words_under_the_contract() -> None:
    ctx = RunContext(make_claim("wc-run"), "w")
    handler = CommandHandler([sys.executable, str(EXAMPLE / "op.py")])
    outputs = await handler({"text": "The cat and the hat.\nThe end", "top": 2}, ctx)
    assert outputs == {"words": 7, "top": [["the", 3], ["cat", 1]]}
    ctx.close()
    notes: list[Note] = []
    while (batch := await ctx.next_notes()) is not None:
        notes.extend(batch)
    assert Note(msg="counting words for run wc-run") in notes
    assert notes[-1] == Note(progress=100)
    with pytest.raises(CommandFailed, match="exited with code 2: text must be a string, got int"):
        await handler({"text": 3}, RunContext(make_claim(), "w"))


async def test_the_example_image_runs_on_a_docker_worker(sqlite_url: str) -> None:
    """The Dockerfile built on a local Debian python image (no registry here), then a run of
    it through a docker worker: the image's own command is the op."""
    base = docker_engine.require_python_image()
    tag = "gyoza-test/wordcount:1"
    await asyncio.to_thread(
        subprocess.run,
        ["docker", "build", "-q", "-t", tag, "--build-arg", f"BASE={base}", str(EXAMPLE)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    from gyoza_grpc.worker.docker_executor import DockerHandler

    async with served(sqlite_url) as gs, grpc.aio.insecure_channel(gs.target) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        req = runs_pb2.CreateRunRequest(image=tag, constraints=runs_pb2.Constraints(ram_mb=256))
        req.inputs.update({"text": "to be or not to be", "top": 1})
        run = (await runs.CreateRun(req)).run
        worker = Worker(gs.target, "ex", DockerHandler(), cpu=1, ram_mb=1000)
        async with working(worker):
            done = await until_state(runs, run.id, runs_pb2.RUN_STATE_COMPLETED, timeout_s=60)
    assert dict(done.outputs)["words"] == 6
    assert [list(x) for x in done.outputs["top"]] == [["to", 2]]
