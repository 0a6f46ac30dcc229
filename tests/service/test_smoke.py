from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc


async def test_create_get_roundtrip(runs: runs_pb2_grpc.RunServiceStub) -> None:
    inputs = struct_pb2.Struct()
    inputs.update({"x": 1, "name": "a"})
    created = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img", inputs=inputs))).run
    assert created.state == runs_pb2.RUN_STATE_PENDING
    assert created.current_attempt == 1
    assert created.priority == 5
    got = (await runs.GetRun(runs_pb2.GetRunRequest(id=created.id))).run
    assert got == created


async def test_unknown_run_is_not_found(runs: runs_pb2_grpc.RunServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetRun(runs_pb2.GetRunRequest(id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "run 'nope' not found"
