"""README.md: its two set-up commands are the ones CI runs, its grpcurl taste runs for real
against `gyoza-grpc serve`, and it stays short enough to read in two minutes."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.docs.reader import README, ROOT, marked_steps
from tests.docs.walkthrough import Check, Result, check_kept, check_path, grpcurl_walkthrough

CI_SCRIPT = ROOT / ".ci" / "run"
# About two minutes of reading at 250 words a minute, code blocks aside.
MAX_PROSE_WORDS = 600


def ci_command(variable: str) -> str:
    """The value .ci/run gives one of its command variables (a single-quoted literal)."""
    m = re.search(rf"^{variable}=('[^']*')$", CI_SCRIPT.read_text(), re.M)
    assert m is not None, f".ci/run has no {variable}='...'"
    (value,) = shlex.split(m[1])
    return value


def test_the_set_up_commands_are_the_ones_ci_runs() -> None:
    steps = {s.name: s.command for s in marked_steps("ci", README)}
    assert steps == {
        "serve": ci_command("SERVE_COMMAND"),
        "test": ci_command("TEST_COMMAND"),
    }
    # .ci/run greps README.md for each as a whole line.
    lines = README.read_text().splitlines()
    assert all(command in lines for command in steps.values())


def test_the_readme_reads_in_two_minutes() -> None:
    prose = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    assert len(prose.split()) <= MAX_PROSE_WORDS, "move the detail to docs/"


Env = Mapping[str, str]


def _check_create(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert (run["state"], run["inputs"]) == ("RUN_STATE_PENDING", {"width": 640})


def _check_started(r: Result, v: Env) -> None:
    out = r.json()
    assert (out["run"]["id"], out["run"]["state"]) == (v["RUN"], "RUN_STATE_RUNNING")
    assert out["event"].get("seq", "0") == "0"


def _check_completed(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert (run["id"], run["state"], run["progress"]) == (v["RUN"], "RUN_STATE_COMPLETED", 100)


def _check_get(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert (run["id"], run["outputs"]) == (v["RUN"], {"url": "s3://thumbs/cat.webp"})


def _check_events(r: Result, v: Env) -> None:
    events = r.json()["events"]
    assert [e["type"] for e in events] == ["EVENT_TYPE_STARTED", "EVENT_TYPE_COMPLETED"]
    assert {e["run_id"] for e in events} == {v["RUN"]}


CHECKS: dict[str, tuple[int, Check]] = {
    "path": (0, check_path),
    "create": (0, _check_create),
    "keep-run": (0, check_kept("RUN")),
    "started": (0, _check_started),
    "completed": (0, _check_completed),
    "get": (0, _check_get),
    "events": (0, _check_events),
}


@pytest.mark.e2e
def test_the_readme_taste_with_grpcurl(tmp_path: Path) -> None:
    grpcurl_walkthrough(README, "taste", CHECKS, tmp_path)
