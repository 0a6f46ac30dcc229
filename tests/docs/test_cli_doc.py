"""docs/cli.md's session, run for real: `gyoza-grpc serve` as a process, the page's worker in
the background, then each command in one shell session from the repository's root, its output
(stdout and stderr as a terminal interleaves them) compared line by line with what the page
shows: ids stand for the real ones, times and column widths are not compared."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.docs.reader import DOCS, EXAMPLE_TARGET, ROOT, marked_steps, name
from tests.docs.walkthrough import Session, explain, session_env, stop
from tests.e2e.process import serve

pytestmark = pytest.mark.e2e

PAGE = DOCS / "cli.md"
STEPS = [
    "target",
    "worker",
    "workers",
    "create",
    "keep-run",
    "watch",
    "list",
    "count",
    "definition",
    "bad-input",
    "not-found",
]
QUIET = {"target", "keep-run"}


def test_the_cli_session(tmp_path: Path) -> None:
    steps = marked_steps("cli", PAGE)
    assert [s.name for s in steps] == STEPS
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///cli.db") as server:
        target = server.wait_serving()
        session = Session(ROOT, session_env(), tmp_path, replace={EXAMPLE_TARGET: target})
        with ExitStack() as stack:
            worker = None
            for step in steps:
                where = f"{name(PAGE)}:{step.line} ({step.name})"
                if step.name == "worker":  # in another terminal: left running
                    log = tmp_path / "worker.log"
                    background = session.background(step.command, where, log, "registered")
                    worker = stack.enter_context(background)
                    continue
                result = session.run(step.command, where, merge=True)
                assert result.returncode == 0, f"{where}: {explain(result)}"
                assert step.shown is not None or step.name in QUIET, f"{where}: shows nothing"
                session.check(step, result, where, loose=True)
                if step.name == "target":
                    assert session.env["GYOZA_TARGET"] == target
            assert worker is not None
            assert stop(worker) == 0, (tmp_path / "worker.log").read_text()
        assert server.stop() == 0, server.log
