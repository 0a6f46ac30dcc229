"""the lease clock: when an eviction sweep last committed

Revision ID: 0006
Revises: 0005

A database outage longer than the lease evicted every worker the moment the database came back:
their heartbeats had been refused, not missed. Each sweep now records its time in this one-row
table; a gap in it is time the database could record no heartbeat, credited to the leases.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "lease_clock",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ticked_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lease_clock")),
    )
    # 0: no sweep recorded yet (the first one credits nothing).
    op.bulk_insert(table, [{"id": 1, "ticked_at": 0}])


def downgrade() -> None:
    op.drop_table("lease_clock")
