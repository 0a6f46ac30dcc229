"""Cross-replica wake-ups over PostgreSQL LISTEN/NOTIFY, with a periodic catch-up.

Every write transaction NOTIFYs what it touched (store/wakeups.py). Each server holds one
dedicated asyncpg connection that LISTENs; a notification from another replica:
- for a run or topic with watchers here: reads what the store holds after the last position
  this server's fan-out handed out, once per key, and offers it to every watcher of the key
  (one read per key and notification, not one per watcher); more than a buffer's worth makes
  the watchers re-read at their own cursors;
- for a claimable run: wakes one long-polling claim here (passed on as a local one would be);
- for a worker whose capacity changed: wakes that worker's long-polls here;
- for a run whose holder may have to stop: wakes the WaitForStopOrders calls watching it here.
- for the runs feed (WatchRuns), when a stream is open here: the runs named are read and
  published, and a claimable run may be a new one, so the newest runs are read
  (streams/run_feed_replicas.py). While the listener reconnects, notifications are lost: each
  (re)connection makes the feed's watchers list the runs again.

A notification is only a hint: the tables stay the truth. Notifications are lost while the
listener is disconnected (and could be lost otherwise), so every `catchup_s` the catch-up
compares `runs.last_seq` / `topics.last_cursor` of the keys with watchers against what the
fan-out handed out and feeds the ones behind, wakes one claim waiter when a claimable run
exists, and reads the runs that WaitForStopOrders calls here watch (one query for all of them),
waking those with something to stop. A lost notification therefore costs at most about one
catch-up interval. The listener reconnects with backoff (and then catches up at once); it pings
its connection so a silently dead one is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gyoza_grpc.domain.workers import stop_orders
from gyoza_grpc.server.config import DEFAULT_CATCHUP_S
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.store.wakeups import CHANNEL, Wakeup, decode
from gyoza_grpc.server.store.worker_store import WorkerStore
from gyoza_grpc.server.streams.fanout import FanOut, Key, run_key, topic_key
from gyoza_grpc.server.streams.run_feed_replicas import ReplicaRunChanges
from gyoza_grpc.server.streams.stop_signal import StopSignal
from gyoza_grpc.server.streams.work_signal import WorkSignal

log = logging.getLogger("gyoza_grpc.pg_wakeup")

LISTENER_APPLICATION_NAME = "gyoza-grpc-listener"
# The listener's connection is pinged this often, and must answer within _PING_TIMEOUT_S.
_PING_INTERVAL_S = 5.0
_PING_TIMEOUT_S = 5.0
_CONNECT_TIMEOUT_S = 10.0
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
# Feeds (store reads) running at once: leave the pool to the RPCs.
_MAX_CONCURRENT_FEEDS = 4
# Options of SQLAlchemy's asyncpg adapter that asyncpg.connect does not take.
_ADAPTER_ONLY = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)


def new_replica_id() -> str:
    """Names this server process in its notifications (it ignores its own)."""
    return uuid.uuid4().hex[:12]


def connect_args(engine: AsyncEngine) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for the database of `engine`, translated from its
    URL by SQLAlchemy's own dialect (host, port, user, password, database, ssl, ...)."""
    url = make_url(engine.url.render_as_string(hide_password=False))
    _, kwargs = engine.dialect.create_connect_args(url)
    for name in _ADAPTER_ONLY:
        kwargs.pop(name, None)
    return dict(kwargs)


