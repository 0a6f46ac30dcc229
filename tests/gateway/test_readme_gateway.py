"""The README's "REST gateway" curl examples, run for real: `gyoza-grpc serve` and
`gyoza-grpc gateway` as processes, and curl. Steps are the ```bash blocks after
`<!-- readme-gateway: NAME -->`; the ```json block after each must be contained in the answer."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.process import serve
from tests.gateway.live import gateway_process
from tests.readme import assert_contains, marked_steps

pytestmark = pytest.mark.e2e

README_GATEWAY = "127.0.0.1:5555"
VOLATILE = frozenset({"id", "created_at", "updated_at", "t"})


def steps() -> list[tuple[str, str, Any]]:
    """(name, command, shown JSON) of each step, in README order."""
    out = []
    for step in marked_steps("readme-gateway"):
        assert step.shown_lang == "json", f"README.md:{step.line}: no ```json answer"
        out.append((step.name, step.command, json.loads(step.shown or "")))
    return out


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
