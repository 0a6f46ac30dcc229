"""`gyoza-grpc serve` and `gyoza-grpc worker` as processes with API keys and mutual TLS: the
start log says who may call, a bad keys file is one line and exit 1, and a worker process with
a key and a client certificate runs a run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests.certs import make_certs
from tests.e2e.process import serve, server_env

pytestmark = pytest.mark.e2e

ADMIN_KEY = "e2e-admin-key-0123456789"
READER_KEY = "e2e-reader-key-0123456789"
WORKER_KEY = "e2e-worker-key-0123456789"
UNKNOWN_KEY = "e2e-unknown-key-0123456789"
DB = ("--database-url", "sqlite+aiosqlite:///auth.db")


def list_runs(channel: grpc.Channel, key: str | None) -> runs_pb2.ListRunsResponse | grpc.RpcError:
    metadata = None if key is None else [("x-api-key", key)]
    try:
        return runs_pb2_grpc.RunServiceStub(channel).ListRuns(
            runs_pb2.ListRunsRequest(), metadata=metadata, timeout=10
        )
    except grpc.RpcError as err:
        return err


def test_serve_with_a_keys_file_says_so_and_checks_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# test keys\nadmin:{ADMIN_KEY}\nreader:{READER_KEY}\n")
    env = server_env({"GYOZA_API_KEYS": f"worker:{WORKER_KEY}"})
    with serve(tmp_path, "--port", "0", *DB, "--api-keys-file", str(keys), env=env) as p:
        target = p.wait_serving()
        with grpc.insecure_channel(target) as ch:
            anonymous = list_runs(ch, None)
            unknown = list_runs(ch, UNKNOWN_KEY)
            reader = list_runs(ch, READER_KEY)
        assert p.stop() == 0, p.log
    assert isinstance(anonymous, grpc.RpcError)
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    assert isinstance(unknown, grpc.RpcError)
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert isinstance(reader, runs_pb2.ListRunsResponse)
    assert "auth: 3 keys (admin 1, worker 1, reader 1)" in p.log
    assert "no API keys configured" not in p.log
    assert "refused /gyoza.v1.RunService/ListRuns: unknown API key" in p.log
    for key in (ADMIN_KEY, READER_KEY, WORKER_KEY, UNKNOWN_KEY):
        assert key not in p.log


def test_serve_without_keys_warns_that_it_is_open(tmp_path: Path) -> None:
    with serve(tmp_path, "--port", "0", *DB) as p:
        p.wait_serving()
        assert p.stop() == 0, p.log
    assert (
        "WARNING gyoza_grpc.auth no API keys configured: "
        "the server is open to anyone who can reach it" in p.log
    )
    assert "plaintext" in p.log


@pytest.mark.parametrize(
    "content, env, message",
    [
        (
            "admin:short",
            {},
            "gyoza-grpc: {keys} line 1: the key must be at least 16 characters",
        ),
        (
            f"owner:{ADMIN_KEY}",
            {},
            "gyoza-grpc: {keys} line 1: unknown role 'owner' (roles: admin, worker, reader)",
        ),
        (
            f"admin:{ADMIN_KEY}",
            {"GYOZA_API_KEYS": f"reader:{ADMIN_KEY}"},
            "gyoza-grpc: GYOZA_API_KEYS item 1: the same key as {keys} line 1",
        ),
        (None, {}, "gyoza-grpc: cannot read the API keys file {keys}: No such file or directory"),
    ],
    ids=["short", "role", "twice", "missing"],
)
def test_a_bad_keys_file_is_one_line_and_exit_1(
    tmp_path: Path, content: str | None, env: dict[str, str], message: str
) -> None:
    keys = tmp_path / "keys.txt"
    if content is not None:
        keys.write_text(content + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "gyoza_grpc", "serve", "--port", "0", *DB],
        cwd=tmp_path,
        env=server_env({"GYOZA_API_KEYS_FILE": str(keys), **env}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stderr.strip() == message.format(keys=keys)
    assert ADMIN_KEY not in done.stderr + done.stdout


def test_mutual_tls_serve_and_a_worker_process_with_a_key(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "pki")
    env = server_env(
        {"GYOZA_API_KEYS": f"admin:{ADMIN_KEY},worker:{WORKER_KEY}", "GYOZA_REFLECTION": "0"}
    )
    tls = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    client = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    with serve(tmp_path, "--port", "0", *DB, *tls, "--tls-client-ca", str(certs.ca), env=env) as p:
        target = p.wait_serving(credentials=client)
        assert "mutual TLS, reflection off" in p.log
        with grpc.insecure_channel(target) as plain:
            assert isinstance(list_runs(plain, ADMIN_KEY), grpc.RpcError)
        with grpc.secure_channel(target, client) as ch:
            reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
            with pytest.raises(grpc.RpcError) as off:
                next(
                    iter(
                        reflection.ServerReflectionInfo(
                            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                            timeout=10,
                        )
                    )
                )
            assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
            runs = runs_pb2_grpc.RunServiceStub(ch)
            req = runs_pb2.CreateRunRequest(image="img")
            req.inputs.update({"x": 5})
            run = runs.CreateRun(req, metadata=[("x-api-key", ADMIN_KEY)], timeout=10).run
            worker_env = server_env(
                {
                    "GYOZA_API_KEY": WORKER_KEY,
                    "GYOZA_TLS_CLIENT_CERT": str(certs.client_cert),
                    "GYOZA_TLS_CLIENT_KEY": str(certs.client_key),
                }
            )
            op = "import json, sys; print(json.dumps({'y': json.load(sys.stdin)['x'] * 3}))"
            with (tmp_path / "worker.log").open("wb") as log:
                worker = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gyoza_grpc",
                        "worker",
                        "--target",
                        target,
                        "--tls-ca",
                        str(certs.ca),
                        "--worker-id",
                        "w-tls",
                        "--cpu",
                        "1",
                        "--command",
                        f'{sys.executable} -c "{op}"',
                    ],
                    cwd=tmp_path,
                    env=worker_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    got = runs.GetRun(
                        runs_pb2.GetRunRequest(id=run.id),
                        metadata=[("x-api-key", ADMIN_KEY)],
                        timeout=10,
                    ).run
                    if got.state == runs_pb2.RUN_STATE_COMPLETED or worker.poll() is not None:
                        break
                    time.sleep(0.1)
            finally:
                worker.terminate()
                worker.wait(30)
        assert p.stop() == 0, p.log
    worker_log = (tmp_path / "worker.log").read_text()
    assert got.state == runs_pb2.RUN_STATE_COMPLETED, worker_log
    assert dict(got.outputs) == {"y": 15}
    assert WORKER_KEY not in worker_log and WORKER_KEY not in p.log


@pytest.mark.parametrize(
    "argv, env, reflection",
    [
        ([], {}, True),
        (["--no-reflection"], {}, False),
        ([], {"GYOZA_REFLECTION": "0"}, False),
        ([], {"GYOZA_REFLECTION": "1"}, True),
    ],
)
def test_the_reflection_switch(
    argv: list[str], env: dict[str, str], reflection: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gyoza_grpc.cli import build_parser

    monkeypatch.delenv("GYOZA_REFLECTION", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert build_parser().parse_args(["serve", *argv]).reflection is reflection


def test_tls_needs_a_cert_and_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    from gyoza_grpc.cli import main

    assert main(["serve", "--tls-cert", "server.pem"]) == 2
    assert capsys.readouterr().err == "gyoza-grpc: TLS needs both --tls-cert and --tls-key\n"
