"""Configuration: arguments win, the environment of the CLI and the worker fills the rest;
mutual TLS with a key, from the environment alone, against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gyoza_grpc.client import NO_RETRY, PermissionDenied, RetryConfig, TlsConfig, Unavailable
from gyoza_grpc.client.config import DEFAULT_CHANNEL_OPTIONS, Settings, resolve
from gyoza_grpc.domain.access import ApiKeys, KeyEntry, Role
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.tls import TlsError
from tests.certs import Certs, make_certs
from tests.client.conftest import Either
from tests.conftest import launch

READER_KEY = "client-reader-key-0123456789"


def settings(
    target: str | None = None, environ: dict[str, str] | None = None, **kw: Any
) -> Settings:
    """`resolve` with every argument at its client default but those given."""
    options: dict[str, Any] = {
        "api_key": None,
        "tls": None,
        "timeout": timedelta(seconds=30),
        "wait_for_ready": False,
        "retry": RetryConfig(),
        "watch_retry": RetryConfig(),
        "watch_idle_timeout": None,
        "channel_options": (),
    }
    options.update(kw)
    return resolve(target, environ=environ or {}, **options)


def test_arguments_win_and_the_environment_fills_in(tmp_path: Path) -> None:
    env = {"GYOZA_TARGET": "env-host:1", "GYOZA_API_KEY": "env-key"}
    assert settings(environ=env).target == "env-host:1"
    assert settings("arg-host:2", env).target == "arg-host:2"
    assert settings().target == "127.0.0.1:50051"  # `gyoza-grpc serve`'s default
    assert settings(environ=env).metadata == (("x-api-key", "env-key"),)
    assert settings(environ=env, api_key="").metadata is None  # "" means no key
    assert settings(environ=env, api_key="k").api_key == "k"
    assert "env-key" not in repr(settings(environ=env))

    assert settings().credentials is None  # plaintext unless asked
    certs = make_certs(tmp_path)
    assert settings(environ={"GYOZA_TLS": "1"}).credentials is not None
    assert settings(environ={"GYOZA_TLS_CA": str(certs.ca)}).credentials is not None
    assert settings(environ={"GYOZA_TLS_CA": str(certs.ca)}, tls=False).credentials is None
    assert settings(tls=True).credentials is not None
    with pytest.raises(TlsError, match="--tls-ca: cannot read"):
        settings(tls=TlsConfig(ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(TlsError, match="needs both"):
        settings(environ={"GYOZA_TLS_CLIENT_CERT": str(certs.client_cert)})


def test_bad_values_are_refused_and_options_replace_defaults() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        settings(timeout=timedelta(0))
    with pytest.raises(ValueError, match="watch_idle_timeout"):
        settings(watch_idle_timeout=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="target"):
        settings(" ")
    options = dict(settings(channel_options=[("grpc.keepalive_time_ms", 60_000)]).channel_options)
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options.keys() == dict(DEFAULT_CHANNEL_OPTIONS).keys()


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


async def test_mutual_tls_and_a_key_from_the_environment(
    kind: str, mtls_server: GyozaServer, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "GYOZA_TARGET": mtls_server.target,
        "GYOZA_API_KEY": READER_KEY,
        "GYOZA_TLS_CA": str(certs.ca),
        "GYOZA_TLS_CLIENT_CERT": str(certs.client_cert),
        "GYOZA_TLS_CLIENT_KEY": str(certs.client_key),
    }.items():
        monkeypatch.setenv(name, value)
    async with Either(kind) as client:  # no argument at all
        assert await client.call("list_workers") == []
        with pytest.raises(PermissionDenied):
            await client.call("create_run", "img")

    monkeypatch.delenv("GYOZA_TLS_CLIENT_CERT")
    monkeypatch.delenv("GYOZA_TLS_CLIENT_KEY")
    async with Either(kind, retry=NO_RETRY, timeout=timedelta(seconds=10)) as client:
        with pytest.raises(Unavailable):  # the server wants a client certificate
            await client.call("list_workers")
