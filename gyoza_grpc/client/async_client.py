"""`AsyncClient`: every call of gyoza-grpc's five services, for asyncio code.

The calls themselves live with their service (`runs`, `topics`, `definitions`, `workers`,
`access`);
this class gathers them over one `Transport` and owns the channel's life.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from gyoza.v1 import (
    access_pb2_grpc,
    definitions_pb2_grpc,
    runs_pb2_grpc,
    topics_pb2_grpc,
    workers_pb2_grpc,
)
from gyoza_grpc.client.access import AccessCalls
from gyoza_grpc.client.config import (
    DEFAULT_TIMEOUT,
    DEFAULT_WATCH_IDLE_TIMEOUT,
    Tls,
    resolve,
)
from gyoza_grpc.client.definitions import DefinitionCalls
from gyoza_grpc.client.retry import RetryConfig
from gyoza_grpc.client.runs import RunCalls
from gyoza_grpc.client.topics import TopicCalls
from gyoza_grpc.client.transport import Transport
from gyoza_grpc.client.workers import WorkerCalls

Response = TypeVar("Response", bound=Message)


class AsyncClient(RunCalls, TopicCalls, DefinitionCalls, WorkerCalls, AccessCalls):
    """A gyoza-grpc client for asyncio.

    Nothing is connected until the first call, which opens the channel in the running event
    loop; the client then belongs to that loop. Close it (`await client.close()`, or
    `async with AsyncClient() as client:`) to close the channel.

    Args:
        target: HOST:PORT of the server; default GYOZA_TARGET, else 127.0.0.1:50051.
        api_key: sent with every call as `x-api-key`; default GYOZA_API_KEY (none if unset).
        tls: None: as the environment says (GYOZA_TLS=1, GYOZA_TLS_CA, GYOZA_TLS_CLIENT_CERT,
            GYOZA_TLS_CLIENT_KEY; plaintext when none is set); False: plaintext; True: TLS
            trusting the system's roots; a `TlsConfig` of PEM files; or grpc credentials.
        timeout: the deadline of each call, its retries included (None: no deadline). Each
            call can set its own with `timeout=`. Watch streams have none.
        wait_for_ready: a call made while the server cannot be reached waits (within its
            deadline) for a connection, instead of failing at once with UNAVAILABLE; safe for
            every call, as nothing is sent before (watch streams count on `watch_retry`).
        retry: how calls that are safe to repeat are tried again after UNAVAILABLE
            (`NO_RETRY`: never).
        watch_retry: how often, and after what waits, a watch stream is resumed after
            failures in a row.
        watch_idle_timeout: a watch stream that gets nothing (not even a heartbeat) for
            this long is taken as lost and resumed; keep it above the server's
            `--watch-heartbeat` (None: never).
        channel_options: extra grpc channel options (they replace the client's defaults of
            the same name: keepalive, reconnect backoff, receive limit).
    """

    _transport: Transport

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        tls: Tls = None,
        timeout: timedelta | None = DEFAULT_TIMEOUT,
        wait_for_ready: bool = False,
        retry: RetryConfig | None = None,
        watch_retry: RetryConfig | None = None,
        watch_idle_timeout: timedelta | None = DEFAULT_WATCH_IDLE_TIMEOUT,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        settings = resolve(
            target,
            api_key=api_key,
            tls=tls,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            retry=retry or RetryConfig(),
            watch_retry=watch_retry or RetryConfig(),
            watch_idle_timeout=watch_idle_timeout,
            channel_options=channel_options,
        )
        self._transport = Transport(settings)

    @classmethod
    def _over(cls, transport: Transport) -> AsyncClient:
        client = cls.__new__(cls)
        client._transport = transport
        return client

    def with_api_key(self, api_key: str) -> AsyncClient:
        """This client with another API key ("" for none), over the same channel: for a
        gateway that passes on each caller's key. Only the original closes the channel."""
        return AsyncClient._over(self._transport.with_settings(api_key=api_key))

    @property
    def target(self) -> str:
        return self._transport.settings.target

    @property
    def timeout(self) -> timedelta | None:
        """Each call's deadline unless the call sets its own (None: no deadline)."""
        return self._transport.settings.timeout

    @property
    def channel(self) -> grpc.aio.Channel:
        """The grpc.aio channel (opened now if it was not): for calls the client lacks."""
        return self._transport.channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The metadata every call carries (the API key), for calls through the stubs."""
        return self._transport.settings.metadata

    @property
    def run_service(self) -> runs_pb2_grpc.RunServiceAsyncStub:
        """The generated RunService stub over this client's channel (no retries, no
        translated errors: pass `metadata=client.metadata`)."""
        return self._transport.stubs.runs

    @property
    def topic_service(self) -> topics_pb2_grpc.TopicServiceAsyncStub:
        return self._transport.stubs.topics

    @property
    def definition_service(self) -> definitions_pb2_grpc.DefinitionServiceAsyncStub:
        return self._transport.stubs.definitions

    @property
    def worker_service(self) -> workers_pb2_grpc.WorkerServiceAsyncStub:
        return self._transport.stubs.workers

    @property
    def access_service(self) -> access_pb2_grpc.AccessServiceAsyncStub:
        return self._transport.stubs.access

    async def call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Message,
        *,
        retry: bool = False,
        timeout: timedelta | None = None,
        wait: timedelta | None = None,
    ) -> Response:
        """Send a request made by hand through a method of this client's stubs
        (`client.run_service.ListRuns`), with what every call of the client gets: the API
        key, the deadline (`timeout`, default the client's; plus `wait` for a long-poll),
        retries after UNAVAILABLE when `retry` says the request is safe to send twice, and
        errors raised as the server's GyozaError classes. For callers that build the
        requests themselves (the REST gateway) or an RPC the calls above lack."""
        response: Response = await self._transport.unary(
            method,
            request,
            timeout=timeout,
            retry=retry,
            extra_s=0.0 if wait is None else wait.total_seconds(),
        )
        return response

    async def close(self) -> None:
        """Close the channel: calls in flight are cancelled, later calls refused."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(target={self.target!r})"
