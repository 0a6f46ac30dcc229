"""docs/production.md, run for real: keys made by its commands, `gyoza-grpc serve` with them
(then with mutual TLS, over certificates from tests/certs.py with the page's file names, then
with JSON logs and metrics), grpcurl with and without a key, workers with the worker key, the
access log line and the metrics the page shows.

Steps are the page's `<!-- production: NAME -->` blocks, run in order in one shell session in
a directory holding the keys, the certificates and a copy of `examples/`. A `serve` step starts
the server with the page's arguments (plus a free port and one SQLite file) in place of the one
before, and what the page shows after it must be in its log; a `worker` step starts the worker
until it registers; a ```text step without a command is a line the server's log must hold.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from tests.certs import make_certs
from tests.docs.reader import DOCS, EXAMPLE_TARGET, ROOT, Examples, assert_contains, name
from tests.docs.reader import marked_steps as steps_of
from tests.docs.walkthrough import Session, explain, require, session_env, stop, wait_for
from tests.e2e.process import ServeProcess

pytestmark = pytest.mark.e2e

PAGE = DOCS / "production.md"
DATABASE = "sqlite+aiosqlite:///production.db"
# name -> exit code of the step's command (grpcurl: 64 + the gRPC status code on errors)
EXIT_CODES = {
    "keys": 0,
    "serve": None,  # started, not run to the end
    "call": 0,
    "no-key": 64 + 16,  # UNAUTHENTICATED
    "wrong-role": 64 + 7,  # PERMISSION_DENIED
    "worker": None,
    "tls-serve": None,
    "tls-call": 0,
    "tls-worker": None,
    "serve-json": None,
    "call-json": 64 + 5,  # NOT_FOUND
    "access-line": None,  # a line of the server's log
    "metrics": 0,
}
PAGE_METRICS = "127.0.0.1:9100"


def assert_in_log(shown: str, log: str, examples: Examples, where: str) -> None:
    """Each line shown is in the log: a JSON line as a JSON line holding its fields (time,
    duration and peer differ), any other line as a part of a line."""
    records = []
    for line in log.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    for line in shown.splitlines():
        if not line.startswith("{"):
            assert line in log, f"{where}: {line!r} not in the server's log:\n{log}"
            continue
        want = json.loads(line)
        for record in records:
            try:
                assert_contains(want, record, examples)
            except AssertionError:
                continue
            break
        else:
            raise AssertionError(f"{where}: no log line holds {line}\n{log}")


def test_running_in_production(tmp_path: Path) -> None:
    steps = steps_of("production", PAGE, langs=("bash", "text"))
    assert [s.name for s in steps] == list(EXIT_CODES)
    require("curl", "the metrics step")
    make_certs(tmp_path)  # ca.pem, server.pem, server-key.pem, client.pem, client-key.pem
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    session = Session(tmp_path, session_env(), tmp_path)
    client_tls = grpc.ssl_channel_credentials(
        (tmp_path / "ca.pem").read_bytes(),
        (tmp_path / "client-key.pem").read_bytes(),
        (tmp_path / "client.pem").read_bytes(),
    )
    server: ServeProcess | None = None
    logs: list[Path] = []
    with ExitStack() as stack:
        for n, step in enumerate(steps):
            where = f"{name(PAGE)}:{step.line} ({step.name})"
            if step.name.endswith("serve") or step.name.startswith("serve"):
                if server is not None:
                    assert stop(server.process, signal.SIGTERM) == 0, server.log
                page_argv = step.command.replace("--metrics-port 9100", "--metrics-port 0")
                argv = shlex.split(page_argv)
                assert argv[0] == "gyoza-grpc" and "serve" in argv, step.command
                command = shlex.join([*argv, "--port", "0", "--database-url", DATABASE])
                log = tmp_path / f"serve-{n}.log"
                logs.append(log)
                process = stack.enter_context(
                    session.background(command, where, log, r"serving on \S+:\d+ ")
                )
                server = ServeProcess(process, log)
                tls = client_tls if "--tls-cert" in argv else None
                session.replace[EXAMPLE_TARGET] = server.wait_serving(credentials=tls)
                if "--metrics-port" in argv:
                    m = wait_for(log, r"metrics on http://(\S+)/metrics", process, where)
                    session.replace[PAGE_METRICS] = m[1]
                shown = session.prepare(step.shown or "", where)
                assert_in_log(shown, server.log, session.examples, where)
                continue
            if step.lang == "text":  # a line of the server's log (written within moments)
                assert server is not None
                shown = session.prepare(step.command, where)
                deadline = time.monotonic() + 15
                while True:
                    try:
                        assert_in_log(shown, server.log, Examples(), where)
                        break
                    except AssertionError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                continue
            if step.name.endswith("worker"):
                session.env["GYOZA_TARGET"] = session.replace[EXAMPLE_TARGET]
                log = tmp_path / f"{step.name}.log"
                with session.background(step.command, where, log, "registered") as worker:
                    if step.name == "worker":  # it runs the run the page created
                        wait_for(log, r"attempt 1 completed", worker, where)
                    assert stop(worker) == 0, log.read_text()
                continue
            result = session.run(step.command, where)
            assert result.returncode == EXIT_CODES[step.name], f"{where}: {explain(result)}"
            session.check(step, result, where)
        assert server is not None
        assert stop(server.process, signal.SIGTERM) == 0, server.log
    keys = [session.env["ADMIN_KEY"], session.env["WORKER_KEY"]]
    assert (tmp_path / "keys.txt").stat().st_mode & 0o077 == 0  # umask 077
    assert len(logs) == 3
    for path in [*logs, *tmp_path.glob("*worker.log")]:
        assert all(key not in path.read_text() for key in keys), f"a key in {path.name}"
    assert re.search(r"run \S+ attempt 1 completed", (tmp_path / "worker.log").read_text())
