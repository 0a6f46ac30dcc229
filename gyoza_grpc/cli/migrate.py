"""`gyoza-grpc migrate`: bring the database's schema to the newest revision, then exit."""

from __future__ import annotations

import argparse
import asyncio

from gyoza_grpc.cli.flags import add_database_flag, database_error

NAME = "migrate"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = sub.add_parser("migrate", help="apply schema migrations and exit")
    add_database_flag(migrate)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gyoza_grpc.server.store.engine import make_engines
    from gyoza_grpc.server.store.schema import migrate

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
        return database_error(args.database_url, err)
    print(f"database at revision {head}")
    return 0
