"""workers.not_ready_reason: why a worker claims nothing for now

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000

A worker whose container engine is unreachable keeps heartbeating but claims nothing, and
says why in each heartbeat; GetWorker and ListWorkers show it. Existing rows get "" (ready).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("not_ready_reason", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("not_ready_reason")
