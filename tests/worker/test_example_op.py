"""examples/wordcount: its op follows the contract as a command, and its Dockerfile runs it
as the image's own command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gyoza_grpc.worker.context import Note, RunContext
from gyoza_grpc.worker.subprocess_executor import CommandFailed, CommandHandler
from tests.worker.helpers import make_claim

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


def test_the_dockerfile_runs_the_op_as_its_command() -> None:
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    assert "COPY op.py /op/op.py" in dockerfile
    assert 'CMD ["python3", "/op/op.py"]' in dockerfile
