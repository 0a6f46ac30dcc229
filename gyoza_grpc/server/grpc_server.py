"""Builds the grpc.aio server: services, health, reflection, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gyoza.v1 import (
    access_pb2,
    access_pb2_grpc,
    definitions_pb2,
    definitions_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
)
from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import Unavailable
from gyoza_grpc.domain.model import Event, Run, TopicEvent
from gyoza_grpc.domain.workers import sweep_interval
from gyoza_grpc.server.api import reflection
from gyoza_grpc.server.api.access import AccessServicer
from gyoza_grpc.server.api.access_log import AccessLogInterceptor
from gyoza_grpc.server.api.auth import AuthInterceptor, log_access
from gyoza_grpc.server.api.decoding import DecodeErrorInterceptor
from gyoza_grpc.server.api.definitions import DefinitionServicer
from gyoza_grpc.server.api.health import HealthServicer
from gyoza_grpc.server.api.registration import WrappingServer
from gyoza_grpc.server.api.runs import RunServicer
from gyoza_grpc.server.api.topics import TopicServicer
from gyoza_grpc.server.api.workers import WorkerServicer
from gyoza_grpc.server.config import ServerConfig
from gyoza_grpc.server.ops.db_health import DatabaseHealth
from gyoza_grpc.server.ops.log_format import flush_access_lines
from gyoza_grpc.server.ops.metrics import ServerMetrics
from gyoza_grpc.server.store.db_errors import translate
from gyoza_grpc.server.store.definition_store import DefinitionStore
from gyoza_grpc.server.store.engine import Engines, make_engines, open_transactions
from gyoza_grpc.server.store.run_store import RunStore
from gyoza_grpc.server.store.schema import ensure_schema
from gyoza_grpc.server.store.stats_store import StatsStore
from gyoza_grpc.server.store.worker_store import WorkerStore
from gyoza_grpc.server.streams.fanout import FanOut
from gyoza_grpc.server.streams.pg_wakeup import PgWakeup, new_replica_id
from gyoza_grpc.server.streams.run_feed import RunFeed
from gyoza_grpc.server.streams.run_feed_replicas import ReplicaRunChanges
from gyoza_grpc.server.streams.stop_signal import StopSignal
from gyoza_grpc.server.streams.watch import EventWatcher
from gyoza_grpc.server.streams.watch_slots import WatchSlots
from gyoza_grpc.server.streams.work_signal import WorkSignal
from gyoza_grpc.tls import server_credentials

log = logging.getLogger("gyoza_grpc.server")

SERVICE_NAMES = (
    runs_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
    topics_pb2.DESCRIPTOR.services_by_name["TopicService"].full_name,
    workers_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    definitions_pb2.DESCRIPTOR.services_by_name["DefinitionService"].full_name,
    access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
)

# Keepalive (docs/deploy.md). The server pings a connection idle for 60 s, with or without
# calls, and closes it when a ping is not answered within 20 s: a vanished client's watch
# streams and slots come back. Clients may ping every 5 s or slower on quiet streams; a client
# pinging faster is tolerated, never cut: with grpc's default (two strikes), its third early
# ping got GOAWAY "too_many_pings", which grpc-js reports on every open stream as
# RESOURCE_EXHAUSTED, a code clients do not retry. A ping costs the server its ACK only, so
# strikes are counted against the 5 s but never acted on (max_ping_strikes 0).
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # A second server on a busy port must fail to start, not share the port with the first.
    ("grpc.so_reuseport", 0),
]


@dataclass
class GyozaServer:
    """A running server and what it owns; `stop()` takes it down in order."""

    server: grpc.aio.Server
    port: int
    engines: Engines
    store: RunStore
    fanout: FanOut
    run_feed: RunFeed
    health: HealthServicer
    config: ServerConfig
    workers: WorkerStore
    work_signal: WorkSignal
    sweeper: asyncio.Task[None]
    db_health: DatabaseHealth
    # PostgreSQL: the LISTEN connection and catch-up that carry other replicas' wake-ups.
    wakeup: PgWakeup | None = None
    metrics: ServerMetrics | None = None
    # Wakes WaitForStopOrders long-polls.
    stop_signal: StopSignal = field(default_factory=StopSignal)
    # The database health monitor, the metrics refresh.
    background: list[asyncio.Task[None]] = field(default_factory=list)
    _stopped: bool = field(default=False, init=False)

    @property
    def target(self) -> str:
        host = self.config.host
        return f"{host}:{self.port}"

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first, then end the watch streams, then drain unary calls, then the DB."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()  # ends the Health/Watch streams too
        self.fanout.close()
        self.run_feed.close()
        self.work_signal.close()
        self.stop_signal.close()
        tasks = [self.sweeper, *self.background]
        for task in tasks:
            task.cancel()
        # Wait for them: a sweep cancelled mid-transaction must let go of its connection
        # before the engine is disposed (else asyncio.run waits on it forever).
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.wakeup is not None:
            await self.wakeup.stop()  # closes its own connection before the engine goes
        await self.server.stop(self.config.shutdown_grace_s if grace_s is None else grace_s)
        flush_access_lines()  # the drained calls' lines now, not up to 50 ms later
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        await self.store.transactions.close()
        await self.engines.dispose()


async def start_server(
    config: ServerConfig, *, clock: Clock = utc_now, extra_options: Sequence[tuple[str, int]] = ()
) -> GyozaServer:
    # Bad TLS files fail here, before the database is touched.
    credentials = (
        server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        if config.tls
        else None
    )
    engines = make_engines(
        config.database_url,
        pool_size=config.db_pool_size,
        statement_timeout_s=config.db_statement_timeout_s,
        sqlite_synchronous=config.sqlite_synchronous,
    )
    try:
        await ensure_schema(engines, migrate_if_behind=config.migrate)
    except BaseException:
        await engines.dispose()
        raise
    fanout = FanOut()
    run_feed = RunFeed()
    work_signal = WorkSignal()
    stop_signal = StopSignal()
    metrics = ServerMetrics(clock=clock) if config.metrics_port is not None else None
    run_changes: ReplicaRunChanges | None = None

    def on_events(run: Run, events: Sequence[Event], published: Sequence[TopicEvent]) -> None:
        fanout.publish(run, events, published)
        run_feed.publish(run)
        work_signal.on_events(run, events, published)
        stop_signal.on_events(run, events, published)
        if metrics is not None:
            metrics.on_events(run, events)

    def on_created(run: Run) -> None:
        work_signal.on_created(run)
        run_feed.publish(run)
        if run_changes is not None:
            run_changes.note_created(run)

    replica_id = new_replica_id()
    transactions = open_transactions(engines, origin=replica_id)
    store = RunStore(transactions, clock=clock, on_events=on_events, on_created=on_created)
    worker_store = WorkerStore(store)
    wakeup = None
    if engines.postgres is not None:
        run_changes = ReplicaRunChanges(run_feed, store)
        wakeup = PgWakeup.for_engine(
            engines.postgres,
            replica_id=replica_id,
            store=store,
            workers=worker_store,
            fanout=fanout,
            work_signal=work_signal,
            stop_signal=stop_signal,
            catchup_s=config.catchup_interval_s,
            run_changes=run_changes,
        )
    watcher = EventWatcher(store, fanout, heartbeat_s=config.watch_heartbeat_s, clock=clock)

    limits = config.limits
    # Larger requests get RESOURCE_EXHAUSTED from grpc itself, before any handler runs.
    size_options = [("grpc.max_receive_message_length", limits.max_message_bytes)]
    access_log, decode_errors = AccessLogInterceptor(metrics), DecodeErrorInterceptor()
    options = [*SERVER_OPTIONS, *size_options, *extra_options]
    if config.api_keys:
        # Per call: the access log first, so it sees (and logs) what auth refuses; auth
        # before anything else looks at the call.
        interceptors = [access_log, AuthInterceptor(config.api_keys), decode_errors]
        server = grpc.aio.server(options=options, interceptors=interceptors)
        services: grpc.aio.Server | WrappingServer = server
    else:
        # Nothing depends on the call: each handler is wrapped once, as it is added.
        server = grpc.aio.server(options=options)
        services = WrappingServer(
            server, lambda method, h: access_log.wrap(method, decode_errors.wrap(method, h))
        )
    slots = WatchSlots(limits.max_watch_streams)
    stats = StatsStore(engines)
    runs_pb2_grpc.add_RunServiceServicer_to_server(
        RunServicer(
            store,
            watcher,
            stats=stats,
            clock=clock,
            limits=limits,
            watch_slots=slots,
            run_feed=run_feed,
            heartbeat_s=config.watch_heartbeat_s,
        ),
        services,
    )
    topics_pb2_grpc.add_TopicServiceServicer_to_server(
        TopicServicer(store, watcher, watch_slots=slots, limits=limits), services
    )
    definitions_pb2_grpc.add_DefinitionServiceServicer_to_server(
        DefinitionServicer(
            DefinitionStore(transactions, clock=clock), store, clock=clock, limits=limits
        ),
        services,
    )
    workers_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerServicer(
            worker_store,
            work_signal,
            lease_s=config.lease_seconds,
            stop_signal=stop_signal,
            max_response_bytes=limits.max_response_bytes,
        ),
        services,
    )
    access_pb2_grpc.add_AccessServiceServicer_to_server(AccessServicer(config.api_keys), services)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    if config.reflection:
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME), services)
    try:
        if credentials is None:
            port = server.add_insecure_port(config.address)
        else:
            port = server.add_secure_port(config.address, credentials)
    except RuntimeError:  # grpc's "Failed to bind to address ..."
        port = 0
    if port == 0:
        await engines.dispose()
        raise OSError(f"cannot listen on {config.address} (address in use or not available)")
    if metrics is not None and config.metrics_port is not None:
        try:
            metrics.serve(config.host, config.metrics_port)
        except OSError as err:
            await engines.dispose()
            raise OSError(f"cannot serve metrics on port {config.metrics_port}: {err}") from err
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    sweeper = asyncio.create_task(
        _sweep_evictions(worker_store, timedelta(seconds=config.lease_seconds), config)
    )
    if wakeup is not None:
        wakeup.start()
    db_health = DatabaseHealth(
        stats.ping,
        health_servicer,
        ("", *SERVICE_NAMES),
        interval_s=config.db_health_interval_s,
        on_change=metrics.set_database_up if metrics is not None else None,
    )
    background = [asyncio.create_task(db_health.run())]
    if metrics is not None and config.metrics_port is not None:
        background.append(
            asyncio.create_task(metrics.refresh_forever(stats, config.metrics_refresh_s))
        )
    return GyozaServer(
        server=server,
        port=port,
        engines=engines,
        store=store,
        fanout=fanout,
        run_feed=run_feed,
        health=health_servicer,
        config=config,
        workers=worker_store,
        work_signal=work_signal,
        stop_signal=stop_signal,
        sweeper=sweeper,
        wakeup=wakeup,
        db_health=db_health,
        metrics=metrics,
        background=background,
    )


async def _sweep_evictions(workers: WorkerStore, lease: timedelta, config: ServerConfig) -> None:
    """Evict workers whose lease ran out, every `--sweep-interval` (at least four times a
    lease: domain/workers.py): a worker that stops heartbeating is evicted at most lease +
    interval after its last heartbeat. A sweep while the database is out of reach logs one
    line, not a traceback; time the database could record no heartbeat is credited to the
    leases (WorkerStore.evict_expired)."""
    interval_s = sweep_interval(timedelta(seconds=config.sweep_interval_s), lease).total_seconds()
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            sweep = await workers.evict_expired(lease)
        except Exception as err:
            if not _database_trouble(err):
                log.exception("eviction sweep failed; retrying in %.1fs", interval_s)
                continue
            log.warning(
                "eviction sweep: database unavailable (%s); retrying in %.1fs",
                _cause(err),
                interval_s,
            )
            failing = True
            continue
        if failing:
            log.info("eviction sweep: the database answers again")
            failing = False
        if sweep.credited:
            log.warning(
                "no eviction sweep could commit for %.1fs (the database was out of reach): "
                "that time does not count against the workers' leases",
                sweep.credited.total_seconds(),
            )
        for worker_id, transitions in sweep.evicted:
            log.warning(
                "evicted worker %s (lease expired); handed back %d run(s)",
                worker_id,
                len(transitions),
            )


def _database_trouble(err: BaseException) -> bool:
    """A database out of reach (already UNAVAILABLE for the callers), not a server bug."""
    return isinstance(err, Unavailable) or translate(err) is not None


def _cause(err: BaseException) -> str:
    """One line naming what failed underneath (the driver's error, not ours)."""
    cause = err.__cause__ or err
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:300]


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    # Handlers go in before the server starts: a signal that arrives while it starts (or right
    # after it reports SERVING) still means a clean stop, never a KeyboardInterrupt or a kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gs = await start_server(config)
    log_access(config.api_keys)
    log.info(
        "gyoza-grpc serving on %s:%d (database %s%s%s)",
        config.host,
        gs.port,
        _redacted(config.database_url),
        (", mutual TLS" if config.tls_client_ca else ", TLS") if config.tls else ", plaintext",
        "" if config.reflection else ", reflection off",
    )
    if gs.metrics is not None:
        log.info("metrics on http://%s:%d/metrics", config.host, gs.metrics.port)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await gs.stop()
    log.info("stopped")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
