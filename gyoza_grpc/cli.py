"""`gyoza-grpc` command line: serve, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from gyoza_grpc.config import ServerConfig
from gyoza_grpc.store.engine import DEFAULT_DATABASE_URL
from gyoza_grpc.streams.watch import DEFAULT_HEARTBEAT_S


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _add_database(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=_env("GYOZA_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="SQLAlchemy async URL: sqlite+aiosqlite:///PATH (default %(default)s) or "
        "postgresql+asyncpg://USER@HOST/DB [env GYOZA_DATABASE_URL]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gyoza-grpc", description=__doc__)
    parser.add_argument("--log-level", default=_env("GYOZA_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument(
        "--host",
        default=_env("GYOZA_HOST", "127.0.0.1"),
        help="address to listen on (default %(default)s) [env GYOZA_HOST]",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(_env("GYOZA_PORT", "50051")),
        help="port to listen on; 0 picks a free one (default %(default)s) [env GYOZA_PORT]",
    )
    _add_database(serve)
    serve.add_argument(
        "--watch-heartbeat",
        type=float,
        default=float(_env("GYOZA_WATCH_HEARTBEAT", str(DEFAULT_HEARTBEAT_S))),
        metavar="SECONDS",
        help="quiet interval before a heartbeat on a watch stream [env GYOZA_WATCH_HEARTBEAT]",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(_env("GYOZA_SHUTDOWN_GRACE", "5")),
        metavar="SECONDS",
        help="time unary calls get to finish on SIGTERM [env GYOZA_SHUTDOWN_GRACE]",
    )
    serve.add_argument("--db-pool-size", type=int, default=int(_env("GYOZA_DB_POOL_SIZE", "10")))
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending schema migrations before serving",
    )

    migrate = sub.add_parser("migrate", help="apply schema migrations and exit")
    _add_database(migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "serve":
        from gyoza_grpc.server import serve
        from gyoza_grpc.store.schema import SchemaOutOfDate

        config = ServerConfig(
            host=args.host,
            port=args.port,
            database_url=args.database_url,
            watch_heartbeat_s=args.watch_heartbeat,
            shutdown_grace_s=args.shutdown_grace,
            db_pool_size=args.db_pool_size,
            migrate=args.migrate,
        )
        try:
            asyncio.run(serve(config))
        except SchemaOutOfDate as err:
            print(f"gyoza-grpc: {err}", file=sys.stderr)
            return 3
        except OSError as err:
            print(f"gyoza-grpc: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
            return 130
        return 0
    if args.command == "migrate":
        from gyoza_grpc.store.engine import make_engines
        from gyoza_grpc.store.schema import migrate

        async def _migrate() -> str:
            engines = make_engines(args.database_url)
            try:
                status = await migrate(engines)
            finally:
                await engines.dispose()
            return status.head

        print(f"database at revision {asyncio.run(_migrate())}")
        return 0
    return 2
