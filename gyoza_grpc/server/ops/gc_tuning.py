"""Garbage-collector settings for the server process.

A server with a thousand open watch streams holds a large, long-lived heap (tasks, calls,
buffers), and each event it fans out allocates objects that live just long enough to be
promoted. With CPython's defaults (700, 10, 10) that promotion triggers a full collection
every few seconds which walks the whole heap, finds nothing, and stalls the loop: every
watcher's latency at once (bench/watch_fanout.py; the figures are in docs/benchmarks.md). A
larger young generation lets short-lived objects die by reference count before they are
promoted; the rarer older collections bound the memory that cycles can hold.
"""

from __future__ import annotations

import gc

# (young, middle, old): a young collection every 10,000 net allocations (still short),
# a middle one every 50 young ones, an old one every 100 middle ones (CPython then still
# waits until a quarter of the old generation is new).
SERVER_THRESHOLDS = (10_000, 50, 100)


def tune_for_server() -> None:
    """Apply SERVER_THRESHOLDS and freeze what start-up made (imports, the servicers): it
    lives as long as the process and need not be walked again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_THRESHOLDS)
