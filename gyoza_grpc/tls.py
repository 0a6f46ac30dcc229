"""TLS credentials from PEM files, for the server and for clients (workers, the CLI).

Files are read and checked for the PEM block they must hold here, before the server starts,
so a wrong path or a swapped cert and key is one clear line, not a failed handshake later.
"""

from __future__ import annotations

from pathlib import Path

import grpc


class TlsError(ValueError):
    """A TLS file is missing, unreadable or not the PEM it must be."""


def read_pem(path: str, what: str, marker: str) -> bytes:
    """The bytes of `path`, which must hold a `-----BEGIN ...{marker}` block."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TlsError(f"{what}: cannot read {path}: {err.strerror or err}") from None
    if b"-----BEGIN " not in data or marker.encode() not in data:
        raise TlsError(f"{what}: {path} is not a PEM file with a {marker.strip()} block")
    return data


def _cert(path: str, what: str) -> bytes:
    return read_pem(path, what, "CERTIFICATE-----")


def _key(path: str, what: str) -> bytes:
    return read_pem(path, what, "PRIVATE KEY-----")


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key; with `client_ca`, mutual TLS: every
    client must present a certificate signed by that CA."""
    if not cert or not key:
        raise TlsError("TLS needs both --tls-cert and --tls-key")
    pair = (_key(key, "--tls-key"), _cert(cert, "--tls-cert"))
    if not client_ca:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_cert(client_ca, "--tls-client-ca"), require_client_auth=True
    )


def channel_credentials(ca: str = "", cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """TLS for a client: trust `ca` (default: the system's roots); with `cert` and `key`,
    present that client certificate (for a server that requires one)."""
    if bool(cert) != bool(key):
        raise TlsError("a client certificate needs both --tls-cert and --tls-key")
    return grpc.ssl_channel_credentials(
        root_certificates=_cert(ca, "--tls-ca") if ca else None,
        private_key=_key(key, "--tls-key") if key else None,
        certificate_chain=_cert(cert, "--tls-cert") if cert else None,
    )
