"""Prometheus metrics of one server, on their own registry and HTTP port.

Per-server CollectorRegistry (not the process-global one), so several servers in one process
(the tests) each report their own. Three kinds of sources:
- RPCs: counted and timed by the access-log interceptor (children cached per method and code);
- events as they commit: the claim wait (ready -> ASSIGNED) observed from ASSIGNED events;
- the store: runs by state, the queue, workers alive, read by an asyncio task every
  `refresh_s` into an immutable snapshot. Scrapes run in prometheus_client's HTTP thread and
  only read the latest snapshot: never a query, never the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gyoza_grpc.domain.clock import Clock, to_us, utc_now
from gyoza_grpc.domain.model import Event, EventType, Run, RunState
from gyoza_grpc.server.store.stats_store import StatsStore, StoreStats

log = logging.getLogger("gyoza_grpc.metrics")

# Unary latencies from sub-millisecond reads to a 60 s long-poll claim.
RPC_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
DEFAULT_REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    stats: StoreStats
    taken_us: int


class _StoreCollector(Collector):
    """Gauges built at scrape time from the latest snapshot (one attribute read: atomic)."""

    def __init__(self) -> None:
        self.snapshot: _Snapshot | None = None
        self.database_up = True

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily(
            "gyoza_database_up", "1 when the last database health check succeeded, else 0"
        )
        up.add_metric([], 1.0 if self.database_up else 0.0)
        yield up
        snap = self.snapshot
        if snap is None:
            return
        runs = GaugeMetricFamily("gyoza_runs", "Runs by state", labels=["state"])
        for state in RunState:
            runs.add_metric([state.value], float(snap.stats.runs_by_state.get(state.value, 0)))
        yield runs
        depth = GaugeMetricFamily(
            "gyoza_queue_depth", "PENDING runs by priority", labels=["priority"]
        )
        oldest = GaugeMetricFamily(
            "gyoza_queue_oldest_age_seconds",
            "Age (since creation) of the oldest PENDING run, by priority",
            labels=["priority"],
        )
        for priority, q in sorted(snap.stats.queue.items()):
            depth.add_metric([str(priority)], float(q.depth))
            age = max(0, snap.taken_us - q.oldest_created_us) / 1e6
            oldest.add_metric([str(priority)], age)
        yield depth
        yield oldest
        alive = GaugeMetricFamily("gyoza_workers_alive", "Workers whose lease has not run out")
        alive.add_metric([], float(snap.stats.workers_alive))
        yield alive


class ServerMetrics:
    def __init__(self, *, clock: Clock = utc_now) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self.rpc_requests = Counter(
            "gyoza_rpc_requests",
            "RPCs finished, by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "gyoza_rpc_duration_seconds",
            "Time to answer a unary RPC (streams are not timed), by method and code",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.watch_streams = Gauge(
            "gyoza_watch_streams",
            "Open server streams (WatchEvents, WatchTopic, WatchRuns), by method",
            ["method"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "gyoza_queue_wait_seconds",
            "Time from a run being ready (its attempt made, its backoff over) to ASSIGNED",
            ["priority"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self._store = _StoreCollector()
        self.registry.register(self._store)
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self.port = 0

    # -- events --------------------------------------------------------------------------

    def on_events(self, run: Run, events: Sequence[Event]) -> None:
        """After commit: a run's ASSIGNED event observes how long the run waited for it."""
        for e in events:
            if e.type is EventType.ASSIGNED:
                ready = run.attempt.created_at
                if run.next_attempt_at is not None and run.next_attempt_at > ready:
                    ready = run.next_attempt_at
                wait = max(0.0, (e.time - ready).total_seconds())
                self.queue_wait.labels(str(run.priority)).observe(wait)

    # -- store snapshot ------------------------------------------------------------------

    def set_database_up(self, up: bool) -> None:
        self._store.database_up = up

    async def refresh(self, stats: StatsStore) -> None:
        now: datetime = self._clock()
        snap = await stats.snapshot(now)
        self._store.snapshot = _Snapshot(snap, to_us(now))

    async def refresh_forever(self, stats: StatsStore, interval_s: float) -> None:
        """Refresh the store gauges every `interval_s` until cancelled; a failed read keeps
        the previous values (gyoza_database_up says why)."""
        while True:
            try:
                await self.refresh(stats)
            except Exception as err:
                log.debug("metrics refresh failed: %s", type(err).__name__)
            await asyncio.sleep(interval_s)

    # -- HTTP ----------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0 picks a free port) in a thread; returns the port."""
        self._http, self._http_thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self._http.server_port)
        return self.port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None
