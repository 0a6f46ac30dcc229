"""TLS and mutual TLS with a throwaway CA (tests/certs.py): who gets through and who does not,
and a worker with a key over mutual TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.domain.access import ApiKeys, KeyEntry, Role
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.tls import TlsError, channel_credentials
from gyoza_grpc.worker import Worker
from tests.certs import Certs, make_certs
from tests.conftest import launch, served
from tests.keyed_channel import open_channel

ADMIN_KEY = "tls-admin-key-0123456789"
WORKER_KEY = "tls-worker-key-0123456789"
# The certificate names localhost and 127.0.0.1; the tests connect to 127.0.0.1.


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("other-pki"), ca_name="another CA")


@pytest.fixture
async def tls_server(sqlite_url: str, certs: Certs) -> AsyncIterator[GyozaServer]:
    async with served(
        sqlite_url, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key)
    ) as gs:
        yield gs


@pytest.fixture
async def mtls_server(sqlite_url: str, certs: Certs) -> AsyncIterator[GyozaServer]:
    gs = await launch(
        sqlite_url,
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tls_client_ca=str(certs.ca),
        api_keys=ApiKeys.of([KeyEntry(Role.ADMIN, ADMIN_KEY), KeyEntry(Role.WORKER, WORKER_KEY)]),
    )
    try:
        yield gs
    finally:
        await gs.stop(0)


async def list_runs(
    target: str, credentials: grpc.ChannelCredentials | None, api_key: str = ""
) -> runs_pb2.ListRunsResponse | grpc.aio.AioRpcError:
    async with open_channel(target, credentials=credentials, api_key=api_key) as ch:
        try:
            return await runs_pb2_grpc.RunServiceStub(ch).ListRuns(
                runs_pb2.ListRunsRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as err:
            return err


def refused(result: object) -> bool:
    return isinstance(result, grpc.aio.AioRpcError) and result.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


async def test_tls_serves_clients_that_trust_its_ca(
    tls_server: GyozaServer, certs: Certs, other_certs: Certs
) -> None:
    good = await list_runs(tls_server.target, channel_credentials(str(certs.ca)))
    assert isinstance(good, runs_pb2.ListRunsResponse), good
    assert refused(await list_runs(tls_server.target, None)), "plaintext must not get through"
    assert refused(await list_runs(tls_server.target, channel_credentials(str(other_certs.ca))))


async def test_mutual_tls_requires_a_client_certificate_from_its_ca(
    mtls_server: GyozaServer, certs: Certs, other_certs: Certs
) -> None:
    target = mtls_server.target
    with_cert = channel_credentials(str(certs.ca), str(certs.client_cert), str(certs.client_key))
    good = await list_runs(target, with_cert, ADMIN_KEY)
    assert isinstance(good, runs_pb2.ListRunsResponse), good
    assert refused(await list_runs(target, channel_credentials(str(certs.ca)), ADMIN_KEY))
    foreign = channel_credentials(
        str(certs.ca), str(other_certs.client_cert), str(other_certs.client_key)
    )
    assert refused(await list_runs(target, foreign, ADMIN_KEY))
    assert refused(await list_runs(target, None, ADMIN_KEY))
    # The certificate gets the client through TLS; the key is still needed.
    no_key = await list_runs(target, with_cert)
    assert isinstance(no_key, grpc.aio.AioRpcError)
    assert no_key.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_worker_over_mutual_tls_with_a_key(mtls_server: GyozaServer, certs: Certs) -> None:
    with_cert = channel_credentials(str(certs.ca), str(certs.client_cert), str(certs.client_key))
    async with open_channel(mtls_server.target, credentials=with_cert, api_key=ADMIN_KEY) as ch:
        runs = runs_pb2_grpc.RunServiceStub(ch)
        req = runs_pb2.CreateRunRequest(image="img")
        req.inputs.update({"x": 4})
        run = (await runs.CreateRun(req)).run
        worker = Worker(
            mtls_server.target,
            "w-tls",
            lambda inputs, ctx: {"y": inputs["x"] * 2},
            heartbeat_interval=timedelta(seconds=0.2),
            claim_wait=timedelta(seconds=5),
            api_key=WORKER_KEY,
            credentials=with_cert,
        )
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(600):
                got = (await runs.GetRun(runs_pb2.GetRunRequest(id=run.id))).run
                if got.state == runs_pb2.RUN_STATE_COMPLETED:
                    break
                await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
    assert got.state == runs_pb2.RUN_STATE_COMPLETED
    assert dict(got.outputs) == {"y": 8}


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"tls_cert": "missing.pem", "tls_key": "server-key.pem"},
            "--tls-cert: cannot read missing.pem: No such file or directory",
        ),
        (
            {"tls_cert": "server-key.pem", "tls_key": "server.pem"},
            "--tls-key: server.pem is not a PEM file with a PRIVATE KEY----- block",
        ),
        (
            {"tls_cert": "server.pem", "tls_key": "server-key.pem", "tls_client_ca": "x.pem"},
            "--tls-client-ca: cannot read x.pem: No such file or directory",
        ),
        ({"tls_cert": "server.pem"}, "TLS needs both --tls-cert and --tls-key"),
    ],
)
async def test_bad_tls_files_stop_the_start(
    sqlite_url: str,
    certs: Certs,
    files: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(certs.ca.parent)
    with pytest.raises(TlsError) as caught:
        await launch(sqlite_url, **files)
    assert str(caught.value) == message
    database = Path(sqlite_url.split("///", 1)[1])
    assert not await asyncio.to_thread(database.exists)  # failed before the database
