"""Alembic environment: runs on the connection the store hands it (see store/schema.py)."""

from __future__ import annotations

from alembic import context

from gyoza_grpc.server.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
