"""op definitions, and the definition version of runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column(
            "name",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("version_key", sa.LargeBinary(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_definitions")),
    )
    with op.batch_alter_table("definitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_definitions_name_version_key", ["name", "version_key"], unique=True
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("definition_version", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("definition_version")
    with op.batch_alter_table("definitions", schema=None) as batch_op:
        batch_op.drop_index("ix_definitions_name_version_key")
    op.drop_table("definitions")
