"""Client commands start fast: `gyoza-grpc runs|definitions|workers|gateway` import neither
SQLAlchemy nor a database driver nor the server (about a third of a second saved a process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "alembic",
    # the server's config and log format are light and the parsers use them; its parts are not
    "gyoza_grpc.server.grpc_server",
    "gyoza_grpc.server.api",
    "gyoza_grpc.server.store",
    "gyoza_grpc.server.streams",
)

CHECK = """
import sys
from gyoza_grpc import cli
args = cli.build_parser().parse_args(sys.argv[1:])
if args.command == "gateway":
    import gyoza_grpc.gateway.launch
else:
    import gyoza_grpc.client_cli.runs, gyoza_grpc.client_cli.definitions
    import gyoza_grpc.client_cli.workers
    cli.client_cli.client_from_args(args).close()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
print(",".join(heavy))
"""


@pytest.mark.parametrize(
    "argv",
    [["runs", "list"], ["definitions", "get", "x"], ["workers", "list"], ["gateway"]],
)
def test_client_commands_do_not_import_the_server_side(argv: list[str]) -> None:
    code = f"HEAVY = {HEAVY!r}\n{CHECK}"
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_serve_still_finds_its_defaults() -> None:
    from gyoza_grpc import cli
    from gyoza_grpc.server import config

    args = cli.build_parser().parse_args(["serve"])
    assert args.database_url == config.DEFAULT_DATABASE_URL
    assert args.watch_heartbeat == config.DEFAULT_HEARTBEAT_S
    assert args.shutdown_grace == config.ServerConfig().shutdown_grace_s
