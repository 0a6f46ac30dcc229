"""The client commands of `gyoza-grpc`: runs, definitions and workers over `gyoza_grpc.client`.

`register(sub)` adds them to the top-level parser; `run(args)` runs the one chosen and returns
its exit code (see `failures` for the codes). Connection, retries and watch resumption are the
client's (`client_from_args`); the commands only read flags and print.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from gyoza_grpc.client_cli.failures import EXIT_CODES_HELP

if TYPE_CHECKING:
    from gyoza_grpc.client import Client

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
# Safe calls: three attempts, about 0.3 s of waits: a restart's blip, not a long outage.
CLI_RETRY_ATTEMPTS = 3
_MAX_TIMEOUT_S = 10**9  # about 30 years; a timedelta holds no more than 10**14


def _common() -> argparse.ArgumentParser:
    from gyoza_grpc.client.channel import add_connection_flags

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
    from gyoza_grpc.client_cli.commands import add_group
    from gyoza_grpc.client_cli.definitions import DEFINITIONS
    from gyoza_grpc.client_cli.runs import RUNS
    from gyoza_grpc.client_cli.workers import WORKERS

    common = _common()
    for group in (RUNS, DEFINITIONS, WORKERS):
        add_group(sub, group, common, _Parser)


def run(args: argparse.Namespace) -> int:
    """Run the chosen client command; errors become one line on stderr and an exit code."""
    from gyoza_grpc.client import GyozaError
    from gyoza_grpc.client_cli.failures import (
        EXIT_INTERRUPTED,
        UsageError,
        report_error,
        report_usage,
    )
    from gyoza_grpc.client_cli.output import Output

    try:
        with client_from_args(args) as client:
            code: int = args.client_handler(args, client, Output(as_json=args.json))
        return code
    except UsageError as err:
        return report_usage(err)
    except GyozaError as err:
        return report_error(err)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head`: the reader left; say nothing more (python docs' recipe)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def client_from_args(args: argparse.Namespace) -> Client:
    """A client for the shared connection flags plus --timeout (close it); a bad flag or TLS
    file is a usage error. Safe calls are tried again a few times (a server restarting);
    `runs watch` resumes through longer outages (the client's default)."""
    from datetime import timedelta

    from gyoza_grpc.client import Client, RetryConfig
    from gyoza_grpc.client.channel import connection_from_args
    from gyoza_grpc.client_cli.failures import UsageError
    from gyoza_grpc.client_cli.inputs import check_utf8

    if not 0 < args.timeout <= _MAX_TIMEOUT_S:  # NaN too
        raise UsageError(f"--timeout must be positive, at most {_MAX_TIMEOUT_S} seconds")
    for name, value in vars(args).items():  # bytes that are not UTF-8 come as surrogates
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                check_utf8(text, name)
    try:
        conn = connection_from_args(args)
    except ValueError as err:  # an empty --target, a TLS file that is missing or not PEM
        raise UsageError(str(err)) from None
    return Client(
        conn.target,
        api_key=conn.api_key,
        tls=conn.credentials or False,
        timeout=timedelta(seconds=args.timeout),
        retry=RetryConfig(max_attempts=CLI_RETRY_ATTEMPTS),
    )
