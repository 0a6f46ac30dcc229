"""The client commands of `gyoza-grpc`: runs, definitions and workers over the typed stubs.

`register(sub)` adds them to the top-level parser; `run(args)` runs the one chosen and returns
its exit code (see `failures` for the codes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from gyoza_grpc.client_cli.failures import EXIT_CODES_HELP

if TYPE_CHECKING:
    from gyoza_grpc.channel import Connection

CLIENT_COMMANDS = ("runs", "definitions", "workers")


class _Parser(argparse.ArgumentParser):
    """Client sub-commands list the exit codes (kept as laid out) under their help."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("description"):
            kwargs["description"] = textwrap.fill(kwargs["description"], 88)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)


DEFAULT_TIMEOUT_S = 30.0


def _common() -> argparse.ArgumentParser:
    from gyoza_grpc.channel import add_connection_flags

    common = argparse.ArgumentParser(add_help=False)
    add_connection_flags(common).add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="deadline of each call (not of `runs watch`; default %(default)s)",
    )
    common.add_argument(
        "--json", action="store_true", help="print proto3 JSON (streams: one object per line)"
    )
    return common


def register(sub: Any) -> None:
    """Add `runs`, `definitions` and `workers` to the top-level sub-parsers."""
    from gyoza_grpc.client_cli.definitions import add_definitions
    from gyoza_grpc.client_cli.runs import add_runs
    from gyoza_grpc.client_cli.workers import add_workers

    common = _common()
    add_runs(sub, common, _Parser)
    add_definitions(sub, common, _Parser)
    add_workers(sub, common, _Parser)


def run(args: argparse.Namespace) -> int:
    """Run the chosen client command; errors become one line on stderr and an exit code."""
    import grpc

    from gyoza_grpc.client_cli.failures import (
        EXIT_INTERRUPTED,
        UsageError,
        report_rpc_error,
        report_usage,
    )
    from gyoza_grpc.client_cli.output import Output

    try:
        conn = _connection(args)
        code: int = args.client_handler(args, conn, Output(as_json=args.json))
        return code
    except UsageError as err:
        return report_usage(err)
    except grpc.RpcError as err:
        return report_rpc_error(err)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head`: the reader left; say nothing more (python docs' recipe)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _connection(args: argparse.Namespace) -> Connection:
    """The shared connection flags plus --timeout; a bad flag or TLS file is a usage error."""
    from gyoza_grpc.channel import connection_from_args
    from gyoza_grpc.client_cli.failures import UsageError
    from gyoza_grpc.client_cli.inputs import check_utf8

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    for name, value in vars(args).items():  # bytes that are not UTF-8 come as surrogates
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                check_utf8(text, name)
    try:
        conn = connection_from_args(args)
    except ValueError as err:  # an empty --target, a TLS file that is missing or not PEM
        raise UsageError(str(err)) from None
    return dataclasses.replace(conn, timeout_s=args.timeout)
