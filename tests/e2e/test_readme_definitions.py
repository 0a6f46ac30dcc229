"""The README's "Op definitions" grpcurl walkthrough, run for real: `gyoza-grpc serve` as a
process over a fresh SQLite file, and the grpcurl binary.

Steps are the ```bash blocks after `<!-- readme-definitions: NAME -->` comments; the ```json or
```text block after each is what the README shows, and the real answer must contain it (as in
test_readme_grpcurl.py; the helpers are tests/readme.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.process import serve, server_env
from tests.readme import (
    README_TARGET,
    assert_contains,
    assert_lines_in_order,
    grpcurl_dir,
    marked_steps,
)

pytestmark = pytest.mark.e2e


def steps() -> list[tuple[str, str, str, str]]:
    """(name, command, shown language, shown answer) of each step, in README order."""
    out = []
    for step in marked_steps("readme-definitions"):
        assert step.shown is not None, f"README.md:{step.line}: no ```json or ```text answer"
        out.append((step.name, step.command, step.shown_lang, step.shown))
    return out


def _check_upsert(out: str, err: str) -> None:
    d = json.loads(out)["definition"]
    assert json.loads(out)["created"] is True
    assert (d["name"], d["version"]) == ("thumbnail", "1.0.0")
    assert d["input_specs"]["width"] == {"type": "INPUT_TYPE_INT", "default": 256}


def _check_create(out: str, err: str) -> None:
    run = json.loads(out)["run"]
    assert run["inputs"] == {"url": "s3://photos/cat.jpg", "width": 640, "format": "webp"}
    assert (run["op_definition"], run["definition_version"]) == ("thumbnail", "1.0.0")


def _check_bad_inputs(out: str, err: str) -> None:
    assert "Code: InvalidArgument" in err
    for field in ("inputs.size", "inputs.url", "inputs.width"):
        assert f'"field":"{field}"' in err  # the BadRequest detail, as grpcurl prints it


# name -> (grpcurl's exit code: 64 + the gRPC code on errors, checks)
CHECKS: dict[str, tuple[int, Callable[[str, str], None]]] = {
    "upsert": (0, _check_upsert),
    "create-from-definition": (0, _check_create),
    "create-bad-inputs": (64 + 3, _check_bad_inputs),  # INVALID_ARGUMENT
}


def test_readme_definitions_walkthrough(tmp_path: Path) -> None:
    found = steps()
    assert [name for name, *_ in found] == list(CHECKS)
    env = server_env({"PATH": f"{grpcurl_dir()}{os.pathsep}{os.environ.get('PATH', '')}"})
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///defs.db") as p:
        target = p.wait_serving()
        for name, command, shown_lang, shown in found:
            done = subprocess.run(
                ["bash", "-c", command.replace(README_TARGET, target)],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            want_rc, check = CHECKS[name]
            where = f"step {name!r}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            assert done.returncode == want_rc, where
            check(done.stdout, done.stderr)
            if shown_lang == "json":
                assert_contains(json.loads(shown), json.loads(done.stdout), name)
            else:
                assert_lines_in_order(shown, done.stdout + done.stderr)
        assert p.stop() == 0, p.log
