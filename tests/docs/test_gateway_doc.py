"""docs/gateway.md and docs/dashboard.md, run for real: `gyoza-grpc serve` as a process, the
pages' `gyoza-grpc gateway` command in front of it (on a free port in place of 5555), and the
gateway page's curl commands, whose JSON answers must contain what the page shows."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import pytest

from tests.docs.reader import DOCS, EXAMPLE_TARGET, ROOT, VOLATILE_KEYS, marked_steps, name
from tests.docs.walkthrough import Session, explain, require, session_env, stop, wait_for
from tests.e2e.process import serve

pytestmark = pytest.mark.e2e

GATEWAY_PAGE = DOCS / "gateway.md"
DASHBOARD_PAGE = DOCS / "dashboard.md"
PAGE_GATEWAY = "127.0.0.1:5555"
LISTENING = r"gateway on http://(\S+) "
VOLATILE = VOLATILE_KEYS | {"t"}  # an event's time


def gateway_command(command: str) -> str:
    """The pages' gateway command, on a free port (its log says which)."""
    assert "--port 5555" in command, command
    return command.replace("--port 5555", "--port 0")


def test_the_gateway_page(tmp_path: Path) -> None:
    require("curl", "the gateway page's commands")
    steps = marked_steps("gateway", GATEWAY_PAGE)
    assert [s.name for s in steps] == ["gateway", "create", "list", "count"]
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///gw.db") as server:
        target = server.wait_serving()
        session = Session(ROOT, session_env(), tmp_path, replace={EXAMPLE_TARGET: target})
        gateway_step, *calls = steps
        where = f"{name(GATEWAY_PAGE)}:{gateway_step.line} (gateway)"
        log = tmp_path / "gateway.log"
        command = gateway_command(gateway_step.command)
        with session.background(command, where, log, LISTENING) as gateway:
            session.replace[PAGE_GATEWAY] = wait_for(log, LISTENING, gateway, where)[1]
            for step in calls:
                where = f"{name(GATEWAY_PAGE)}:{step.line} ({step.name})"
                assert step.shown_lang == "json", f"{where}: no ```json answer"
                result = session.run(step.command, where)
                assert result.returncode == 0, f"{where}: {explain(result)}"
                session.check(step, result, where, volatile=VOLATILE)
            assert stop(gateway, signal.SIGTERM) == 0, log.read_text()
        assert server.stop() == 0, server.log


def test_the_dashboard_page(tmp_path: Path) -> None:
    (step,) = marked_steps("dashboard", DASHBOARD_PAGE)
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///ui.db") as server:
        target = server.wait_serving()
        session = Session(ROOT, session_env(), tmp_path, replace={EXAMPLE_TARGET: target})
        where = f"{name(DASHBOARD_PAGE)}:{step.line} ({step.name})"
        log = tmp_path / "gateway.log"
        with session.background(gateway_command(step.command), where, log, LISTENING) as gateway:
            address = wait_for(log, LISTENING, gateway, where)[1]
            # The page says: open http://127.0.0.1:5555/ui/
            assert f"`http://{PAGE_GATEWAY}/ui/`" in DASHBOARD_PAGE.read_text()
            with urllib.request.urlopen(f"http://{address}/ui/", timeout=30) as answer:
                assert answer.status == 200
                assert "<title>gyoza-grpc</title>" in answer.read().decode()
            assert stop(gateway, signal.SIGTERM) == 0, log.read_text()
        assert server.stop() == 0, server.log
