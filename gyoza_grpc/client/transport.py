"""The one place a client touches the channel: unary calls with deadlines and retries.

The channel is opened on the first call, inside the event loop that makes it (grpc.aio binds a
channel to its loop), and shared by every view of the client (`AsyncClient.with_api_key`). A
unary call's deadline covers all of its attempts; a call that is safe to send twice is tried
again after UNAVAILABLE, with backoff, while attempts and time are left. Failures are raised
as the GyozaError of their status (`errors.from_rpc_error`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

from gyoza.v1 import (
    access_pb2_grpc,
    definitions_pb2_grpc,
    runs_pb2_grpc,
    topics_pb2_grpc,
    workers_pb2_grpc,
)
from gyoza_grpc.client.config import Settings
from gyoza_grpc.client.errors import from_rpc_error
from gyoza_grpc.client.watching import Resumable, follow

log = logging.getLogger("gyoza_grpc.client")

T = TypeVar("T")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
"""The codes after which a call that is safe to repeat is tried again."""


@dataclass(frozen=True, slots=True)
class Stubs:
    """The generated grpc.aio stubs of the five services, over one channel."""

    runs: runs_pb2_grpc.RunServiceAsyncStub
    topics: topics_pb2_grpc.TopicServiceAsyncStub
    definitions: definitions_pb2_grpc.DefinitionServiceAsyncStub
    workers: workers_pb2_grpc.WorkerServiceAsyncStub
    access: access_pb2_grpc.AccessServiceAsyncStub


def open_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: TLS with `credentials`, else plaintext. The API key
    is no business of the channel: each call carries it in its metadata."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


class _Channel:
    """The channel (opened on first use) that a client and its views share."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stubs: Stubs | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def stubs(self) -> Stubs:
        if self.closed:
            raise RuntimeError("the client is closed")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a stub asked for outside any loop
            loop = None
        if self._stubs is not None and loop is not None and loop is not self._loop:
            # grpc.aio would fail later with an obscure "attached to a different loop".
            raise RuntimeError(
                "this AsyncClient belongs to the event loop of its first call; "
                "make one client per event loop (or use the blocking Client)"
            )
        if self._stubs is None:
            self._loop = loop
            s = self._settings
            self._channel = open_channel(
                s.target, credentials=s.credentials, options=s.channel_options
            )
            # grpc has no type hints, so the stubs' overload for an aio channel is not picked.
            self._stubs = Stubs(
                cast(Any, runs_pb2_grpc.RunServiceStub(self._channel)),
                cast(Any, topics_pb2_grpc.TopicServiceStub(self._channel)),
                cast(Any, definitions_pb2_grpc.DefinitionServiceStub(self._channel)),
                cast(Any, workers_pb2_grpc.WorkerServiceStub(self._channel)),
                cast(Any, access_pb2_grpc.AccessServiceStub(self._channel)),
            )
        return self._stubs

    def channel(self) -> grpc.aio.Channel:
        self.stubs()
        assert self._channel is not None
        return self._channel

    async def close(self) -> None:
        self.closed = True
        channel, self._channel, self._stubs = self._channel, None, None
        if channel is not None:
            await channel.close()


class Transport:
    """Settings plus the shared channel: what every call of a client goes through."""

    def __init__(self, settings: Settings, shared: _Channel | None = None) -> None:
        self.settings = settings
        self._shared = shared or _Channel(settings)
        self.owns_channel = shared is None

    def with_settings(self, **changes: Any) -> Transport:
        """A view over the same channel with other settings (its key, its deadlines)."""
        return Transport(dataclasses.replace(self.settings, **changes), self._shared)

    @property
    def stubs(self) -> Stubs:
        """The stubs (opening the channel, in the running loop, on first use)."""
        return self._shared.stubs()

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._shared.channel()

    async def close(self) -> None:
        if self.owns_channel:
            await self._shared.close()

    async def unary(
        self,
        rpc: Callable[..., Awaitable[Any]],
        request: Message,
        *,
        timeout: timedelta | None,
        retry: bool,
        extra_s: float = 0.0,
    ) -> Any:
        """Call `rpc(request)` within the deadline (plus `extra_s`: a long-poll's wait);
        with `retry`, again after UNAVAILABLE while the retry policy and the deadline allow.
        Raises the GyozaError of the last failure."""
        loop = asyncio.get_running_loop()
        budget = self.settings.timeout if timeout is None else timeout  # the call's, else ours
        deadline = None if budget is None else loop.time() + budget.total_seconds() + extra_s
        policy = self.settings.retry
        failures = 0
        while True:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
            try:
                return await rpc(
                    request,
                    timeout=remaining,
                    metadata=self.settings.metadata,
                    wait_for_ready=self.settings.wait_for_ready,
                )
            except grpc.aio.AioRpcError as err:
                error = err
            failures += 1
            wait = policy.backoff_s(failures, random.random())
            if (
                not retry
                or error.code() not in RETRYABLE
                or wait is None
                or (deadline is not None and loop.time() + wait >= deadline)
            ):
                raise from_rpc_error(error) from error
            log.debug(
                "%s: %s; trying again in %.2fs",
                _name(request),
                error.code().name,
                wait,
                extra={"action": "retry_call", "method": _name(request), "attempt": failures + 1},
            )
            await asyncio.sleep(wait)

    def open_stream(self, rpc: Callable[..., Any], request: Message) -> Any:
        """A server stream (a grpc.aio UnaryStreamCall) without a deadline."""
        return rpc(request, metadata=self.settings.metadata)

    def follow(self, stream: Resumable[T], *, after: int | None) -> AsyncIterator[T]:
        """`stream`'s items after `after`, resumed with the client's watch settings."""
        idle = self.settings.watch_idle_timeout
        return follow(
            stream,
            after=after,
            retry=self.settings.watch_retry,
            idle_timeout_s=None if idle is None else idle.total_seconds(),
        )


def _name(request: Message) -> str:
    return type(request).__name__.removesuffix("Request")
