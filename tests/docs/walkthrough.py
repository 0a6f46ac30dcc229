"""Running a page's steps as a reader would: one shell session whose variables carry over from
step to step, programs left running in the background, and each answer checked against what the
page shows."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.docs.reader import (
    EXAMPLE_TARGET,
    ROOT,
    UUID,
    VOLATILE_KEYS,
    Examples,
    MarkedStep,
    assert_contains,
    assert_lines_in_order,
    marked_steps,
    name,
)
from tests.e2e.process import grpcurl_dir, serve, server_env

STEP_TIMEOUT_S = 60.0
START_TIMEOUT_S = 30.0


def require(program: str, what: str) -> None:
    """Skip unless `program` is on PATH (fail under CI=true, which installs it)."""
    if shutil.which(program) is None:
        reason = f"{what} needs {program}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def session_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without the developer's GYOZA_* settings, with this Python's
    scripts (gyoza-grpc) and grpcurl first on PATH."""
    bins = [str(Path(sys.executable).parent), grpcurl_dir()]
    path = os.pathsep.join([*bins, os.environ.get("PATH", "")])
    return server_env({"PATH": path, "PYTHONUNBUFFERED": "1", **(extra or {})})


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Session:
    """A bash session: `run` each step's command with the variables the steps before left."""

    cwd: Path
    env: dict[str, str]
    scratch: Path  # the test's own directory, for what the session leaves behind
    examples: Examples = field(default_factory=Examples)
    replace: dict[str, str] = field(default_factory=dict)  # page text -> what the test uses

    def prepare(self, command: str, where: str) -> str:
        """The command as the test runs it: its example ids and addresses made real."""
        for page, real in self.replace.items():
            command = command.replace(page, real)
        unknown = self.examples.unknown_ids(command)
        assert not unknown, f"{where}: uses ids {unknown} that no earlier answer printed"
        return self.examples.substitute(command)

    def run(
        self, command: str, where: str, timeout_s: float = STEP_TIMEOUT_S, *, merge: bool = False
    ) -> Result:
        """Run one step; with `merge`, its stderr goes to its stdout, in the order a terminal
        shows them."""
        dump = self.scratch / ".step-env"
        script = (  # set -a: the variables a step sets are exported, so env -0 sees them
            f"set -a\n{self.prepare(command, where)}\n__rc=$?\n"
            f"env -0 > {shlex.quote(str(dump))}\nexit $__rc\n"
        )
        done = subprocess.run(
            ["bash", "-c", script],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            text=True,
            timeout=timeout_s,
        )
        if dump.exists():
            text = dump.read_text()
            dump.unlink()
            self.env = dict(item.split("=", 1) for item in text.split("\0") if "=" in item)
        return Result(done.returncode, done.stdout, done.stderr or "")

    def check(
        self,
        step: MarkedStep,
        result: Result,
        where: str,
        *,
        volatile: frozenset[str] = VOLATILE_KEYS,
        loose: bool = False,
    ) -> None:
        """The real answer holds what the page shows after the step."""
        if step.shown is None:
            return
        try:
            if step.shown_lang == "json":
                assert_contains(json.loads(step.shown), result.json(), self.examples, "", volatile)
            else:
                assert_lines_in_order(step.shown, result.output, self.examples, loose=loose)
        except AssertionError as err:
            raise AssertionError(f"{where}: {err}\n{explain(result)}") from err

    @contextmanager
    def background(
        self, command: str, where: str, log: Path, ready: str, timeout_s: float = START_TIMEOUT_S
    ) -> Iterator[subprocess.Popen[bytes]]:
        """Start `command` as a program left running (as in a terminal of its own: a process
        group, which `stop` signals as Ctrl-C would), wait for `ready` (a regex) in its output,
        and kill it on the way out if it still runs."""
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", self.prepare(command, where)],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(log, ready, process, where, timeout_s)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(
    log: Path,
    pattern: str,
    process: subprocess.Popen[bytes] | None,
    where: str,
    timeout_s: float = START_TIMEOUT_S,
) -> re.Match[str]:
    """The first match of `pattern` in `log`, waited for."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace")
        if (m := re.search(pattern, text)) is not None:
            return m
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{where}: exited {process.returncode} first:\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{where}: no {pattern!r} within {timeout_s}s:\n{text}")
        time.sleep(0.05)


def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGINT) -> int:
    """Stop a background program as Ctrl-C (or `sig`) in its terminal would; its exit code."""
    os.killpg(process.pid, sig)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"ignored {sig.name} for 30s") from None


def explain(result: Result) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


Check = Callable[[Result, Mapping[str, str]], None]


def grpcurl_walkthrough(
    page: Path, kind: str, checks: Mapping[str, tuple[int, Check]], tmp_path: Path
) -> None:
    """Run every `kind` step of `page` in order, in one session from the repository's root,
    against a fresh `gyoza-grpc serve` process: each exits as `checks` says (grpcurl exits 64 +
    the gRPC status code on errors), answers what the page shows, and passes its own check
    (given the session's variables)."""
    steps = marked_steps(kind, page)
    assert [s.name for s in steps] == list(checks), f"{name(page)}: steps and checks differ"
    assert all(s.shown is not None or s.name in QUIET for s in steps), "every call shows"
    with serve(tmp_path, "--port", "0", "--database-url", "sqlite+aiosqlite:///walk.db") as p:
        target = p.wait_serving()
        session = Session(ROOT, session_env(), tmp_path, replace={EXAMPLE_TARGET: target})
        for step in steps:
            where = f"{name(page)}:{step.line} ({step.name})"
            result = session.run(step.command, where)
            want, check = checks[step.name]
            assert result.returncode == want, f"{where}: {explain(result)}"
            session.check(step, result, where)
            try:
                check(result, session.env)
            except AssertionError as err:
                raise AssertionError(f"{where}: {err}\n{explain(result)}") from err
        assert p.stop() == 0, p.log


# Steps that answer nothing: setting PATH, keeping an id in a variable.
QUIET = frozenset({"path", "keep-run", "keep-other"})


def check_path(result: Result, env: Mapping[str, str]) -> None:
    """`export PATH="$PWD/.venv/bin:$PATH"` from the repository's root."""
    assert env["PATH"].split(os.pathsep)[0] == str(ROOT / ".venv" / "bin")


def check_kept(var: str) -> Check:
    """`VAR=<an id the page showed>`: the variable holds the real id."""

    def check(result: Result, env: Mapping[str, str]) -> None:
        assert UUID.fullmatch(env[var]), env.get(var)

    return check
