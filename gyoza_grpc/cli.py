"""`gyoza-grpc` command line: serve, migrate, worker, and the client commands (runs, ...)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

# Only light modules here: the client commands and `gateway` must not pay for SQLAlchemy,
# the database drivers or the server. `serve`, `migrate` and `worker` import what they need.
from gyoza_grpc import client_cli
from gyoza_grpc.channel import add_connection_flags, add_target_flag
from gyoza_grpc.config import (
    DEFAULT_CATCHUP_S,
    DEFAULT_DATABASE_URL,
    DEFAULT_HEARTBEAT_S,
    SQLITE_SYNCHRONOUS,
    ServerConfig,
)
from gyoza_grpc.domain.limits import DEFAULT_LIMITS, Limits
from gyoza_grpc.ops.log_format import FORMATS, configure_logging

_DEFAULTS = ServerConfig()


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def _port(text: str) -> int:
    """A TCP port: grpc would silently listen on one modulo 65536, aiohttp fail to bind."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0..65535)")
    return port


def int32(text: str) -> int:
    """An integer that fits the int32 field it is sent in."""
    from gyoza_grpc.client_cli.inputs import int32 as parse

    return parse(text)


def _option(p: Any, flag: str, env: str, default: object, text: str, **kwargs: Any) -> None:
    """A flag whose default is the environment variable `env` when set, else `default`.
    The default is passed as text, so argparse parses it with the flag's `type` like a
    command-line value: a bad variable is a usage error naming the flag."""
    p.add_argument(flag, default=_env(env, str(default)), help=f"{text} [env {env}]", **kwargs)


