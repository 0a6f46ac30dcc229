"""The schema, shared by SQLite and PostgreSQL.

Times are integer microseconds since the UNIX epoch (exact, comparable, dialect-neutral).
JSON documents are stored as text the store serialises itself (one json.dumps per write).
Every list filter has an index ending in (created_at, id), the keyset paging order.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _not_null(column: str) -> dict[str, Any]:
    """A partial index's clause: only the rows where `column` has a value."""
    clause = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": clause, "postgresql_where": clause}


runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("request_id", sa.String(256), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("image", sa.String(1024), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("cpu", sa.Integer, nullable=True),
    sa.Column("ram_mb", sa.Integer, nullable=True),
    sa.Column("vram_mb", sa.Integer, nullable=True),
    sa.Column("gpu_id", sa.Integer, nullable=True),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("initial_backoff_us", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("backoff_multiplier", sa.Float, nullable=False, server_default="1"),
    sa.Column("max_backoff_us", sa.BigInteger, nullable=True),
    # A PENDING run is claimable once next_attempt_at <= now (0: at once).
    sa.Column("next_attempt_at", sa.BigInteger, nullable=False, server_default="0"),
    # Attempts lost before they started (not counted against max_attempts).
    sa.Column("uncounted_attempts", sa.Integer, nullable=False, server_default="0"),
    # NULL when the run publishes to no topic, so the topic index stays small.
    sa.Column("topic", sa.String(256), nullable=True),
    sa.Column("topic_attributes", sa.Text, nullable=False),
    sa.Column("op_definition", sa.String(256), nullable=True),
    # The op_definition version the run was made from; NULL for ad-hoc runs.
    sa.Column("definition_version", sa.String(128), nullable=True),
    sa.Column("current_attempt", sa.Integer, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_runs_created", "created_at", "id"),
    sa.Index("ix_runs_state_created", "state", "created_at", "id"),
    sa.Index("ix_runs_image_created", "image", "created_at", "id"),
    # Partial: most runs have no op_definition, topic or request_id, and leaving them out
    # spares a CreateRun three B-tree inserts (migration 0004).
    sa.Index(
        "ix_runs_op_definition_created",
        "op_definition",
        "created_at",
        "id",
        **_not_null("op_definition"),
    ),
    sa.Index("ix_runs_topic_created", "topic", "created_at", "id", **_not_null("topic")),
    sa.Index("uq_runs_request_id", "request_id", unique=True, **_not_null("request_id")),
    # ClaimRuns: PENDING runs by priority (higher first), then oldest.
    sa.Index("ix_runs_claim", "state", sa.text("priority DESC"), "created_at", "id"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("progress", sa.Integer, nullable=False),
    sa.Column("outputs", sa.Text, nullable=False),
    sa.Column("duration_ms", sa.BigInteger, nullable=False),
    sa.Column("worker_id", sa.String(256), nullable=False),
    sa.Column("error_message", sa.Text, nullable=False),
    sa.Column("gpu_id", sa.Integer, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    # What a worker holds: its attempts whose run is ASSIGNED or RUNNING.
    sa.Index("ix_attempts_worker", "worker_id", "state"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("time", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("msg", sa.Text, nullable=False),
    sa.Column("progress", sa.Integer, nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
)

# One row per topic: last_cursor is taken (UPDATE ... RETURNING) under the row lock in the
# transaction that writes the events, so a topic's cursors commit in order, without gaps.
topics = sa.Table(
    "topics",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("last_cursor", sa.BigInteger, nullable=False),
)

topic_events = sa.Table(
    "topic_events",
    metadata,
    sa.Column("topic", sa.String(256), sa.ForeignKey("topics.name"), primary_key=True),
    sa.Column("cursor", sa.BigInteger, primary_key=True),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.ForeignKeyConstraint(["run_id", "seq"], ["events.run_id", "events.seq"]),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(256), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cpu", sa.Integer, nullable=False),
    sa.Column("ram_mb", sa.Integer, nullable=False),
    # [{"gpu_id": 0, "vram_mb": 24000}, ...]
    sa.Column("gpus", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("registered_at", sa.BigInteger, nullable=False),
    sa.Column("last_heartbeat", sa.BigInteger, nullable=False),
    sa.Column("lease_expires_at", sa.BigInteger, nullable=False),
    # Why the worker claims nothing for now, as its last heartbeat said ("" while it claims).
    sa.Column("not_ready_reason", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_workers_state_lease", "state", "lease_expires_at"),
)

# One row (id 1): when an eviction sweep last committed, on any replica. A gap in these ticks is
# time the database could record no heartbeat (unreachable, or no server running), and it does
# not count against the workers' leases (WorkerStore.evict_expired).
lease_clock = sa.Table(
    "lease_clock",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ticked_at", sa.BigInteger, nullable=False),
)

# One row per (name, version) of an op definition; a version is immutable once added.
# version_key is the version's semver precedence as bytes (domain.definitions.Version.key):
# byte order is semver order on both backends (BLOB / bytea), so the latest version of a name
# is the first row of ix_definitions_name_version_key in descending order. Deleting sets
# `deleted` (runs made from a version keep naming it; re-adding the same body restores it).
# Names collate bytewise on PostgreSQL too, so ListDefinitions pages in the same order there.
definitions = sa.Table(
    "definitions",
    metadata,
    sa.Column(
        "name",
        sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql"),
        primary_key=True,
    ),
    sa.Column("version", sa.String(128), primary_key=True),
    sa.Column("version_key", sa.LargeBinary, nullable=False),
    # The definition (image, specs, constraints, retry policy, event delivery) as JSON.
    sa.Column("body", sa.Text, nullable=False),
    # domain.definitions.definition_fingerprint: the same version re-sent with the same body
    # is a no-op; with another body, ALREADY_EXISTS.
    sa.Column("body_hash", sa.String(64), nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
    sa.Index("ix_definitions_name_version_key", "name", "version_key", unique=True),
)
