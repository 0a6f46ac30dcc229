"""Client channels to a gyoza-grpc server: TLS when asked for, the API key on every call.

The key travels as `x-api-key` metadata, added by a client interceptor to every call (unary
and streaming alike), so it works over TLS and plaintext channels the same way (gRPC's call
credentials refuse plaintext channels). Command-line clients share `add_connection_flags` and
`connection_from_args`, so every command takes the same flags and environment variables.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from gyoza_grpc.tls import channel_credentials

API_KEY_HEADER = "x-api-key"
API_KEY_ENV = "GYOZA_API_KEY"


def _with_key(details: Any, key: str) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata[API_KEY_HEADER] = key
    return details._replace(metadata=metadata)


# grpc.aio files each interceptor under the first of the four kinds it is an instance of,
# so each kind needs its own class.
class _UnaryUnaryKey(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._key), request)


class _UnaryStreamKey(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._key), request)


class _StreamUnaryKey(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_key(details, self._key), requests)


class _StreamStreamKey(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_key(details, self._key), requests)


def api_key_interceptors(key: str) -> list[Any]:
    """Client interceptors that add `x-api-key: KEY` to every call's metadata."""
    kinds = (_UnaryUnaryKey, _UnaryStreamKey, _StreamUnaryKey, _StreamStreamKey)
    return [kind(key) for kind in kinds]


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach a server: its address, the API key, and TLS (None: plaintext)."""

    target: str
    api_key: str = field(default="", repr=False)
    credentials: grpc.ChannelCredentials | None = None

    def open(self, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        return open_channel(
            self.target, api_key=self.api_key, credentials=self.credentials, options=options
        )


def open_channel(
    target: str,
    *,
    api_key: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: TLS with `credentials`, else plaintext; every call
    carries `api_key` (when given) as `x-api-key` metadata."""
    interceptors = api_key_interceptors(api_key) if api_key else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """--api-key and the client TLS flags (--target is each command's own)."""
    env = os.environ.get
    parser.add_argument(
        "--api-key",
        default=env(API_KEY_ENV, ""),
        help=f"the API key sent with every call as '{API_KEY_HEADER}' metadata; prefer the "
        f"environment variable, which other users cannot see [env {API_KEY_ENV}]",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=env("GYOZA_TLS", "") not in ("", "0", "false"),
        help="connect with TLS, trusting the system's root certificates [env GYOZA_TLS=1]",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=env("GYOZA_TLS_CA", ""),
        help="connect with TLS, trusting this CA certificate [env GYOZA_TLS_CA]",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=env("GYOZA_TLS_CLIENT_CERT", ""),
        help="client certificate, for a server that requires one (mutual TLS) "
        "[env GYOZA_TLS_CLIENT_CERT]",
    )
    parser.add_argument(
        "--tls-key",
        metavar="PEM",
        default=env("GYOZA_TLS_CLIENT_KEY", ""),
        help="the client certificate's private key [env GYOZA_TLS_CLIENT_KEY]",
    )


def connection_from_args(args: argparse.Namespace) -> Connection:
    """The Connection the flags of `add_connection_flags` (and `--target`) describe; raises
    TlsError for a bad TLS file."""
    tls = bool(args.tls or args.tls_ca or args.tls_cert or args.tls_key)
    credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key) if tls else None
    return Connection(target=args.target, api_key=args.api_key, credentials=credentials)
