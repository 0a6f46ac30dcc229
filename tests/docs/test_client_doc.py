"""docs/client.md's examples, each run as a Python process against a `gyoza-grpc serve` process
(GYOZA_TARGET set to it), its output compared with what the page shows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.reader import DOCS, MarkedStep, blocks, marked_steps
from tests.e2e.process import serve, server_env

pytestmark = pytest.mark.e2e

DOC = DOCS / "client.md"
EXAMPLES = marked_steps("client-example", DOC, langs=("python",))
EXAMPLE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(tmp_path_factory.mktemp("docs"), "--port", "0") as process:
        yield process.wait_serving()
        assert process.stop() == 0, process.log


def test_every_example_is_found() -> None:
    names = [e.name for e in EXAMPLES]
    assert len(names) == len(set(names)) and len(names) >= 7, names
    python = [b for b in blocks(DOC.read_text().splitlines()) if b.lang == "python"]
    assert len(python) == len(EXAMPLES)  # none left untested


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example(example: MarkedStep, target: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-"],
        input=example.command,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=server_env({"GYOZA_TARGET": target}),
        timeout=EXAMPLE_TIMEOUT_S,
    )
    where = f"docs/client.md:{example.line} ({example.name})"
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"
    if example.shown is not None:
        assert done.stdout.rstrip("\n") == example.shown, f"{where} printed:\n{done.stdout}"
