"""Server reflection as grpc.reflection.v1 and v1alpha (issue 16).

grpcio-reflection serves v1alpha only; `buf curl` asked v1 first, got UNIMPLEMENTED and fell
back, and a tool that speaks only v1 failed. Checked with three clients: `buf curl` held to
v1 (`--reflect-protocol grpc-v1`), a bare v1 client written here from the wire format (no
descriptor of ours), and grpcurl 1.8.6 (v1alpha).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from gyoza_grpc.server import GyozaServer
from tests.conftest import served
from tests.e2e.process import grpcurl_dir

SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "gyoza.v1.AccessService",
    "gyoza.v1.DefinitionService",
    "gyoza.v1.RunService",
    "gyoza.v1.TopicService",
    "gyoza.v1.WorkerService",
]
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[GyozaServer]:
    """Reflection does not depend on the database: one backend."""
    async with served(sqlite_url) as gs:
        yield gs


async def run(*argv: str) -> tuple[int, str, str]:
    """A tool as a subprocess, the event loop (and the server on it) serving meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def tool(name: str) -> str:
    return str(Path(grpcurl_dir()) / name)


# The v1 wire format, by hand: ServerReflectionRequest.list_services = 7 and
# .file_containing_symbol = 4; ServerReflectionResponse.file_descriptor_response = 4 (its
# repeated bytes file_descriptor_proto = 1) and .list_services_response = 6 (repeated
# ServiceResponse service = 1, whose name = 1). Strings and messages are length-delimited.
def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _fields(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        assert key & 7 == 2, "every field read here is length-delimited"
        size, i = _varint(data, i)
        out.append((key >> 3, data[i : i + size]))
        i += size
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


async def test_a_bare_v1_client_lists_services_and_reads_descriptors(
    server: GyozaServer,
) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        call = channel.stream_stream(V1_METHOD)
        requests = [_field(7, b""), _field(4, b"gyoza.v1.RunService")]
        answers = [bytes(a) async for a in call(iter(requests))]
    listed = dict(_fields(answers[0]))[6]
    names = [dict(_fields(s))[1].decode() for _, s in _fields(listed)]
    assert sorted(names) == SERVICES
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(f)
        for _, f in _fields(dict(_fields(answers[1]))[4])
    ]
    assert "gyoza/v1/runs.proto" in [f.name for f in files]


async def test_buf_curl_speaking_only_v1(server: GyozaServer) -> None:
    base = ["--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1"]
    code, out, err = await run(
        tool("buf"), "curl", *base, "--list-services", f"http://{server.target}"
    )
    assert code == 0, err
    assert out.split() == SERVICES
    code, out, err = await run(
        tool("buf"),
        "curl",
        *base,
        "-d",
        '{"image": "img"}',
        f"http://{server.target}/gyoza.v1.RunService/CreateRun",
    )
    assert code == 0, err
    assert json.loads(out)["run"]["state"] == "RUN_STATE_PENDING"


async def test_grpcurl_1_8_6_on_v1alpha(server: GyozaServer) -> None:
    code, out, err = await run(tool("grpcurl"), "-version")
    assert "1.8.6" in out + err
    code, out, err = await run(tool("grpcurl"), "-plaintext", server.target, "list")
    assert code == 0, err
    assert out.split() == SERVICES
    code, out, err = await run(
        tool("grpcurl"),
        "-plaintext",
        server.target,
        "describe",
        "grpc.reflection.v1.ServerReflection",
    )
    assert code == 0, err
    assert "stream .grpc.reflection.v1.ServerReflectionRequest" in out


async def test_no_reflection_means_neither(sqlite_url: str) -> None:
    async with (
        served(sqlite_url, reflection=False) as gs,
        grpc.aio.insecure_channel(gs.target) as channel,
    ):
        # No request: the server answers UNIMPLEMENTED at once, and a request still being
        # sent would turn the client's own status into INTERNAL (its send fails).
        call = channel.stream_stream(V1_METHOD)(iter(()))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
