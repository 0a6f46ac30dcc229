"""The README's "REST gateway" curl examples, run for real: `gyoza-grpc serve` and
`gyoza-grpc gateway` as processes, and curl. Steps are the ```bash blocks after
`<!-- readme-gateway: NAME -->`; the ```json block after each must be contained in the answer."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.process import serve, server_env
from tests.readme import assert_contains, marked_steps

pytestmark = pytest.mark.e2e

README_GATEWAY = "127.0.0.1:5555"
_LISTENING = re.compile(r"gateway on http://(\S+) ")
VOLATILE = frozenset({"id", "created_at", "updated_at", "t"})


def steps() -> list[tuple[str, str, Any]]:
    """(name, command, shown JSON) of each step, in README order."""
    out = []
    for step in marked_steps("readme-gateway"):
        assert step.shown_lang == "json", f"README.md:{step.line}: no ```json answer"
        out.append((step.name, step.command, json.loads(step.shown or "")))
    return out


@contextmanager
def gateway_process(cwd: Path, target: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    log_path = cwd / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gyoza_grpc", "gateway", "--target", target, "--port", "0"],
            cwd=cwd,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while (m := _LISTENING.search(log_path.read_text())) is None:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield process, m[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_readme_gateway_examples(tmp_path: Path) -> None:
    found = steps()
    assert [name for name, *_ in found] == ["create", "list"]
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///gw.db") as server:
        target = server.wait_serving()
        with gateway_process(tmp_path, target) as (gateway, address):
            for name, command, shown in found:
                done = subprocess.run(
                    ["bash", "-c", command.replace(README_GATEWAY, address)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, (name, done.stderr)
                assert_contains(shown, json.loads(done.stdout), name, VOLATILE)
            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait(15) == 0
        assert server.stop() == 0, server.log
