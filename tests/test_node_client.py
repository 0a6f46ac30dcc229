"""The cross-stack check: a Node.js client on @grpc/grpc-js against a real server (issue 16).

tests/node/check.mjs (its packages pinned by tests/node/package-lock.json; `npm ci` there
installs them, as .ci/run does) creates a run, waits for the watch's headers before it adds
events (as grpc-js clients may), drives the run to COMPLETED and reads the stream to its end,
keeps a quiet watch open on a channel that pings every second (grpc-js reported the old
GOAWAY as RESOURCE_EXHAUSTED), and decodes the google.rpc details of two refusals. Without
node, or without its packages installed, this test skips; under CI=true it fails instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.server import GyozaServer
from tests.conftest import served

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node"
# Where google/rpc/status.proto and error_details.proto are (googleapis-common-protos).
RPC_PROTOS = Path(status_pb2.__file__).resolve().parents[2]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the Node.js check must run)")
    pytest.skip(reason)


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        _unavailable("node is not installed")
    assert found is not None
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        _unavailable(f"the Node.js packages are not installed: run `npm ci` in {NODE_DIR}")
    return found


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    async with served(sqlite_url) as gs:
        yield gs


async def test_a_grpc_js_client_creates_watches_and_reads_error_details(
    node: str, server: GyozaServer
) -> None:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "check.mjs"),
        server.target,
        str(ROOT / "protos"),
        str(RPC_PROTOS),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    seen: dict[str, Any] = json.loads(out)

    # The watch's headers came at once (the first event came only after them).
    assert 0 <= seen["headersMs"] < 1000
    assert seen["events"] == [
        {"seq": 0, "type": "EVENT_TYPE_STARTED", "state": "RUN_STATE_RUNNING"},
        {"seq": 1, "type": "EVENT_TYPE_PROGRESS", "state": "RUN_STATE_RUNNING"},
        {"seq": 2, "type": "EVENT_TYPE_COMPLETED", "state": "RUN_STATE_COMPLETED"},
    ]
    assert seen["final"] == {"state": "RUN_STATE_COMPLETED", "attempt": 1, "y": 42}
    async with grpc.aio.insecure_channel(server.target) as channel:
        runs = runs_pb2_grpc.RunServiceStub(channel)
        run = (await runs.GetRun(runs_pb2.GetRunRequest(id=seen["runId"]))).run
    assert json_format.MessageToDict(run.inputs) == {"x": 21}

    locked = seen["locked"]
    assert (locked["code"], locked["codeName"]) == (9, "FAILED_PRECONDITION")
    (info,) = locked["details"]
    assert info["type"] == "google.rpc.ErrorInfo"
    assert (info["reason"], info["domain"]) == ("RUN_LOCKED", "gyoza.v1")

    invalid = seen["invalid"]
    assert (invalid["code"], invalid["codeName"]) == (3, "INVALID_ARGUMENT")
    by_type = {d["type"]: d for d in invalid["details"]}
    violations = by_type["google.rpc.BadRequest"]["fieldViolations"]
    assert [v["field"] for v in violations] == ["image"]

    assert seen["quietWatch"] == {"openForMs": 7000, "ended": None}
