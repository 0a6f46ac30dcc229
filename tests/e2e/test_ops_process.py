"""`gyoza-grpc serve --log-format json --metrics-port 0` as a process: every line is JSON,
each RPC has its line, /metrics answers, and SIGTERM still stops it cleanly."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from tests.e2e.process import serve, server_env

pytestmark = pytest.mark.e2e

_METRICS = re.compile(r"metrics on http://(\S+?)/metrics")


def test_json_logs_and_metrics_from_the_command_line(tmp_path: Path) -> None:
    env = server_env({"GYOZA_LOG_FORMAT": "json"})
    with serve(tmp_path, "--port", "0", "--metrics-port", "0", env=env) as p:
        target = p.wait_serving()
        with grpc.insecure_channel(target) as channel:
            stub = runs_pb2_grpc.RunServiceStub(channel)
            run = stub.CreateRun(runs_pb2.CreateRunRequest(image="img"), timeout=10).run
            stub.GetRun(
                runs_pb2.GetRunRequest(id=run.id), metadata=[("x-api-key", "hunter2")], timeout=10
            )
        match = _METRICS.search(p.log)
        assert match is not None, p.log
        with urllib.request.urlopen(f"http://{match[1]}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert 'gyoza_rpc_requests_total{code="OK",method="gyoza.v1.RunService/GetRun"} 1.0' in body
        assert p.stop(signal.SIGTERM) == 0, p.log
    lines = [json.loads(line) for line in p.log.splitlines() if line.strip()]
    rpcs = [d for d in lines if d["logger"] == "gyoza_grpc.access"]
    gets = [d for d in rpcs if d["method"] == "gyoza.v1.RunService/GetRun"]
    assert len(gets) == 1 and gets[0]["run_id"] == run.id and gets[0]["code"] == "OK"
    assert {"time", "level", "message", "duration_ms", "peer"} <= gets[0].keys()
    assert "hunter2" not in p.log
    assert any(d["message"] == "stopped" for d in lines)


def test_text_access_lines_in_order_before_shutting_down(tmp_path: Path) -> None:
    """The access lines are queued and written once per turn of the loop: they still come
    in the order of the calls, in the text layout, before the lines that follow them."""
    env = server_env({"GYOZA_LOG_FORMAT": "text"})
    with serve(tmp_path, "--port", "0", env=env) as p:
        target = p.wait_serving()
        with grpc.insecure_channel(target) as channel:
            stub = runs_pb2_grpc.RunServiceStub(channel)
            run = stub.CreateRun(runs_pb2.CreateRunRequest(image="img"), timeout=10).run
            for _ in range(3):
                stub.GetRun(runs_pb2.GetRunRequest(id=run.id), timeout=10)
        assert p.stop(signal.SIGTERM) == 0, p.log
    lines = p.log.splitlines()
    rpcs = [i for i, line in enumerate(lines) if 'access rpc method="gyoza.v1.RunService/' in line]
    assert len(rpcs) == 4, p.log
    line = re.compile(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gyoza_grpc.access rpc "
        r'method="gyoza.v1.RunService/GetRun" code="OK" duration_ms=\d+\.\d+ '
        r'peer="ipv[46]:[^"]+" run_id="' + run.id + '"'
    )
    assert "CreateRun" in lines[rpcs[0]] and all(line.fullmatch(lines[i]) for i in rpcs[1:])
    shutting_down = next(i for i, text in enumerate(lines) if "shutting down" in text)
    assert rpcs[-1] < shutting_down


def test_access_log_off_keeps_the_other_lines(tmp_path: Path) -> None:
    env = server_env({"GYOZA_ACCESS_LOG": "off"})
    with serve(tmp_path, "--port", "0", env=env) as p:
        target = p.wait_serving()
        with grpc.insecure_channel(target) as channel:
            stub = runs_pb2_grpc.RunServiceStub(channel)
            stub.CreateRun(runs_pb2.CreateRunRequest(image="img"), timeout=10)
        assert p.stop() == 0, p.log
    assert "gyoza_grpc.access" not in p.log
    assert "serving on" in p.log and "stopped" in p.log
