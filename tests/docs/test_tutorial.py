"""docs/tutorial.md's grpcurl walkthrough (runs, events, cancels, the timeline, op
definitions), run for real: `gyoza-grpc serve` as a process over a fresh SQLite file, and the
grpcurl binary. Every `<!-- tutorial: NAME -->` step runs in one shell session, its answer must
contain what the page shows, and each step has its own checks below."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.docs.reader import DOCS
from tests.docs.walkthrough import Check, Result, check_kept, check_path, grpcurl_walkthrough

pytestmark = pytest.mark.e2e

TUTORIAL = DOCS / "tutorial.md"
Env = Mapping[str, str]


def seq(event: dict[str, str]) -> int:
    return int(event.get("seq", 0))  # int64 is a JSON string; 0 is left out


def _check_list(r: Result, v: Env) -> None:
    assert {"gyoza.v1.RunService", "grpc.health.v1.Health"} <= set(r.stdout.split())


def _check_describe(r: Result, v: Env) -> None:
    for rpc in ("CreateRun", "GetRun", "ListRuns", "AddEvent", "CancelRun", "ListEvents"):
        assert f"rpc {rpc} (" in r.stdout


def _check_health(r: Result, v: Env) -> None:
    assert r.json() == {"status": "SERVING"}


def _check_create(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert run["state"] == "RUN_STATE_PENDING"
    assert (run["current_attempt"], run["priority"], run.get("progress", 0)) == (1, 5, 0)
    assert run["inputs"] == {"width": 640, "format": "webp"}
    assert run["last_seq"] == "-1"


def _check_create_other(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert (run["state"], run["priority"]) == ("RUN_STATE_PENDING", 9)
    assert run["id"] != v["RUN"]


def _check_list_runs(r: Result, v: Env) -> None:
    page = r.json()
    assert [run["id"] for run in page["data"]] == [v["OTHER"], v["RUN"]]  # newest first
    assert not page.get("has_more", False)


def _check_list_runs_filtered(r: Result, v: Env) -> None:
    page = r.json()
    assert [run["id"] for run in page["data"]] == [v["OTHER"]]
    assert page["has_more"] is True


def _check_get(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert (run["id"], run["state"]) == (v["RUN"], "RUN_STATE_PENDING")


def _check_started(r: Result, v: Env) -> None:
    out = r.json()
    assert out["run"]["state"] == "RUN_STATE_RUNNING"
    assert out["run"]["execution_summary"]["worker_id"] == "worker-1"
    assert (seq(out["event"]), out["event"]["type"]) == (0, "EVENT_TYPE_STARTED")


def _check_progress(r: Result, v: Env) -> None:
    out = r.json()
    assert (out["run"]["state"], out["run"]["progress"]) == ("RUN_STATE_RUNNING", 40)
    assert (seq(out["event"]), out["event"]["progress"]) == (1, 40)


def _check_completed(r: Result, v: Env) -> None:
    out = r.json()
    run = out["run"]
    assert (run["state"], run["progress"]) == ("RUN_STATE_COMPLETED", 100)
    assert run["outputs"] == {"url": "s3://thumbs/cat.webp"}
    assert int(run["execution_summary"].get("duration_ms", 0)) >= 0
    assert seq(out["event"]) == 2


def _check_cancel(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert (run["id"], run["state"]) == (v["OTHER"], "RUN_STATE_CANCELLED")


def _check_cancel_completed(r: Result, v: Env) -> None:
    assert "Code: FailedPrecondition" in r.stderr
    assert "run is already in terminal state COMPLETED" in r.stderr


def _check_events(r: Result, v: Env) -> None:
    events = r.json()["events"]
    assert [seq(e) for e in events] == [0, 1, 2]
    assert [e["type"] for e in events] == [
        "EVENT_TYPE_STARTED",
        "EVENT_TYPE_PROGRESS",
        "EVENT_TYPE_COMPLETED",
    ]
    assert {e["run_id"] for e in events} == {v["RUN"]}


def _check_events_after(r: Result, v: Env) -> None:
    (event,) = r.json()["events"]
    assert (seq(event), event["type"]) == (0, "EVENT_TYPE_CANCELLED")
    assert event["msg"] == "superseded by a newer request"


def _check_upsert(r: Result, v: Env) -> None:
    d = r.json()["definition"]
    assert r.json()["created"] is True
    assert (d["name"], d["version"]) == ("thumbnail", "1.0.0")
    assert d["input_specs"]["width"] == {"type": "INPUT_TYPE_INT", "default": 256}


def _check_create_from_definition(r: Result, v: Env) -> None:
    run = r.json()["run"]
    assert run["inputs"] == {"url": "s3://photos/cat.jpg", "width": 640, "format": "webp"}
    assert (run["op_definition"], run["definition_version"]) == ("thumbnail", "1.0.0")


def _check_bad_inputs(r: Result, v: Env) -> None:
    assert "Code: InvalidArgument" in r.stderr
    for field in ("inputs.size", "inputs.url", "inputs.width"):
        assert json.dumps({"field": field})[1:-1].replace(" ", "") in r.stderr  # BadRequest


# step -> (exit code, checks)
CHECKS: dict[str, tuple[int, Check]] = {
    "path": (0, check_path),
    "list": (0, _check_list),
    "describe": (0, _check_describe),
    "health": (0, _check_health),
    "health-service": (0, _check_health),
    "create": (0, _check_create),
    "keep-run": (0, check_kept("RUN")),
    "create-other": (0, _check_create_other),
    "keep-other": (0, check_kept("OTHER")),
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
    "upsert": (0, _check_upsert),
    "create-from-definition": (0, _check_create_from_definition),
    "create-bad-inputs": (64 + 3, _check_bad_inputs),  # INVALID_ARGUMENT
}


def test_tutorial_with_grpcurl(tmp_path: Path) -> None:
    grpcurl_walkthrough(TUTORIAL, "tutorial", CHECKS, tmp_path)
