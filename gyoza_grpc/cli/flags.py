"""Flag helpers the programs share: a flag whose default comes from the environment, and the
types argparse parses values with (a usage error names the flag)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gyoza_grpc.server.config import DEFAULT_DATABASE_URL


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_option(p: Any, flag: str, var: str, default: object, text: str, **kwargs: Any) -> None:
    """A flag whose default is the environment variable `var` when set, else `default`.
    The default is passed as text, so argparse parses it with the flag's `type` like a
    command-line value: a bad variable is a usage error naming the flag."""
    p.add_argument(flag, default=env(var, str(default)), help=f"{text} [env {var}]", **kwargs)


def optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def port(text: str) -> int:
    """A TCP port: grpc would silently listen on one modulo 65536, aiohttp fail to bind."""
    number = int(text)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port (0..65535)")
    return number


def int32(text: str) -> int:
    """An integer that fits the int32 field it is sent in."""
    from gyoza_grpc.client_cli.inputs import int32 as parse

    return parse(text)


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_database_flag(p: argparse.ArgumentParser) -> None:
    env_option(
        p,
        "--database-url",
        "GYOZA_DATABASE_URL",
        DEFAULT_DATABASE_URL,
        "SQLAlchemy async URL: sqlite+aiosqlite:///PATH (default %(default)s) or "
        "postgresql+asyncpg://USER@HOST/DB",
    )


def database_error(url: str, err: Exception) -> int:
    """One line, not a traceback, for a database that cannot be reached, parsed or opened."""
    from sqlalchemy.exc import DBAPIError

    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    shown = url.split("@", 1)[-1] if "@" in url else url  # never print a password
    hint = " (the drivers are sqlite+aiosqlite and postgresql+asyncpg)"
    hint = hint if isinstance(err, ImportError) else ""
    print(f"gyoza-grpc: cannot use the database {shown}: {cause}{hint}", file=sys.stderr)
    return 1


def not_utf8(args: argparse.Namespace) -> str | None:
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
