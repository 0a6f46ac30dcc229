"""`gyoza-grpc`: one command line for every program of the project.

Each program is a module with `NAME`, `register(sub)` (its flags) and `run(args)` (its exit
code): `serve`, `migrate`, `worker` and `gateway` here, and the client commands (`runs`,
`definitions`, `workers`) in `gyoza_grpc.client_cli`. Only light modules load at start: a client
command must not pay for SQLAlchemy, the database drivers or the server, so each `run` imports
what it needs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Protocol

from gyoza_grpc import client_cli
from gyoza_grpc.cli import gateway, migrate, serve, worker
from gyoza_grpc.cli.flags import env, not_utf8
from gyoza_grpc.server.ops.log_format import FORMATS, configure_logging


class Program(Protocol):
    NAME: str

    def register(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


PROGRAMS: dict[str, Program] = {p.NAME: p for p in (serve, migrate, worker, gateway)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gyoza-grpc",
        description="gyoza-grpc: serve, migrate, worker, gateway, and the client commands "
        "(runs, definitions, workers).",
    )
    parser.add_argument("--log-level", default=env("GYOZA_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=env("GYOZA_LOG_FORMAT", "text"),
        help="text lines, or one JSON object a line (default %(default)s) [env GYOZA_LOG_FORMAT]",
    )
    parser.add_argument(
        "--access-log",
        choices=("on", "off"),
        default=env("GYOZA_ACCESS_LOG", "on"),
        help="one line per RPC on the gyoza_grpc.access logger (default %(default)s) "
        "[env GYOZA_ACCESS_LOG]",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for program in PROGRAMS.values():
        program.register(sub)
    client_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    program = PROGRAMS.get(args.command)
    if program is not None and (bad := not_utf8(args)):
        print(f"gyoza-grpc: {bad}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, args.log_format, access_log=args.access_log == "on")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if program is not None:
        return program.run(args)
    return client_cli.run(args)
