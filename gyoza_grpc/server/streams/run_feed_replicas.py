"""Replicas: other servers' run changes, into this server's runs feed (WatchRuns).

The PostgreSQL wake-ups (streams/pg_wakeup.py) name the runs another replica's transaction
gave events to; this reads each of them once and publishes it. A run created elsewhere is
named by no wake-up (it says only that something became claimable), so then the newest runs
are read instead, from `_MARGIN_S` before the previous such read (a run committed late, a
clock a little off) onwards, and those the feed has not seen are published. Both happen only
while some WatchRuns stream is open here.

When changes may have been missed, every watcher gets a resync: the listener was
reconnecting (notifications are lost meanwhile), a wake-up said "everything", too many runs
waited to be read, or more runs were created elsewhere than one read takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable

from gyoza_grpc.domain.clock import to_us
from gyoza_grpc.domain.errors import NotFound
from gyoza_grpc.domain.model import Run
from gyoza_grpc.server.store.run_store import RunQuery, RunStore
from gyoza_grpc.server.streams.run_feed import RunFeed

log = logging.getLogger("gyoza_grpc.run_feed")

# How far before the previous read of new runs the next one starts.
_MARGIN_S = 2.0
# One read of new runs takes at most this many pages of _PAGE runs; more means a resync.
_PAGE = 100
_MAX_PAGES = 10
# Reads of new runs are at least this far apart (wake-ups in between are folded into one).
_MIN_SCAN_INTERVAL_S = 0.25
# Runs named by wake-ups and not read yet; more means a resync.
_MAX_PENDING = 1000
# Ids of recently created runs the feed has published (so a read does not send them again).
_SEEN = 20_000


class ReplicaRunChanges:
    def __init__(self, feed: RunFeed, store: RunStore) -> None:
        self._feed = feed
        self._store = store
        self._changed: set[str] = set()
        self._scan_wanted = False
        self._since_us: int | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="gyoza-run-feed-replicas")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- what the wake-ups say -------------------------------------------------------------

    def note_created(self, run: Run) -> None:
        """This server created `run` (and published it): a read of new runs skips it."""
        if self._feed.watching:
            self._remember(run.id)

    def changed(self, run_ids: Iterable[str]) -> None:
        """Another replica gave these runs events."""
        if not self._feed.watching:
            return
        self._changed.update(run_ids)
        if len(self._changed) > _MAX_PENDING:
            self._changed.clear()
            self.lost(f"more than {_MAX_PENDING} runs changed on other replicas at once")
            return
        self._wake.set()

    def created(self) -> None:
        """Another replica may have created runs (or the periodic catch-up asks)."""
        if not self._feed.watching:
            self._since_us = None  # the next watcher starts afresh
            return
        self._scan_wanted = True
        self._wake.set()

    def lost(self, reason: str) -> None:
        if self._feed.watching:
            log.info("runs feed: watchers resync (%s)", reason)
            self._feed.lose_all(reason)

    # -- reading ---------------------------------------------------------------------------

    def _remember(self, run_id: str) -> None:
        self._seen[run_id] = None
        self._seen.move_to_end(run_id)
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        last_scan = float("-inf")
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                changed, self._changed = self._changed, set()
                await self._read_changed(changed)
                if self._scan_wanted:
                    wait = last_scan + _MIN_SCAN_INTERVAL_S - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    self._scan_wanted = False
                    last_scan = loop.time()
                    await self._read_created()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                # The watchers may now lack changes: they list again.
                log.warning("runs feed: could not read other replicas' changes: %s", err)
                self.lost("this server could not read other replicas' changes")

    async def _read_changed(self, run_ids: set[str]) -> None:
        for run_id in sorted(run_ids):
            if not self._feed.watching:
                return
            try:
                run, _ = await self._store.get_run(run_id)
            except NotFound:
                continue
            self._feed.publish(run)

    async def _read_created(self) -> None:
        started_us = to_us(self._store.clock())
        since = self._since_us
        if since is None:
            since = started_us - int(_MARGIN_S * 1_000_000)
        after = ""
        for _ in range(_MAX_PAGES):
            page = await self._store.list_runs(
                RunQuery(limit=_PAGE, starting_after=after, created_gte=since)
            )
            for run in reversed(page.runs):  # oldest first, as they were created
                if run.id not in self._seen:
                    self._remember(run.id)
                    self._feed.publish(run)
            if not page.has_more or not page.runs:
                break
            after = page.runs[-1].id
        else:
            self.lost(f"more than {_PAGE * _MAX_PAGES} runs created on other replicas at once")
        self._since_us = started_us - int(_MARGIN_S * 1_000_000)
