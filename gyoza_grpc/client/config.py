"""Where a client connects and how: from its arguments, else from the environment.

The environment is the one `gyoza-grpc worker` and the client commands read: GYOZA_TARGET,
GYOZA_API_KEY, and for TLS GYOZA_TLS=1 (the system's roots), GYOZA_TLS_CA, and for mutual
TLS GYOZA_TLS_CLIENT_CERT and GYOZA_TLS_CLIENT_KEY. An argument always wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeAlias

import grpc

from gyoza_grpc import __version__
from gyoza_grpc.client.channel import (
    API_KEY_ENV,
    API_KEY_HEADER,
    DEFAULT_TARGET,
    TARGET_ENV,
    TLS_CA_ENV,
    TLS_CLIENT_CERT_ENV,
    TLS_CLIENT_KEY_ENV,
    TLS_ENV,
    env_flag,
)
from gyoza_grpc.client.retry import RetryConfig
from gyoza_grpc.tls import channel_credentials

DEFAULT_TIMEOUT = timedelta(seconds=30)
"""Each call's deadline when neither the client nor the call sets one (retries included)."""
DEFAULT_WATCH_IDLE_TIMEOUT = timedelta(seconds=60)
"""A watch stream silent this long is taken as lost and resumed; the server sends a heartbeat
after every quiet `--watch-heartbeat` (15 s by default), so this must be longer."""

# Within the server's keepalive policy (a ping at most every 10 s), so it never answers
# GOAWAY "too_many_pings"; reconnection after a restart within about 2 s; answers as large as
# a page of big runs (the server caps a request at 4 MiB, not an answer).
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.primary_user_agent", f"gyoza-grpc-client/{__version__}"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """TLS from PEM files. Every field is optional: `TlsConfig()` trusts the system's roots."""

    ca_file: str = ""
    """Trust this CA certificate instead of the system's roots."""
    cert_file: str = ""
    """Mutual TLS: present this client certificate (with `key_file`)."""
    key_file: str = ""
    """The client certificate's private key."""

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials; TlsError (a ValueError) for a missing or bad file."""
        return channel_credentials(self.ca_file, self.cert_file, self.key_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TlsConfig | None:
        """TLS as the environment asks for it; None (plaintext) when it does not."""
        files = cls(
            ca_file=environ.get(TLS_CA_ENV, ""),
            cert_file=environ.get(TLS_CLIENT_CERT_ENV, ""),
            key_file=environ.get(TLS_CLIENT_KEY_ENV, ""),
        )
        wanted = env_flag(environ.get(TLS_ENV)) or files != cls()
        return files if wanted else None


Tls: TypeAlias = "bool | TlsConfig | grpc.ChannelCredentials | None"
"""None: as the environment says (plaintext unless GYOZA_TLS* are set); False: plaintext;
True: TLS with the system's roots; a TlsConfig; or ready grpc.ChannelCredentials."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a client was configured with, resolved (`resolve`)."""

    target: str
    api_key: str = field(repr=False)
    credentials: grpc.ChannelCredentials | None
    timeout: timedelta | None
    wait_for_ready: bool
    retry: RetryConfig
    watch_retry: RetryConfig
    watch_idle_timeout: timedelta | None
    channel_options: tuple[tuple[str, Any], ...]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """What every call sends: the API key as `x-api-key` (None when there is no key)."""
        return ((API_KEY_HEADER, self.api_key),) if self.api_key else None


def resolve(
    target: str | None,
    *,
    api_key: str | None,
    tls: Tls,
    timeout: timedelta | None,
    wait_for_ready: bool,
    retry: RetryConfig,
    watch_retry: RetryConfig,
    watch_idle_timeout: timedelta | None,
    channel_options: Sequence[tuple[str, Any]],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The arguments, with what they leave out taken from `environ` (os.environ)."""
    env = os.environ if environ is None else environ
    resolved_target = (target or env.get(TARGET_ENV, "") or DEFAULT_TARGET).strip()
    if not resolved_target:
        raise ValueError("target must not be empty")
    for name, value in (("timeout", timeout), ("watch_idle_timeout", watch_idle_timeout)):
        if value is not None and value <= timedelta(0):
            raise ValueError(f"{name} must be positive (or None for none), got {value}")
    return Settings(
        target=resolved_target,
        api_key=env.get(API_KEY_ENV, "") if api_key is None else api_key,
        credentials=_credentials(tls, env),
        timeout=timeout,
        wait_for_ready=wait_for_ready,
        retry=retry,
        watch_retry=watch_retry,
        watch_idle_timeout=watch_idle_timeout,
        # The caller's options replace the defaults of the same name.
        channel_options=tuple({**dict(DEFAULT_CHANNEL_OPTIONS), **dict(channel_options)}.items()),
    )


def _credentials(tls: Tls, env: Mapping[str, str]) -> grpc.ChannelCredentials | None:
    if tls is None:
        from_env = TlsConfig.from_env(env)
        return None if from_env is None else from_env.credentials()
    if tls is False:
        return None
    if tls is True:
        return TlsConfig().credentials()
    if isinstance(tls, TlsConfig):
        return tls.credentials()
    return tls
