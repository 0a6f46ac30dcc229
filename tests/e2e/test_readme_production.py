"""The README's "Running in production" walkthrough, run for real: keys made by its commands,
`gyoza-grpc serve` with them (then with mutual TLS, over certificates from tests/certs.py with
the README's file names), and grpcurl with and without a key.

Steps are the ```bash blocks after `<!-- readme-production: NAME -->` comments, run in order in
one directory; the variables a step sets carry over to the next. A `serve` step starts the
server with the README's arguments (plus a free port and a fresh SQLite file) in place of the
one before; the ```text shown after it must be in the server's log. After any other step, the
```json or ```text shown must be in grpcurl's answer (as in test_readme_grpcurl.py).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.certs import make_certs
from tests.e2e.process import ServeProcess, serve, server_env
from tests.readme import (
    README_TARGET,
    assert_contains,
    assert_lines_in_order,
    grpcurl_dir,
    marked_steps,
)

pytestmark = pytest.mark.e2e

# name -> grpcurl's exit code (64 + the gRPC status code on errors)
EXIT_CODES = {
    "keys": 0,
    "serve": 0,
    "call": 0,
    "no-key": 64 + 16,  # UNAUTHENTICATED
    "wrong-role": 64 + 7,  # PERMISSION_DENIED
    "tls-serve": 0,
    "tls-call": 0,
}


def steps() -> list[tuple[str, str, str, str]]:
    """(name, command, shown language or "", shown answer or "") of each step, in README order."""
    return [
        (step.name, step.command, step.shown_lang, step.shown or "")
        for step in marked_steps("readme-production")
    ]


def run_step(command: str, env: dict[str, str], cwd: Path) -> tuple[Any, dict[str, str]]:
    """Run `command` in bash with `env`; also return the environment it leaves."""
    dump = cwd / ".step-env"
    script = f"{command}\n__rc=$?\nset -a\nenv -0 > {shlex.quote(str(dump))}\nexit $__rc\n"
    done = subprocess.run(
        ["bash", "-c", f"set -a\n{script}"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = dict(item.split("=", 1) for item in dump.read_text().split("\0") if "=" in item)
    return done, after


def start(
    stack: ExitStack, cwd: Path, command: str, certs_dir: Path, n: int
) -> tuple[ServeProcess, str]:
    argv = shlex.split(command)
    assert argv[:2] == ["gyoza-grpc", "serve"], command
    args = [*argv[2:], "--port", "0", "--database-url", "sqlite+aiosqlite:///production.db"]
    p = stack.enter_context(serve(cwd, *args, log_name=f"serve-{n}.log"))
    credentials = None
    if "--tls-cert" in args:
        credentials = grpc.ssl_channel_credentials(
            (certs_dir / "ca.pem").read_bytes(),
            (certs_dir / "client-key.pem").read_bytes(),
            (certs_dir / "client.pem").read_bytes(),
        )
    return p, p.wait_serving(credentials=credentials)


def test_readme_production_walkthrough(tmp_path: Path) -> None:
    found = steps()
    assert [name for name, *_ in found] == list(EXIT_CODES)
    make_certs(tmp_path)  # ca.pem, server.pem, server-key.pem, client.pem, client-key.pem
    env = server_env({"PATH": f"{grpcurl_dir()}{os.pathsep}{os.environ.get('PATH', '')}"})
    server: ServeProcess | None = None
    target = README_TARGET
    with ExitStack() as stack:
        for n, (name, command, shown_lang, shown) in enumerate(found):
            if name.endswith("serve"):
                if server is not None:
                    assert server.stop() == 0, server.log
                server, target = start(stack, tmp_path, command, tmp_path, n)
                for line in shown.splitlines():
                    assert line in server.log, f"step {name!r}: {line!r} not in\n{server.log}"
                continue
            done, env = run_step(command.replace(README_TARGET, target), env, tmp_path)
            where = f"step {name!r}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            assert done.returncode == EXIT_CODES[name], where
            if shown_lang == "json":
                assert_contains(json.loads(shown), json.loads(done.stdout), name)
            elif shown_lang == "text":
                assert_lines_in_order(shown, done.stdout + done.stderr)
        assert server is not None
        assert server.stop() == 0, server.log
        keys = [env["ADMIN_KEY"], env["WORKER_KEY"]]
    assert (tmp_path / "keys.txt").stat().st_mode & 0o077 == 0  # umask 077
    for log in tmp_path.glob("serve-*.log"):
        assert all(key not in log.read_text() for key in keys)
