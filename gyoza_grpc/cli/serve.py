"""`gyoza-grpc serve`: the gRPC server's flags, and starting it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from gyoza_grpc.cli.flags import (
    add_database_flag,
    database_error,
    env,
    env_option,
    optional_int,
    port,
)
from gyoza_grpc.domain.limits import DEFAULT_LIMITS, Limits
from gyoza_grpc.server.config import (
    DEFAULT_CATCHUP_S,
    DEFAULT_HEARTBEAT_S,
    SQLITE_SYNCHRONOUS,
    ServerConfig,
)

NAME = "serve"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gRPC server")
    d = ServerConfig()
    env_option(serve, "--host", "GYOZA_HOST", d.host, "address to listen on (default %(default)s)")
    env_option(
        serve,
        "--port",
        "GYOZA_PORT",
        d.port,
        "port to listen on; 0 picks a free one (default %(default)s)",
        type=port,
    )
    add_database_flag(serve)
    seconds: dict[str, Any] = {"type": float, "metavar": "SECONDS"}
    env_option(
        serve,
        "--watch-heartbeat",
        "GYOZA_WATCH_HEARTBEAT",
        DEFAULT_HEARTBEAT_S,
        "quiet interval before a heartbeat on a watch stream",
        **seconds,
    )
    env_option(
        serve,
        "--shutdown-grace",
        "GYOZA_SHUTDOWN_GRACE",
        d.shutdown_grace_s,
        "time unary calls get to finish on SIGTERM",
        **seconds,
    )
    env_option(
        serve,
        "--db-pool-size",
        "GYOZA_DB_POOL_SIZE",
        d.db_pool_size,
        "database connections this server keeps (default %(default)s)",
        type=int,
    )
    env_option(
        serve,
        "--sqlite-synchronous",
        "GYOZA_SQLITE_SYNCHRONOUS",
        d.sqlite_synchronous,
        "SQLite: normal = a commit survives a crash of the server process; full = also of "
        "the machine (an fsync per commit) (default %(default)s)",
        choices=SQLITE_SYNCHRONOUS,
    )
    env_option(
        serve,
        "--db-statement-timeout",
        "GYOZA_DB_STATEMENT_TIMEOUT",
        d.db_statement_timeout_s,
        "PostgreSQL: cut off any statement running longer (the call gets UNAVAILABLE); "
        "0 = no limit (default %(default)s)",
        **seconds,
    )
    env_option(
        serve,
        "--catchup-interval",
        "GYOZA_CATCHUP_INTERVAL",
        DEFAULT_CATCHUP_S,
        "PostgreSQL replicas: how often watched runs and topics are checked against the "
        "tables in case a wake-up notification was lost (default %(default)s)",
        **seconds,
    )
    env_option(
        serve,
        "--lease-seconds",
        "GYOZA_LEASE_SECONDS",
        d.lease_seconds,
        "a worker silent for this long is evicted and its runs handed back",
        type=int,
    )
    env_option(
        serve,
        "--sweep-interval",
        "GYOZA_SWEEP_INTERVAL",
        d.sweep_interval_s,
        "how often expired leases are looked for (at most a quarter of the lease); "
        "eviction happens within lease + interval of the last heartbeat",
        **seconds,
    )
    _add_limits(serve)
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=optional_int(env("GYOZA_METRICS_PORT", "")),
        help="serve Prometheus metrics at http://HOST:PORT/metrics; off when unset "
        "[env GYOZA_METRICS_PORT]",
    )
    env_option(
        serve,
        "--metrics-refresh",
        "GYOZA_METRICS_REFRESH",
        d.metrics_refresh_s,
        "how often runs by state, the queue and workers are re-counted",
        **seconds,
    )
    env_option(
        serve,
        "--db-health-interval",
        "GYOZA_DB_HEALTH_INTERVAL",
        d.db_health_interval_s,
        "how often the database is pinged; health is NOT_SERVING while it does not answer",
        **seconds,
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending schema migrations before serving",
    )

    _add_security(serve)


def _add_security(serve: argparse.ArgumentParser) -> None:
    env_option(
        serve,
        "--api-keys-file",
        "GYOZA_API_KEYS_FILE",
        "",
        "API keys, one ROLE:KEY a line (roles admin, worker, reader); GYOZA_API_KEYS "
        "adds ROLE:KEY,ROLE:KEY. Without keys the server is open",
        metavar="PATH",
    )
    serve.add_argument(
        "--no-reflection",
        dest="reflection",
        action="store_false",
        default=env("GYOZA_REFLECTION", "1").lower() not in ("0", "false", "no", "off"),
        help="do not offer server reflection [env GYOZA_REFLECTION=0]",
    )
    for flag, var, what in (
        ("--tls-cert", "GYOZA_TLS_CERT", "the server's certificate chain (PEM); serves TLS"),
        ("--tls-key", "GYOZA_TLS_KEY", "the private key of --tls-cert (PEM)"),
        (
            "--tls-client-ca",
            "GYOZA_TLS_CLIENT_CA",
            "require client certificates signed by this CA (PEM): mutual TLS",
        ),
    ):
        env_option(serve, flag, var, "", what, metavar="PEM")


LIMIT_FLAGS = (
    # flag, Limits field, env, help
    ("--max-message-bytes", "max_message_bytes", "GYOZA_MAX_MESSAGE_BYTES",
     "largest request accepted; larger ones get RESOURCE_EXHAUSTED"),
    ("--max-json-bytes", "max_json_bytes", "GYOZA_MAX_JSON_BYTES",
     "largest inputs, outputs or topic attributes, as compact JSON"),
    ("--max-payload-bytes", "max_payload_bytes", "GYOZA_MAX_PAYLOAD_BYTES",
     "largest event payload, as compact JSON (a COMPLETED event's outputs excepted)"),
    ("--max-events-per-run", "max_events_per_run", "GYOZA_MAX_EVENTS_PER_RUN",
     "events a run holds before it takes only lifecycle events"),
    ("--max-watch-streams", "max_watch_streams", "GYOZA_MAX_WATCH_STREAMS",
     "WatchEvents, WatchTopic and WatchRuns streams open at once"),
    ("--max-response-bytes", "max_response_bytes", "GYOZA_MAX_RESPONSE_BYTES",
     "largest claim answer or list page: fewer runs are claimed, a page ends early "
     "with has_more; keep it under the clients' receive limit (4 MiB by default)"),
)  # fmt: skip


def _add_limits(p: argparse.ArgumentParser) -> None:
    """The --max-* flags; defaults from domain/limits.py (docs/limits.md)."""
    for flag, name, var, text in LIMIT_FLAGS:
        default = getattr(DEFAULT_LIMITS, name)
        env_option(p, flag, var, default, f"{text} (default %(default)s)", type=int, metavar="N")


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(**{name: getattr(args, name) for _, name, _, _ in LIMIT_FLAGS})


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gyoza_grpc.domain.access import KeysError
    from gyoza_grpc.server import serve
    from gyoza_grpc.server.api.auth import load_api_keys
    from gyoza_grpc.server.store.schema import SchemaOutOfDate
    from gyoza_grpc.tls import TlsError

    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        print("gyoza-grpc: TLS needs both --tls-cert and --tls-key", file=sys.stderr)
        return 2
    try:
        api_keys = load_api_keys(args.api_keys_file, os.environ.get("GYOZA_API_KEYS", ""))
    except (KeysError, OSError) as err:
        print(f"gyoza-grpc: {err}", file=sys.stderr)
        return 1
    try:
        limits = limits_from_args(args)
    except ValueError as err:
        print(f"gyoza-grpc: {err}", file=sys.stderr)
        return 2
    config = ServerConfig(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        watch_heartbeat_s=args.watch_heartbeat,
        shutdown_grace_s=args.shutdown_grace,
        db_pool_size=args.db_pool_size,
        sqlite_synchronous=args.sqlite_synchronous,
        lease_seconds=args.lease_seconds,
        sweep_interval_s=args.sweep_interval,
        migrate=args.migrate,
        api_keys=api_keys,
        reflection=args.reflection,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        db_statement_timeout_s=args.db_statement_timeout,
        catchup_interval_s=args.catchup_interval,
        limits=limits,
        metrics_port=args.metrics_port,
        metrics_refresh_s=args.metrics_refresh,
        db_health_interval_s=args.db_health_interval,
    )
    from gyoza_grpc.server.ops.gc_tuning import tune_for_server

    tune_for_server()
    try:
        asyncio.run(serve(config))
    except SchemaOutOfDate as err:
        print(f"gyoza-grpc: {err}", file=sys.stderr)
        return 3
    except (OSError, TlsError) as err:
        print(f"gyoza-grpc: {err}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, ImportError) as err:
        return database_error(args.database_url, err)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    return 0
