"""Bytes left in one response: what keeps an answer under the clients' receive limit.

grpcio and grpc-js refuse a message over 4 MiB by default, and a run is up to a request's size
(its inputs), so a claim answer or a list page of a few large items passes that limit although
each item is under its caps. Such an answer is built (and, for a claim, committed) and then
never delivered. Answers that hold a list of items add them while they fit the budget
(`--max-response-bytes`, domain/limits.py) and stop there: a claim claims no more, a page says
`has_more`. The first item is always admitted, so a call always makes progress; one item
alone is at most about a request's size.

Sizes are exact: each item's serialized size plus its field's tag and length prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)
T = TypeVar("T")

# A repeated message field numbered 1..15: one tag byte before each item's length prefix.
_TAG_BYTES = 1
# Kept for the response's other fields (has_more, a page token).
_RESERVED_BYTES = 256


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def entry_size(item: Message) -> int:
    """Bytes `item` takes as one element of a repeated message field of its response."""
    n = item.ByteSize()
    return _TAG_BYTES + _varint_len(n) + n


class ResponseBudget:
    """Admits the items of one response while they fit `max_bytes` (the first always)."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes - _RESERVED_BYTES
        self.admitted = 0

    def admit(self, item: Message) -> bool:
        size = entry_size(item)
        if self.admitted and size > self.left:
            return False
        self.left -= size
        self.admitted += 1
        return True


def fill_within(
    budget: ResponseBudget,
    field: RepeatedCompositeFieldContainer[M],
    items: Iterable[T],
    fill: Callable[[M, T], None],
) -> bool:
    """Add each of `items` to the repeated `field` (filled in place by `fill`) while `budget`
    admits it. Returns False when one did not fit (it and the items after it are left out)."""
    for item in items:
        entry = field.add()
        fill(entry, item)
        if not budget.admit(entry):
            del field[-1]
            return False
    return True
