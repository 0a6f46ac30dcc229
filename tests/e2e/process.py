"""`gyoza-grpc serve` as a real process: started on a free port, waited for, stopped by signal."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_TIMEOUT_S = 30.0
_SERVING = re.compile(r"serving on (\S+):(\d+) ")


@dataclass
class ServeProcess:
    """One `python -m gyoza_grpc serve`; its stdout and stderr go to `log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    target: str = ""

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(
        self,
        timeout_s: float = STARTUP_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> str:
        """Wait for the "serving on HOST:PORT" line, then for health SERVING (over TLS with
        `credentials`); returns HOST:PORT."""
        deadline = time.monotonic() + timeout_s
        while not self.target:
            if (match := _SERVING.search(self.log)) is not None:
                self.target = f"{match[1]}:{match[2]}"
            elif self.process.poll() is not None:
                raise AssertionError(
                    f"serve exited with {self.process.returncode} before serving:\n{self.log}"
                )
            elif time.monotonic() > deadline:
                raise AssertionError(f"serve did not start within {timeout_s}s:\n{self.log}")
            else:
                time.sleep(0.05)
        with (
            grpc.insecure_channel(self.target)
            if credentials is None
            else grpc.secure_channel(self.target, credentials)
        ) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                except grpc.RpcError as err:
                    status = None
                    if time.monotonic() > deadline:
                        raise AssertionError(f"health check failed: {err}\n{self.log}") from err
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return self.target
                if time.monotonic() > deadline:
                    raise AssertionError(f"health is {status}, not SERVING:\n{self.log}")
                time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Send `sig` and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"serve ignored {sig.name} for {timeout_s}s:\n{self.log}"
            ) from None


def grpcurl_dir() -> str:
    """Where grpcurl is: beside this Python (the venv's), else on PATH. Without it the test
    skips, or fails under CI=true."""
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        return str(beside.parent)
    found = shutil.which("grpcurl")
    if found is None:
        reason = "grpcurl not found beside sys.executable or on PATH (pip install '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return str(Path(found).parent)


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without the developer's GYOZA_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYOZA_")}
    env.update(extra or {})
    return env


@contextmanager
def serve(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, log_name: str = "serve.log"
) -> Iterator[ServeProcess]:
    """Start `python -m gyoza_grpc serve ARGS` in `cwd`; kill it on the way out if still running."""
    log_path = cwd / log_name
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gyoza_grpc", "serve", *args],
            cwd=cwd,
            env=server_env() if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    proc = ServeProcess(process=process, log_path=log_path)
    try:
        yield proc
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
