"""Client channels to a gyoza-grpc server, and the connection flags every client shares.

The key travels as `x-api-key` metadata, added by a client interceptor to every call (unary
and streaming alike), so it works over TLS and plaintext channels the same way (gRPC's call
credentials refuse plaintext channels). `gyoza-grpc worker` (grpc.aio) and the client commands
`runs`, `definitions`, `workers` (blocking grpc) take the same flags and environment variables
from `add_connection_flags` and build the same `Connection` with `connection_from_args`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def _with_key(details: Any, key: str, *, aio: bool) -> Any:
    pairs = [(k, v) for k, v in (details.metadata or ()) if k != API_KEY_HEADER]
    pairs.append((API_KEY_HEADER, key))
    return details._replace(metadata=grpc.aio.Metadata(*pairs) if aio else tuple(pairs))


# grpc.aio files each interceptor under the first of the four kinds it is an instance of,
# so each kind needs its own class.
class _UnaryUnaryKey(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._key, aio=True), request)


class _UnaryStreamKey(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._key, aio=True), request)


class _StreamUnaryKey(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_key(details, self._key, aio=True), requests)


class _StreamStreamKey(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, key: str) -> None:
        self._key = key

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_key(details, self._key, aio=True), requests)


def api_key_interceptors(key: str) -> list[Any]:
    """grpc.aio client interceptors that add `x-api-key: KEY` to every call's metadata."""
    kinds = (_UnaryUnaryKey, _UnaryStreamKey, _StreamUnaryKey, _StreamStreamKey)
    return [kind(key) for kind in kinds]


class _BlockingKey(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """The same for a blocking channel (`grpc.intercept_channel` takes one for all kinds)."""

    def __init__(self, key: str) -> None:
        self._key = key

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_key(details, self._key, aio=False), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_key(details, self._key, aio=False), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_key(details, self._key, aio=False), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_key(details, self._key, aio=False), requests)


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach a server: its address, the API key, TLS (None: plaintext), and the
    deadline of each call (None: none; the client commands' --timeout)."""

    target: str
    api_key: str = field(default="", repr=False)
    credentials: grpc.ChannelCredentials | None = None
    timeout_s: float | None = None

    def open(self, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A grpc.aio channel; close it (or use `async with`)."""
        return open_channel(
            self.target, api_key=self.api_key, credentials=self.credentials, options=options
        )

    @contextmanager
    def blocking(self) -> Iterator[grpc.Channel]:
        """A blocking channel, closed on exit: for synchronous clients such as the CLI."""
        if self.credentials is None:
            raw = grpc.insecure_channel(self.target)
        else:
            raw = grpc.secure_channel(self.target, self.credentials)
        try:
            yield grpc.intercept_channel(raw, _BlockingKey(self.api_key)) if self.api_key else raw
        finally:
            raw.close()


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
