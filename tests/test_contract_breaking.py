"""CI's contract check catches a breaking change (scripts/buf-breaking.sh, docs/contract.md).

Workers run on generated stubs upgraded later than the server, so .ci/run runs
`scripts/buf-breaking.sh`: `buf breaking` against the commit before (HEAD~1) and the newest
`v*` tag. Here the script runs in a scratch git repository holding a copy of protos/: each
deliberately breaking edit, committed, fails it with buf saying what broke; an additive one
passes; and a break made before the last commit is still caught by the tag.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.process import grpcurl_dir

ROOT = Path(__file__).resolve().parents[1]
RUNS = "protos/gyoza/v1/runs.proto"
WORKERS = "protos/gyoza/v1/workers.proto"


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with this checkout's contract and check script, committed."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(ROOT / "protos", repo / "protos")
    shutil.copy(ROOT / "scripts" / "buf-breaking.sh", repo / "scripts" / "buf-breaking.sh")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the contract")
    return repo


def edit(repo: Path, path: str, old: str, new: str, message: str) -> None:
    file = repo / path
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    file.write_text(text.replace(old, new))
    git(repo, "commit", "-q", "-am", message)


def check(repo: Path, *refs: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{grpcurl_dir()}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "scripts/buf-breaking.sh", *refs],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# change: (file, old text, new text, what buf must say about it)
BREAKING = {
    "a field renamed": (
        RUNS,
        "  int32 limit = 1;\n  // Run id: return the next",
        "  int32 page_size = 1;\n  // Run id: return the next",
        'changed name from "limit" to "page_size"',
    ),
    "a field renumbered": (
        WORKERS,
        "  int32 max_runs = 2;",
        "  int32 max_runs = 9;",
        'field "2" with name "max_runs" on message "ClaimRunsRequest" was deleted',
    ),
    "a field's type changed": (
        WORKERS,
        "  int32 lease_seconds = 1;",
        "  int64 lease_seconds = 1;",
        'changed type from "int32" to "int64"',
    ),
    "an RPC removed": (
        WORKERS,
        "  rpc GetWorker(GetWorkerRequest) returns (GetWorkerResponse);\n",
        "",
        'RPC "GetWorker" on service "WorkerService" was deleted',
    ),
    "an enum value removed": (
        WORKERS,
        "  WORKER_STATE_EVICTED = 2;\n",
        "",
        'enum value "2" on enum "WorkerState" was deleted',
    ),
}


@pytest.mark.parametrize("change", list(BREAKING))
def test_a_breaking_change_fails_the_check(repo: Path, change: str) -> None:
    path, old, new, said = BREAKING[change]
    edit(repo, path, old, new, change)
    done = check(repo)
    assert done.returncode == 1, done.stdout + done.stderr
    assert said in done.stdout
    assert "breaks the contract of HEAD~1" in done.stderr


def test_an_additive_change_passes(repo: Path) -> None:
    edit(
        repo,
        WORKERS,
        "message ListWorkersRequest {}",
        "message ListWorkersRequest {\n  // Only workers with this tag.\n  string tag = 1;\n}",
        "a new field",
    )
    done = check(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keeps the contract of HEAD~1" in done.stdout


def test_the_newest_release_tag_catches_a_break_made_earlier(repo: Path) -> None:
    git(repo, "tag", "v0.1.0")
    edit(repo, WORKERS, "  int32 max_runs = 2;", "  int32 max_runs = 9;", "the break")
    edit(repo, WORKERS, "message ListWorkersRequest {}", "message ListWorkersRequest {}\n", "more")
    done = check(repo)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "keeps the contract of HEAD~1" in done.stdout
    assert re.search(r"breaks the contract of v0\.1\.0", done.stderr)


def test_a_missing_ref_is_reported_not_failed(repo: Path) -> None:
    done = check(repo)  # the repository's first commit: no HEAD~1
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no commit HEAD~1 here" in done.stdout
