"""The client commands of `gyoza-grpc`: runs, definitions and workers over the typed stubs.

`register(sub)` adds them to the top-level parser; `run(args)` runs the one chosen and returns
its exit code (see `failures` for the codes).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any

from gyoza_grpc.client_cli.failures import EXIT_CODES_HELP

CLIENT_COMMANDS = ("runs", "definitions", "workers")


class _Parser(argparse.ArgumentParser):
    """Client sub-commands list the exit codes (kept as laid out) under their help."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("description"):
            kwargs["description"] = textwrap.fill(kwargs["description"], 88)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)


def _common() -> argparse.ArgumentParser:
    from gyoza_grpc.client_cli.connection import add_connection_flags

    common = argparse.ArgumentParser(add_help=False)
    add_connection_flags(common)
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

    from gyoza_grpc.client_cli.connection import Connection
    from gyoza_grpc.client_cli.failures import (
        EXIT_INTERRUPTED,
        UsageError,
        report_rpc_error,
        report_usage,
    )
    from gyoza_grpc.client_cli.output import Output

    try:
        conn = Connection.from_args(args)
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
