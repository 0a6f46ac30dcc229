"""The connection flags and environment every client of a gyoza-grpc server shares.

`gyoza-grpc worker` and the client commands `runs`, `definitions`, `workers` take the same
flags and environment variables from `add_connection_flags`, read into a `Connection` by
`connection_from_args`; `gyoza_grpc.client` reads the same environment variables when it is
given no arguments. The channel itself (options, keepalive, the key as `x-api-key` metadata
on every call, deadlines, retries) is the client's: `gyoza_grpc.client.transport`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

import grpc

from gyoza_grpc.tls import channel_credentials

API_KEY_HEADER = "x-api-key"
API_KEY_ENV = "GYOZA_API_KEY"
TARGET_ENV = "GYOZA_TARGET"
DEFAULT_TARGET = "127.0.0.1:50051"  # where `gyoza-grpc serve` listens by default
TLS_ENV = "GYOZA_TLS"  # "1" (or true/yes/on): TLS with the system's root certificates
TLS_CA_ENV = "GYOZA_TLS_CA"
TLS_CLIENT_CERT_ENV = "GYOZA_TLS_CLIENT_CERT"
TLS_CLIENT_KEY_ENV = "GYOZA_TLS_CLIENT_KEY"


def env_flag(value: str | None) -> bool:
    """An on/off environment variable: 1, true, yes or on (any case) is on."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach a server: its address, the API key, and TLS (None: plaintext)."""

    target: str
    api_key: str = field(default="", repr=False)
    credentials: grpc.ChannelCredentials | None = None


def add_target_flag(parser: Any, what: str = "the server") -> None:
    """--target HOST:PORT, default from GYOZA_TARGET (a parser or an argument group)."""
    parser.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV, DEFAULT_TARGET),
        help=f"{what}, HOST:PORT (default %(default)s) [env {TARGET_ENV}]",
    )


def add_connection_flags(parser: argparse.ArgumentParser) -> Any:
    """--target, --api-key and the client TLS flags, in a "connection" group (returned, so a
    command can add its own connection flags to it)."""
    env = os.environ.get
    group = parser.add_argument_group("connection")
    add_target_flag(group)
    group.add_argument(
        "--api-key",
        default=env(API_KEY_ENV, ""),
        help=f"the API key sent with every call as '{API_KEY_HEADER}' metadata; prefer the "
        f"environment variable, which other users cannot see [env {API_KEY_ENV}]",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=env_flag(env(TLS_ENV)),
        help=f"connect with TLS, trusting the system's root certificates [env {TLS_ENV}=1]",
    )
    group.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=env(TLS_CA_ENV, ""),
        help=f"connect with TLS, trusting this CA certificate [env {TLS_CA_ENV}]",
    )
    group.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=env(TLS_CLIENT_CERT_ENV, ""),
        help="client certificate, for a server that requires one (mutual TLS) "
        f"[env {TLS_CLIENT_CERT_ENV}]",
    )
    group.add_argument(
        "--tls-key",
        metavar="PEM",
        default=env(TLS_CLIENT_KEY_ENV, ""),
        help=f"the client certificate's private key [env {TLS_CLIENT_KEY_ENV}]",
    )
    return group


def connection_from_args(args: argparse.Namespace) -> Connection:
    """The Connection the flags of `add_connection_flags` describe. Raises ValueError for an
    empty --target and TlsError (a ValueError) for a bad TLS file, naming the flag."""
    if not args.target.strip():
        raise ValueError("--target must not be empty")
    tls = bool(args.tls or args.tls_ca or args.tls_cert or args.tls_key)
    credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key) if tls else None
    return Connection(target=args.target, api_key=args.api_key, credentials=credentials)
