"""Lazy paging: every item of a list call, one page fetched at a time, as it is needed.

Every list RPC of gyoza-grpc pages by keyset (a cursor after the last item seen), so a pager
reads each item once even while items are added: a page is asked for only when the
iteration reaches it, and nothing is fetched before the first item is wanted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One answer of a list call."""

    items: Sequence[T]
    has_more: bool
    """The server has more items after these (in the paging direction)."""


class AsyncPager(Generic[T]):
    """`async for item in pager` reads every item; `pager.pages()` reads page by page.

    Each iteration starts again from the first page; pages are fetched with the client's
    retries (list calls are safe to repeat) and deadline, one call per page.
    """

    def __init__(
        self,
        fetch: Callable[[Sequence[T] | None, int], Awaitable[Page[T]]],
        *,
        page_size: int,
        limit: int | None,
    ) -> None:
        """`fetch(previous, size)` reads up to `size` items after the items of the previous
        page (from the start when `previous` is None). A `page_size` of 0 asks for the
        server's default page; the server refuses sizes past its maximum (INVALID_ARGUMENT)."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self._fetch = fetch
        self._page_size = page_size
        self._limit = limit

    async def pages(self) -> AsyncGenerator[Page[T], None]:
        """The pages, fetched one by one as the iteration asks (at most `limit` items in
        all; a page's `has_more` also counts the items the limit left out)."""
        previous: Sequence[T] | None = None
        left = self._limit
        while left is None or left > 0:
            size = self._page_size
            if left is not None and size > 0:
                size = min(size, left)
            page = await self._fetch(previous, size)
            items = page.items if left is None else page.items[:left]
            if left is not None:
                left -= len(items)
            yield Page(items, page.has_more or len(items) < len(page.items))
            if not page.has_more or not page.items:
                return
            previous = page.items

    async def first_page(self) -> Page[T]:
        """Only the first page (one call): for whoever shows a page at a time, with its
        `has_more`, and pages on with the cursors of its items."""
        pages = self.pages()
        try:
            return await anext(pages)
        finally:
            await pages.aclose()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item
