"""partial indexes on the runs' nullable topic, op_definition and request_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 15:00:00.000000

Most runs have no topic, no op_definition and no request_id, yet each of them was still put
into the three indexes on those columns (under NULL): three B-tree inserts of the dozen a
CreateRun makes. Only rows that have a value are indexed now. Every query on these columns
compares them with `=`, which implies IS NOT NULL, so SQLite's and PostgreSQL's planners still
use the indexes; request_id stays unique among the runs that have one (NULLs never collided).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (index, columns, unique), each over the rows where its first column is not NULL.
_INDEXES = (
    ("ix_runs_op_definition_created", ["op_definition", "created_at", "id"], False),
    ("ix_runs_topic_created", ["topic", "created_at", "id"], False),
    ("uq_runs_request_id", ["request_id"], True),
)


def _where(column: str) -> dict[str, sa.TextClause]:
    clause = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": clause, "postgresql_where": clause}


def upgrade() -> None:
    for name, columns, unique in _INDEXES:
        op.drop_index(name, table_name="runs")
        op.create_index(name, "runs", columns, unique=unique, **_where(columns[0]))


def downgrade() -> None:
    for name, columns, unique in _INDEXES:
        op.drop_index(name, table_name="runs")
        op.create_index(name, "runs", columns, unique=unique)
