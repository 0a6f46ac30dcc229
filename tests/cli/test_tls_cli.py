"""The client commands over mutual TLS with an API key: the same connection flags and
environment variables as `gyoza-grpc worker` (gyoza_grpc/client/channel.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gyoza_grpc.domain.access import ApiKeys, KeyEntry, Role
from gyoza_grpc.server import GyozaServer
from tests.certs import Certs, make_certs
from tests.cli.conftest import cli
from tests.conftest import launch

READER_KEY = "cli-reader-key-0123456789"


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "pki")


@pytest.fixture
async def mtls_server(sqlite_url: str, certs: Certs) -> AsyncIterator[GyozaServer]:
    gs = await launch(
        sqlite_url,
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tls_client_ca=str(certs.ca),
        api_keys=ApiKeys.of([KeyEntry(Role.READER, READER_KEY)]),
    )
    try:
        yield gs
    finally:
        await gs.stop(0)


async def test_client_commands_over_mutual_tls_with_a_key(
    mtls_server: GyozaServer, certs: Certs
) -> None:
    env = {
        "GYOZA_API_KEY": READER_KEY,
        "GYOZA_TLS_CA": str(certs.ca),
        "GYOZA_TLS_CLIENT_CERT": str(certs.client_cert),
        "GYOZA_TLS_CLIENT_KEY": str(certs.client_key),
    }
    listed = await cli(mtls_server.target, "runs", "list", "--json", env=env)
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == {"data": [], "hasMore": False}

    refused = await cli(mtls_server.target, "runs", "create", "--image", "img", env=env)
    assert refused.code == 3
    assert refused.err.startswith("error: PERMISSION_DENIED: ")

    no_cert = {k: v for k, v in env.items() if not k.startswith("GYOZA_TLS_CLIENT")}
    handshake = await cli(mtls_server.target, "workers", "list", "--timeout", "10", env=no_cert)
    assert handshake.code == 4, handshake.err  # the server wants a client certificate

    half = await cli(
        mtls_server.target, "workers", "list", "--tls-cert", str(certs.client_cert), env=no_cert
    )
    assert half.code == 2
    assert half.err == "error: a client certificate needs both --tls-cert and --tls-key\n"
