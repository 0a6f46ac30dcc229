"""The client commands' channel: --target, --api-key (sent as `x-api-key`), TLS, deadlines."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gyoza_grpc.client_cli.failures import UsageError

DEFAULT_TARGET = "127.0.0.1:50051"  # where `gyoza-grpc serve` listens by default
API_KEY_HEADER = "x-api-key"
DEFAULT_TIMEOUT_S = 30.0


def add_connection_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("GYOZA_TARGET", DEFAULT_TARGET),
        help="the server, HOST:PORT (default %(default)s) [env GYOZA_TARGET]",
    )
    group.add_argument(
        "--api-key",
        default=os.environ.get("GYOZA_API_KEY", ""),
        help="sent as x-api-key metadata on every call [env GYOZA_API_KEY]",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=os.environ.get("GYOZA_TLS", "").lower() in ("1", "true", "yes"),
        help="connect with TLS, trusting the system's roots [env GYOZA_TLS=1]",
    )
    group.add_argument(
        "--tls-ca",
        metavar="PEM_FILE",
        default=os.environ.get("GYOZA_TLS_CA", ""),
        help="connect with TLS, trusting this CA certificate [env GYOZA_TLS_CA]",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of each call (not of `runs watch`; default %(default)s)",
    )


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds fixed metadata to every call, whichever stub makes it."""

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self._pairs = pairs

    def _details(self, details: Any) -> Any:
        metadata = (*(details.metadata or ()), *self._pairs)
        return details._replace(metadata=metadata)

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)


@dataclass(frozen=True)
class Connection:
    target: str
    api_key: str
    tls: bool
    tls_ca: str
    timeout_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Connection:
        if not args.target:
            raise UsageError("--target must not be empty")
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        return cls(args.target, args.api_key, args.tls, args.tls_ca, args.timeout)

    def _credentials(self) -> Any:
        if not self.tls_ca:
            return grpc.ssl_channel_credentials()
        try:
            return grpc.ssl_channel_credentials(root_certificates=Path(self.tls_ca).read_bytes())
        except OSError as err:
            raise UsageError(f"--tls-ca: cannot read {self.tls_ca}: {err.strerror}") from None

    @contextmanager
    def channel(self) -> Iterator[grpc.Channel]:
        """A channel that sends the API key (when given) with every call; closed on exit."""
        if self.tls or self.tls_ca:
            raw = grpc.secure_channel(self.target, self._credentials())
        else:
            raw = grpc.insecure_channel(self.target)
        try:
            if self.api_key:
                yield grpc.intercept_channel(raw, _Metadata(((API_KEY_HEADER, self.api_key),)))
            else:
                yield raw
        finally:
            raw.close()
