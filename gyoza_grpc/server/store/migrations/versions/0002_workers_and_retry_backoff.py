"""workers, claims and retry backoff

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("initial_backoff_us", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("backoff_multiplier", sa.Float(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("max_backoff_us", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("next_attempt_at", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("uncounted_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.create_index(
            "ix_runs_claim", ["state", sa.text("priority DESC"), "created_at", "id"], unique=False
        )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index("ix_attempts_worker", ["worker_id", "state"], unique=False)
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cpu", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.BigInteger(), nullable=False),
        sa.Column("last_heartbeat", sa.BigInteger(), nullable=False),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index("ix_workers_state_lease", ["state", "lease_expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index("ix_workers_state_lease")
    op.drop_table("workers")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_worker")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_claim")
        batch_op.drop_column("uncounted_attempts")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("max_backoff_us")
        batch_op.drop_column("backoff_multiplier")
        batch_op.drop_column("initial_backoff_us")
