"""Schema versions through alembic: check, upgrade, and the first-start rule.

An empty database is brought to the latest revision on first start (so the embedded SQLite
default needs no extra command). A database whose schema is behind is refused unless the
caller asks to migrate: `gyoza-grpc migrate`, or `serve --migrate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from gyoza_grpc.server.store.engine import Engines

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this server was built for."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: str | None
    head: str
    empty: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _status(conn: Connection) -> SchemaStatus:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    current = MigrationContext.configure(conn).get_current_revision()
    tables = set(sa.inspect(conn).get_table_names())
    return SchemaStatus(current=current, head=head, empty=not (tables - {"alembic_version"}))


def _upgrade(conn: Connection, revision: str) -> None:
    command.upgrade(alembic_config(conn), revision)


async def schema_status(engines: Engines) -> SchemaStatus:
    return await engines.run_sync(_status)


async def migrate(engines: Engines, revision: str = "head") -> SchemaStatus:
    """Apply migrations up to `revision` in one transaction."""
    await engines.run_sync(lambda conn: _upgrade(conn, revision), write=True)
    return await schema_status(engines)


async def ensure_schema(engines: Engines, *, migrate_if_behind: bool = False) -> SchemaStatus:
    """Create an empty database's schema; refuse an out-of-date one unless told to migrate."""
    status = await schema_status(engines)
    if status.up_to_date:
        return status
    if status.empty or migrate_if_behind:
        return await migrate(engines)
    raise SchemaOutOfDate(
        f"database schema is at revision {status.current or 'none (unversioned tables)'}, "
        f"this server needs {status.head}: run `gyoza-grpc migrate` or `serve --migrate`"
    )