class PgWakeup:
    def __init__(
        self,
        *,
        replica_id: str,
        connect: Callable[[], Any],
        store: RunStore,
        workers: WorkerStore,
        fanout: FanOut,
        work_signal: WorkSignal,
        stop_signal: StopSignal | None = None,
        catchup_s: float = DEFAULT_CATCHUP_S,
        run_changes: ReplicaRunChanges | None = None,
    ) -> None:
        self.replica_id = replica_id
        self._run_changes = run_changes
        self._connect = connect
        self._store = store
        self._workers = workers
        self._fanout = fanout
        self._signal = work_signal
        self._stops = stop_signal or StopSignal()
        self._catchup_s = catchup_s
        self._feeding: dict[Key, asyncio.Task[None]] = {}
        self._feed_again: set[Key] = set()
        self._feed_slots = asyncio.Semaphore(_MAX_CONCURRENT_FEEDS)
        self._catchup_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # The listener's current connection (for tests and diagnostics) and its backend pid.
        self.connection: asyncpg.Connection | None = None
        self.listening = asyncio.Event()
        # How many times the listener has connected and LISTENed.
        self.connects = 0

    @classmethod
    def for_engine(cls, engine: AsyncEngine, *, replica_id: str, **kw: Any) -> PgWakeup:
        kwargs = connect_args(engine)
        # Named so an operator can find it in pg_stat_activity.
        settings = dict(kwargs.get("server_settings") or {})
        settings["application_name"] = f"{LISTENER_APPLICATION_NAME} {replica_id}"
        kwargs["server_settings"] = settings

        def connect() -> Any:
            return asyncpg.connect(timeout=_CONNECT_TIMEOUT_S, **kwargs)

        return cls(connect=connect, replica_id=replica_id, **kw)

    def start(self) -> None:
        if self._run_changes is not None:
            self._run_changes.start()
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="gyoza-pg-listen"),
            asyncio.create_task(self._catch_up_forever(), name="gyoza-pg-catchup"),
        ]

    async def stop(self) -> None:
        """Cancel the listener, the catch-up and the feeds; wait for them so no connection is
        left behind when the engine is disposed."""
        self._stopping = True
        tasks = [*self._tasks, *self._feeding.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._run_changes is not None:
            await self._run_changes.stop()

    # -- receiving -----------------------------------------------------------------------

    def on_payload(self, payload: str) -> None:
        """Act on one notification (from the listener, or a test)."""
        wakeup = decode(payload)
        if wakeup is None or wakeup.origin == self.replica_id:
            return
        self.apply(wakeup)

    def apply(self, w: Wakeup) -> None:
        changes = self._run_changes
        if w.everything:
            self._catchup_now.set()
            self._signal.notify_one()
            self._stops.wake_all()
            if changes is not None:
                changes.lost("another replica changed more runs than one wake-up names")
            return
        if changes is not None:
            if w.runs:
                changes.changed(w.runs)
            if w.claimable:
                changes.created()
        for run_id in w.runs:
            self.feed(run_key(run_id))
        for topic in w.topics:
            self.feed(topic_key(topic))
        if w.claimable:
            self._signal.notify_one()
        for worker_id in w.workers:
            self._signal.notify_worker(worker_id)
        self._stops.touched(w.stops)

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self.on_payload(payload)
        except Exception:
            log.exception("could not handle a wake-up notification")

    # -- feeding watchers ----------------------------------------------------------------

    def feed(self, key: Key) -> None:
        """Bring `key`'s watchers up to what the store holds: one feed at a time per key; a
        request during a feed runs it once more after."""
        if self._stopping or not self._fanout.subscribers(key):
            return
        if key in self._feeding:
            self._feed_again.add(key)
            return
        self._feeding[key] = asyncio.create_task(self._feed_loop(key))

    async def _feed_loop(self, key: Key) -> None:
        try:
            while True:
                self._feed_again.discard(key)
                try:
                    async with self._feed_slots:
                        await self._feed_once(key)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    # The watchers stay subscribed; the next notification or catch-up retries.
                    log.warning("could not read %s %r for its watchers: %s", *key, err)
                if key not in self._feed_again:
                    return
        finally:
            self._feeding.pop(key, None)

    async def _feed_once(self, key: Key) -> None:
        subs = self._fanout.subscribers(key)
        if not subs:
            return
        after = self._fanout.last_position(key)
        if after is None:
            after = min(s.position for s in subs)
        limit = self._fanout.buffer_limit
        kind, name = key
        items: Sequence[Any]
        if kind == "run":
            items, more = await self._store.list_events(name, after=after, attempt=0, limit=limit)
            positions = [e.seq for e in items]
        else:
            items, more = await self._store.list_topic_events(name, after=after, limit=limit)
            positions = [e.cursor for e in items]
        if more:
            # More than a buffer holds: every watcher re-reads at its own cursor.
            runs, topics = await self._positions([key])
            self._fanout.poke(key)
            last = (runs if kind == "run" else topics).get(name)
            if last is not None:
                self._fanout.note_position(key, last)
        elif items:
            self._fanout.offer(key, items, positions[-1])

    async def _positions(self, keys: Sequence[Key]) -> tuple[dict[str, int], dict[str, int]]:
        run_ids = [name for kind, name in keys if kind == "run"]
        topics = [name for kind, name in keys if kind == "topic"]
        return await self._store.last_positions(run_ids, topics)

    # -- catching up ---------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Feed every followed key that the tables are ahead of; wake one claim waiter when
        something is claimable. Returns the number of keys fed."""
        keys = self._fanout.keys()
        fed = 0
        if keys:
            runs, topics = await self._positions(keys)
            for key in keys:
                kind, name = key
                db = (runs if kind == "run" else topics).get(name)
                if db is None:
                    continue
                subs = self._fanout.subscribers(key)
                if not subs:
                    continue
                known = self._fanout.last_position(key)
                if known is None:
                    known = min(s.position for s in subs)
                if db > known:
                    self.feed(key)
                    fed += 1
        if self._run_changes is not None:
            self._run_changes.created()
        if self._signal.waiting and await self._workers.any_claimable():
            self._signal.wake_one()
        await self._catch_up_stops()
        return fed

    async def _catch_up_stops(self) -> None:
        """Wake the WaitForStopOrders calls with something to stop that no notification
        announced: one read of every watched run."""
        waiters = self._stops.waiters()
        if not waiters:
            return
        views = await self._workers.run_views(sorted({r for w in waiters for r in w.run_ids}))
        for waiter in waiters:
            if stop_orders(waiter.worker_id, waiter.running, views):
                waiter.wake()

    async def _catch_up_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._catchup_s):
                    await self._catchup_now.wait()
            self._catchup_now.clear()
            try:
                fed = await self.catch_up()
                if fed:
                    log.debug("catch-up fed %d key(s) behind the tables", fed)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("wake-up catch-up failed (retrying in %.1fs): %s", self._catchup_s, err)

    # -- listening -----------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        backoff = _BACKOFF_FIRST_S
        while True:
            connects = self.connects
            try:
                await self._listen_once()
                log.warning("wake-up listener lost its connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("wake-up listener: %s; reconnecting", str(err) or type(err).__name__)
            if self.connects != connects:
                backoff = _BACKOFF_FIRST_S  # it was connected: start the backoff over
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _listen_once(self) -> None:
        """Connect, LISTEN, catch up, then ping until the connection is lost."""
        conn: asyncpg.Connection = await self._connect()
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(CHANNEL, self._on_notification)
            self.connection = conn
            self.connects += 1
            self.listening.set()
            # Whatever was committed while no one listened: fetch it now.
            self._catchup_now.set()
            self._signal.notify_one()
            if self._run_changes is not None:
                self._run_changes.lost("this server was not listening to the other replicas")
            while not conn.is_closed():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_PING_INTERVAL_S):
                        await lost.wait()
                if lost.is_set() or conn.is_closed():
                    return
                async with asyncio.timeout(_PING_TIMEOUT_S):
                    await conn.fetchval("SELECT 1")
        finally:
            self.listening.clear()
            self.connection = None
            if not conn.is_closed():
                try:
                    async with asyncio.timeout(2.0):
                        await conn.close()
                except asyncio.CancelledError:
                    conn.terminate()
                    raise
                except Exception:
                    conn.terminate()
