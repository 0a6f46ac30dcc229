"""`gyoza-grpc gateway` as a real process, in front of a `gyoza-grpc serve` process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.process import server_env

_LISTENING = re.compile(r"gateway on http://(\S+) ")


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
