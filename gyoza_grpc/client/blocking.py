"""`Client`: the same calls as `AsyncClient`, blocking, for code without an event loop.

Each method is the AsyncClient's own, run on an event loop that the client keeps on a private
thread (`portal.LoopThread`): one implementation, whose signature and documentation the
blocking method shares. Pagers and watch streams become plain iterators. A Client may be
used from several threads at once.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from gyoza_grpc.client.async_client import AsyncClient
from gyoza_grpc.client.config import DEFAULT_TIMEOUT, DEFAULT_WATCH_IDLE_TIMEOUT, Tls
from gyoza_grpc.client.paging import AsyncPager, Page
from gyoza_grpc.client.portal import LoopThread
from gyoza_grpc.client.retry import RetryConfig

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Pager(Generic[T]):
    """`for item in pager` reads every item; `pager.pages()` reads page by page; each page
    is fetched when the iteration reaches it."""

    def __init__(self, portal: LoopThread, pager: AsyncPager[T]) -> None:
        self._portal = portal
        self._pager = pager

    def __iter__(self) -> Iterator[T]:
        return self._portal.iterate(aiter(self._pager))

    def pages(self) -> Iterator[Page[T]]:
        return self._portal.iterate(self._pager.pages())

    def first_page(self) -> Page[T]:
        """Only the first page (one call), with its `has_more`."""
        return self._portal.call(self._pager.first_page())


def _blocking(
    fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], R]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._portal.call(fn(self._async, *args, **kwargs))

    functools.update_wrapper(method, fn)
    return method


def _paged(
    fn: Callable[Concatenate[Any, P], AsyncPager[T]],
) -> Callable[Concatenate[Client, P], Pager[T]]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Pager[T]:
        return Pager(self._portal, fn(self._async, *args, **kwargs))

    functools.update_wrapper(method, fn)
    return method


def _streamed(
    fn: Callable[Concatenate[Any, P], AsyncIterator[T]],
) -> Callable[Concatenate[Client, P], Iterator[T]]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._portal.iterate(fn(self._async, *args, **kwargs))

    functools.update_wrapper(method, fn)
    return method


class Client:
    """A blocking gyoza-grpc client: `AsyncClient`'s calls and arguments (see it for each
    argument), each waiting for its answer. Close it (`client.close()`, or
    `with Client() as client:`) to close the channel and stop its thread."""

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
        # Settings first: a bad TLS file raises here, before a thread is started.
        self._async = AsyncClient(
            target,
            api_key=api_key,
            tls=tls,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            retry=retry,
            watch_retry=watch_retry,
            watch_idle_timeout=watch_idle_timeout,
            channel_options=channel_options,
        )
        self._portal = LoopThread()
        self._owner = True

    def with_api_key(self, api_key: str) -> Client:
        """This client with another API key ("" for none), sharing its channel and thread.
        Only the original closes them."""
        view = Client.__new__(Client)
        view._async = self._async.with_api_key(api_key)
        view._portal = self._portal
        view._owner = False
        return view

    @property
    def target(self) -> str:
        return self._async.target

    def close(self) -> None:
        """Close the channel and stop the client's thread; later calls raise RuntimeError."""
        if not self._owner or self._portal.stopped:
            return
        try:
            self._portal.call(self._async.close())
        finally:
            self._portal.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(target={self.target!r})"

    # RunService
    create_run = _blocking(AsyncClient.create_run)
    get_run = _blocking(AsyncClient.get_run)
    list_runs = _paged(AsyncClient.list_runs)
    count_runs = _blocking(AsyncClient.count_runs)
    update_run = _blocking(AsyncClient.update_run)
    cancel_run = _blocking(AsyncClient.cancel_run)
    retry_run = _blocking(AsyncClient.retry_run)
    add_event = _blocking(AsyncClient.add_event)
    list_events = _paged(AsyncClient.list_events)
    list_attempts = _blocking(AsyncClient.list_attempts)
    watch_events = _streamed(AsyncClient.watch_events)
    # TopicService
    list_topic_events = _paged(AsyncClient.list_topic_events)
    watch_topic = _streamed(AsyncClient.watch_topic)
    # DefinitionService
    upsert_definition = _blocking(AsyncClient.upsert_definition)
    get_definition = _blocking(AsyncClient.get_definition)
    list_definitions = _paged(AsyncClient.list_definitions)
    list_definition_versions = _blocking(AsyncClient.list_definition_versions)
    delete_definition = _blocking(AsyncClient.delete_definition)
    create_run_from_definition = _blocking(AsyncClient.create_run_from_definition)
    # WorkerService
    list_workers = _blocking(AsyncClient.list_workers)
    get_worker = _blocking(AsyncClient.get_worker)
    heartbeat = _blocking(AsyncClient.heartbeat)
    claim_runs = _blocking(AsyncClient.claim_runs)
    release_run = _blocking(AsyncClient.release_run)
    wait_for_stop_orders = _blocking(AsyncClient.wait_for_stop_orders)
    # AccessService
    get_caller = _blocking(AsyncClient.get_caller)
