"""`gyoza-grpc serve` as a process: first start, signals, restarts, flags and environment."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests.e2e.process import serve, server_env

pytestmark = pytest.mark.e2e

# With no call in flight, a stop is immediate; the bound leaves room for a loaded machine.
PROMPT_STOP_S = 5.0


def _create_run(target: str, image: str) -> str:
    with grpc.insecure_channel(target) as channel:
        stub = runs_pb2_grpc.RunServiceStub(channel)
        return str(stub.CreateRun(runs_pb2.CreateRunRequest(image=image), timeout=10).run.id)


def _get_run(target: str, run_id: str) -> runs_pb2.Run:
    with grpc.insecure_channel(target) as channel:
        stub = runs_pb2_grpc.RunServiceStub(channel)
        run: runs_pb2.Run = stub.GetRun(runs_pb2.GetRunRequest(id=run_id), timeout=10).run
        return run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_stops_serve_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    with serve(tmp_path, "--port", "0") as p:
        target = p.wait_serving()
        _create_run(target, "img")
        started = time.monotonic()
        code = p.stop(sig)
        elapsed = time.monotonic() - started
    assert code == 0, p.log
    assert elapsed < PROMPT_STOP_S, f"{sig.name} took {elapsed:.1f}s"
    assert "shutting down" in p.log and "stopped" in p.log, p.log
    assert "Traceback" not in p.log, p.log


def test_first_start_creates_the_database_and_a_restart_keeps_it(tmp_path: Path) -> None:
    db = tmp_path / "data" / "nested" / "gyoza.db"
    assert not db.parent.exists()
    url = f"sqlite+aiosqlite:///{db}"
    with serve(tmp_path, "--port", "0", "--database-url", url) as p:
        run_id = _create_run(p.wait_serving(), "first")
        assert db.exists()
        assert p.stop() == 0, p.log
    with serve(tmp_path, "--port", "0", "--database-url", url, log_name="again.log") as p:
        run = _get_run(p.wait_serving(), run_id)
        assert (run.image, run.state) == ("first", runs_pb2.RUN_STATE_PENDING)
        assert p.stop() == 0, p.log


def test_default_database_is_gyoza_db_in_the_working_directory(tmp_path: Path) -> None:
    with serve(tmp_path, "--port", "0") as p:
        p.wait_serving()
        assert (tmp_path / "gyoza.db").exists()
        assert p.stop() == 0, p.log


def test_environment_configures_serve(tmp_path: Path) -> None:
    env = server_env(
        {
            "GYOZA_HOST": "127.0.0.1",
            "GYOZA_PORT": "0",
            "GYOZA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'from-env.db'}",
        }
    )
    with serve(tmp_path, env=env) as p:
        target = p.wait_serving()
        assert target.startswith("127.0.0.1:")
        _create_run(target, "img")
        assert (tmp_path / "from-env.db").exists()
        assert not (tmp_path / "gyoza.db").exists()
        assert p.stop() == 0, p.log


def test_a_busy_port_is_an_error_not_a_shared_port(tmp_path: Path) -> None:
    with serve(tmp_path, "--port", "0") as first:
        port = first.wait_serving().rsplit(":", 1)[1]
        second = subprocess.run(
            [sys.executable, "-m", "gyoza_grpc", "serve", "--port", port],
            cwd=tmp_path,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr
        assert first.stop() == 0, first.log


@pytest.mark.parametrize(
    "url",
    ["not-a-url", "postgresql+asyncpg://gyoza:secret@127.0.0.1:1/gyoza"],
    ids=["unparsable", "unreachable"],
)
def test_a_bad_database_is_one_line_and_exit_1(tmp_path: Path, url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gyoza_grpc", "serve", "--port", "0", "--database-url", url],
        cwd=tmp_path,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith("gyoza-grpc: "), done.stderr
    assert "Traceback" not in done.stderr and "secret" not in done.stderr, done.stderr