def _add_database(p: argparse.ArgumentParser) -> None:
    _option(
        p,
        "--database-url",
        "GYOZA_DATABASE_URL",
        DEFAULT_DATABASE_URL,
        "SQLAlchemy async URL: sqlite+aiosqlite:///PATH (default %(default)s) or "
        "postgresql+asyncpg://USER@HOST/DB",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gyoza-grpc", description=__doc__)
    parser.add_argument("--log-level", default=_env("GYOZA_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=_env("GYOZA_LOG_FORMAT", "text"),
        help="text lines, or one JSON object a line (default %(default)s) [env GYOZA_LOG_FORMAT]",
    )
    parser.add_argument(
        "--access-log",
        choices=("on", "off"),
        default=_env("GYOZA_ACCESS_LOG", "on"),
        help="one line per RPC on the gyoza_grpc.access logger (default %(default)s) "
        "[env GYOZA_ACCESS_LOG]",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    d = _DEFAULTS
    _option(serve, "--host", "GYOZA_HOST", d.host, "address to listen on (default %(default)s)")
    _option(
        serve,
        "--port",
        "GYOZA_PORT",
        d.port,
        "port to listen on; 0 picks a free one (default %(default)s)",
        type=_port,
    )
    _add_database(serve)
    seconds: dict[str, Any] = {"type": float, "metavar": "SECONDS"}
    _option(
        serve,
        "--watch-heartbeat",
        "GYOZA_WATCH_HEARTBEAT",
        DEFAULT_HEARTBEAT_S,
        "quiet interval before a heartbeat on a watch stream",
        **seconds,
    )
    _option(
        serve,
        "--shutdown-grace",
        "GYOZA_SHUTDOWN_GRACE",
        d.shutdown_grace_s,
        "time unary calls get to finish on SIGTERM",
        **seconds,
    )
    _option(
        serve,
        "--db-pool-size",
        "GYOZA_DB_POOL_SIZE",
        d.db_pool_size,
        "database connections this server keeps (default %(default)s)",
        type=int,
    )
    _option(
        serve,
        "--sqlite-synchronous",
        "GYOZA_SQLITE_SYNCHRONOUS",
        d.sqlite_synchronous,
        "SQLite: normal = a commit survives a crash of the server process; full = also of "
        "the machine (an fsync per commit) (default %(default)s)",
        choices=SQLITE_SYNCHRONOUS,
    )
    _option(
        serve,
        "--db-statement-timeout",
        "GYOZA_DB_STATEMENT_TIMEOUT",
        d.db_statement_timeout_s,
        "PostgreSQL: cut off any statement running longer (the call gets UNAVAILABLE); "
        "0 = no limit (default %(default)s)",
        **seconds,
    )
    _option(
        serve,
        "--catchup-interval",
        "GYOZA_CATCHUP_INTERVAL",
        DEFAULT_CATCHUP_S,
        "PostgreSQL replicas: how often watched runs and topics are checked against the "
        "tables in case a wake-up notification was lost (default %(default)s)",
        **seconds,
    )
    _option(
        serve,
        "--lease-seconds",
        "GYOZA_LEASE_SECONDS",
        d.lease_seconds,
        "a worker silent for this long is evicted and its runs handed back",
        type=int,
    )
    _option(
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
        default=_optional_int(_env("GYOZA_METRICS_PORT", "")),
        help="serve Prometheus metrics at http://HOST:PORT/metrics; off when unset "
        "[env GYOZA_METRICS_PORT]",
    )
    _option(
        serve,
        "--metrics-refresh",
        "GYOZA_METRICS_REFRESH",
        d.metrics_refresh_s,
        "how often runs by state, the queue and workers are re-counted",
        **seconds,
    )
    _option(
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

    migrate = sub.add_parser("migrate", help="apply schema migrations and exit")
    _add_database(migrate)
    _add_worker(sub)
    _add_gateway(sub)
    client_cli.register(sub)
    return parser


def _add_security(serve: argparse.ArgumentParser) -> None:
    _option(
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
        default=_env("GYOZA_REFLECTION", "1").lower() not in ("0", "false", "no", "off"),
        help="do not offer server reflection [env GYOZA_REFLECTION=0]",
    )
    for flag, env, what in (
        ("--tls-cert", "GYOZA_TLS_CERT", "the server's certificate chain (PEM); serves TLS"),
        ("--tls-key", "GYOZA_TLS_KEY", "the private key of --tls-cert (PEM)"),
        (
            "--tls-client-ca",
            "GYOZA_TLS_CLIENT_CA",
            "require client certificates signed by this CA (PEM): mutual TLS",
        ),
    ):
        _option(serve, flag, env, "", what, metavar="PEM")


_LIMIT_FLAGS = (
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
    for flag, name, env, text in _LIMIT_FLAGS:
        default = getattr(DEFAULT_LIMITS, name)
        _option(p, flag, env, default, f"{text} (default %(default)s)", type=int, metavar="N")


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(**{name: getattr(args, name) for _, name, _, _ in _LIMIT_FLAGS})


def _gpu(text: str) -> tuple[int, int]:
    from gyoza_grpc.worker.launch import parse_gpu

    return parse_gpu(text)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="run a worker that executes each run in a container of its image, or a command",
        description="Claim runs that fit these resources and run each: in a container of the "
        "run's image (--executor docker) or through COMMAND (--executor command, the "
        "default). Either way the op gets the inputs as JSON on its stdin and writes the "
        "outputs as a JSON object on its stdout, 'progress: N' and 'info: TEXT' lines on its "
        "stderr. SIGTERM or SIGINT stops claiming and lets running runs finish within "
        "--shutdown-grace.",
    )
    _option(
        worker,
        "--executor",
        "GYOZA_WORKER_EXECUTOR",
        "command",
        "docker: each run in a container of its image (needs the docker extra); "
        "command: each run through --command (default %(default)s)",
        choices=("docker", "command"),
    )
    worker.add_argument(
        "--command",
        dest="run_command",
        metavar="COMMAND",
        default=_env("GYOZA_WORKER_COMMAND", ""),
        help="--executor command: run for each run, split like a shell would (no shell is "
        "used unless --shell) [env GYOZA_WORKER_COMMAND]",
    )
    worker.add_argument("--shell", action="store_true", help="run COMMAND with /bin/sh -c")
    docker = worker.add_argument_group("--executor docker")
    _option(
        docker,
        "--docker-host",
        "DOCKER_HOST",
        "",
        "the Docker Engine API: unix:///PATH (a podman socket works too) or tcp://HOST:PORT "
        "(default the local socket, unix:///var/run/docker.sock)",
        metavar="URL",
    )
    _option(
        docker,
        "--pull",
        "GYOZA_WORKER_PULL",
        "missing",
        "pull a run's image only when the engine lacks it, always, or never (default %(default)s)",
        choices=("missing", "always", "never"),
    )
    _option(
        docker,
        "--network",
        "GYOZA_WORKER_NETWORK",
        "none",
        "the network containers join: none (default: no network but loopback), bridge, or "
        "a network's name",
        metavar="NAME",
    )
    docker.add_argument(
        "--label",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a label on every container, besides gyoza.run_id, gyoza.attempt and "
        "gyoza.worker_id; repeat for more",
    )
    worker.add_argument(
        "--env",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a variable every op gets (a container's environment, or added to the "
        "command's); repeat for more",
    )
    worker.add_argument(
        "--stop-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="when a run is stopped (cancelled, shutdown), how long its op gets between "
        "SIGTERM and SIGKILL (default %(default)s)",
    )
    worker.add_argument(
        "--max-output-bytes",
        type=int,
        default=1024 * 1024,
        metavar="N",
        help="the largest stdout an op may write (its outputs); past it the op is stopped and "
        "the run fails (default %(default)s, the server's default --max-json-bytes)",
    )
    worker.add_argument(
        "--worker-id",
        default=_env("GYOZA_WORKER_ID", ""),
        help="unique per worker process (default HOSTNAME-PID) [env GYOZA_WORKER_ID]",
    )
    worker.add_argument("--cpu", type=int32, help="CPUs to declare (default: this machine's)")
    worker.add_argument("--ram-mb", type=int32, help="RAM to declare (default: this machine's)")
    worker.add_argument(
        "--gpu",
        action="append",
        type=_gpu,
        default=[],
        metavar="ID:VRAM_MB",
        help="a GPU to declare, e.g. 0:24000; repeat for more",
    )
    worker.add_argument("--tag", action="append", default=[], help="a tag; repeat for more")
    worker.add_argument(
        "--max-concurrency", type=int, help="runs at once (default: --cpu, at least 1)"
    )
    worker.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        help="default: a third of the server's lease",
    )
    worker.add_argument(
        "--claim-wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long one claim waits for work (long-poll, at most 60; default %(default)s)",
    )
    worker.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running runs get to finish before they are killed and "
        "reported FAILED (default %(default)s)",
    )
    add_connection_flags(worker)


def _add_gateway(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = sub.add_parser(
        "gateway",
        help="serve the original gyoza REST routes, translated to gRPC calls",
        description="A JSON-over-HTTP gateway to a gyoza-grpc server: GET/POST /runs, "
        "/runs/{id}/..., /definitions/{name}, server-sent events at /runs/{id}/events/stream, "
        "the OpenAPI document at /openapi.json. Needs the rest extra: "
        "pip install 'gyoza-grpc[rest]'.",
    )
    add_target_flag(gateway, "the gRPC server")
    _option(
        gateway,
        "--host",
        "GYOZA_GATEWAY_HOST",
        "127.0.0.1",
        "address to listen on (default %(default)s)",
    )
    _option(
        gateway,
        "--port",
        "GYOZA_GATEWAY_PORT",
        5555,
        "port to listen on (default %(default)s)",
        type=_port,
    )
    _option(
        gateway,
        "--timeout",
        "GYOZA_GATEWAY_TIMEOUT",
        30,
        "deadline of each gRPC call but the event stream; past it: 504",
        type=float,
        metavar="SECONDS",
    )


def _database_error(url: str, err: Exception) -> int:
    """One line, not a traceback, for a database that cannot be reached, parsed or opened."""
    from sqlalchemy.exc import DBAPIError

    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    shown = url.split("@", 1)[-1] if "@" in url else url  # never print a password
    hint = " (the drivers are sqlite+aiosqlite and postgresql+asyncpg)"
    hint = hint if isinstance(err, ImportError) else ""
    print(f"gyoza-grpc: cannot use the database {shown}: {cause}{hint}", file=sys.stderr)
    return 1


def _not_utf8(args: argparse.Namespace) -> str | None:
    """The first argument whose bytes are not UTF-8 (Python hands them over as surrogates,
    which no gRPC string, URL or file name of ours can carry), as a message; else None."""
    for name, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode()
                except UnicodeEncodeError:
                    flag = "--" + name.replace("_", "-")
                    return f"{flag}: {text!r} is not valid UTF-8"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("serve", "migrate", "worker", "gateway") and (bad := _not_utf8(args)):
        print(f"gyoza-grpc: {bad}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, args.log_format, access_log=args.access_log == "on")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "serve":
        from sqlalchemy.exc import SQLAlchemyError

        from gyoza_grpc.api.auth import load_api_keys
        from gyoza_grpc.domain.access import KeysError
        from gyoza_grpc.server import serve
        from gyoza_grpc.store.schema import SchemaOutOfDate
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
            limits = _limits(args)
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
        from gyoza_grpc.ops.gc_tuning import tune_for_server

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
            return _database_error(args.database_url, err)
        except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
            return 130
        return 0
    if args.command == "migrate":
        from sqlalchemy.exc import SQLAlchemyError

        from gyoza_grpc.store.engine import make_engines
        from gyoza_grpc.store.schema import migrate

        async def _migrate() -> str:
            engines = make_engines(args.database_url)
            try:
                status = await migrate(engines)
            finally:
                await engines.dispose()
            return status.head

        try:
            head = asyncio.run(_migrate())
        except (OSError, SQLAlchemyError, ImportError) as err:
            return _database_error(args.database_url, err)
        print(f"database at revision {head}")
        return 0
    if args.command in client_cli.CLIENT_COMMANDS:
        return client_cli.run(args)
    if args.command == "worker":
        from gyoza_grpc.worker.launch import run_worker

        return run_worker(args)
    if args.command == "gateway":
        from gyoza_grpc.gateway.launch import run_gateway

        return run_gateway(args)
    return 2
