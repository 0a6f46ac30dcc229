"""DefinitionStore: op definitions, one row per (name, version), each operation one unit of work.

A version is immutable: adding it again with the same body (same fingerprint) is a no-op, with
another body ALREADY_EXISTS. The insert is `INSERT ... ON CONFLICT DO NOTHING RETURNING`, so
concurrent upserts of one version are safe on both backends: on PostgreSQL the loser waits for
the winner's commit, inserts nothing and then reads the winner's row; on SQLite writers are
serialised (BEGIN IMMEDIATE and a writer lock). "The latest version" is the highest
`version_key` (semver precedence as bytes, see domain.definitions.Version) among the rows not
deleted. Deleting only marks rows: runs made from a version keep their copy of everything
they inherited, and the same body added again restores the version.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gyoza_grpc.domain.clock import Clock, from_us, to_us, utc_now
from gyoza_grpc.domain.definitions import (
    Definition,
    Version,
    definition_fingerprint,
    definition_not_found,
)
from gyoza_grpc.domain.errors import AlreadyExists
from gyoza_grpc.domain.inputs import InputSpec, InputType
from gyoza_grpc.domain.model import JSON, Constraints, EventDelivery, RetryPolicy
from gyoza_grpc.server.store.rows import dumps, loads
from gyoza_grpc.server.store.tables import definitions
from gyoza_grpc.server.store.transactions import Transactions, Tx

_US = timedelta(microseconds=1)
_VISIBLE = sa.not_(definitions.c.deleted)


# -- rows <-> definitions ----------------------------------------------------------------------


def _spec_doc(s: InputSpec) -> JSON:
    doc: JSON = {"type": s.type.value, "required": s.required}
    if s.has_default:
        doc["default"] = s.default
    return doc


def _spec_from_doc(doc: Mapping[str, Any]) -> InputSpec:
    return InputSpec(
        type=InputType(doc["type"]),
        required=doc["required"],
        has_default="default" in doc,
        default=doc.get("default"),
    )


def _body(d: Definition) -> str:
    c, rp = d.constraints, d.retry_policy
    return dumps(
        {
            "image": d.image,
            "description": d.description,
            "input_specs": {n: _spec_doc(s) for n, s in d.input_specs.items()},
            "output_specs": {n: _spec_doc(s) for n, s in d.output_specs.items()},
            "constraints": {
                "cpu": c.cpu,
                "ram_mb": c.ram_mb,
                "vram_mb": c.vram_mb,
                "gpu_id": c.gpu_id,
            },
            "retry_policy": {
                "max_attempts": rp.max_attempts,
                "initial_backoff_us": rp.initial_backoff // _US,
                "backoff_multiplier": rp.backoff_multiplier,
                "max_backoff_us": None if rp.max_backoff is None else rp.max_backoff // _US,
            },
            "event_delivery": {
                "topic": d.event_delivery.topic,
                "attributes": d.event_delivery.attributes,
            },
        }
    )


def _from_row(row: Mapping[Any, Any]) -> Definition:
    body = loads(row["body"])
    c, rp, ed = body["constraints"], body["retry_policy"], body["event_delivery"]
    max_backoff_us = rp.get("max_backoff_us")
    return Definition(
        name=row["name"],
        version=row["version"],
        image=body["image"],
        description=body["description"],
        input_specs={n: _spec_from_doc(s) for n, s in body["input_specs"].items()},
        output_specs={n: _spec_from_doc(s) for n, s in body["output_specs"].items()},
        constraints=Constraints(**c),
        retry_policy=RetryPolicy(
            max_attempts=rp["max_attempts"],
            initial_backoff=timedelta(microseconds=rp.get("initial_backoff_us", 0)),
            backoff_multiplier=rp.get("backoff_multiplier", 1.0),
            max_backoff=None if max_backoff_us is None else timedelta(microseconds=max_backoff_us),
        ),
        event_delivery=EventDelivery(topic=ed["topic"], attributes=ed["attributes"]),
        created_at=from_us(row["created_at"]),
    )


class DefinitionStore:
    def __init__(self, transactions: Transactions, *, clock: Clock = utc_now) -> None:
        self._tx = transactions
        self._clock = clock

    # -- writes ----------------------------------------------------------------------------

    async def upsert(self, d: Definition) -> tuple[Definition, bool]:
        """Add version `d` (validated, with its created_at). Returns the stored definition
        and whether anything changed: False when the same version was already there with
        the same body; a deleted version re-sent with its body is restored (True)."""
        assert d.created_at is not None
        created_us = to_us(d.created_at)
        fingerprint = definition_fingerprint(d)

        def work(tx: Tx) -> tuple[Definition, bool]:
            insert = (sqlite_insert if tx.is_sqlite else pg_insert)(definitions)
            stmt = (
                insert.values(
                    name=d.name,
                    version=d.version,
                    version_key=d.semver.key,
                    body=_body(d),
                    body_hash=fingerprint,
                    deleted=False,
                    created_at=created_us,
                    deleted_at=None,
                )
                # Any unique conflict, (name, version) or (name, version_key): with one
                # arbiter index, a concurrent insert's conflict on the other index escaped as
                # an IntegrityError (INTERNAL) on PostgreSQL.
                .on_conflict_do_nothing()
                .returning(definitions.c.name)
            )
            conn = tx.conn
            if conn.execute(stmt).first() is not None:
                return d, True
            # The version exists (committed, possibly by a concurrent upsert we waited for).
            select = sa.select(definitions).where(
                definitions.c.name == d.name, definitions.c.version == d.version
            )
            if not tx.is_sqlite:
                select = select.with_for_update()
            found = conn.execute(select).first()
            if found is None:
                raise AlreadyExists(
                    f"definition '{d.name}' already has a version that sorts equal to "
                    f"'{d.version}'",
                    reason="DEFINITION_VERSION_EXISTS",
                    metadata={"name": d.name, "version": d.version},
                )
            row = found._mapping
            if row["body_hash"] != fingerprint:
                raise AlreadyExists(
                    f"definition '{d.name}' version '{d.version}' already exists with a "
                    "different body: versions are immutable, add a new version",
                    reason="DEFINITION_VERSION_EXISTS",
                    metadata={"name": d.name, "version": d.version},
                )
            if not row["deleted"]:
                return _from_row(row), False
            conn.execute(
                definitions.update()
                .where(definitions.c.name == d.name, definitions.c.version == d.version)
                .values(deleted=False, deleted_at=None)
            )
            return _from_row(row), True

        return await self._tx.write(work)

    async def delete(self, name: str, version: str = "") -> list[str]:
        """Mark `name`'s `version` (every version when empty) deleted; returns the versions
        deleted, latest first. NOT_FOUND when there was nothing to delete."""
        conditions = [definitions.c.name == name, _VISIBLE]
        if version:
            conditions.append(definitions.c.version == version)
        stmt = (
            definitions.update()
            .where(*conditions)
            .values(deleted=True, deleted_at=to_us(self._clock()))
            .returning(definitions.c.version)
        )

        def work(tx: Tx) -> list[str]:
            return [r.version for r in tx.conn.execute(stmt)]

        deleted = await self._tx.write(work)
        if not deleted:
            raise definition_not_found(name, version)
        return sorted(deleted, key=Version.parse, reverse=True)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, name: str, version: str = "") -> Definition:
        """One version, or the latest (highest semantic version) when `version` is empty."""
        stmt = sa.select(definitions).where(definitions.c.name == name, _VISIBLE)
        if version:
            stmt = stmt.where(definitions.c.version == version)
        else:
            stmt = stmt.order_by(definitions.c.version_key.desc()).limit(1)

        def work(tx: Tx) -> Any:
            return tx.conn.execute(stmt).first()

        row = await self._tx.read(work)
        if row is None:
            raise definition_not_found(name, version)
        return _from_row(row._mapping)

    async def list_versions(self, name: str) -> list[Definition]:
        """Every version of `name`, latest first; NOT_FOUND when it has none."""
        stmt = (
            sa.select(definitions)
            .where(definitions.c.name == name, _VISIBLE)
            .order_by(definitions.c.version_key.desc())
        )

        def work(tx: Tx) -> list[Definition]:
            return [_from_row(r._mapping) for r in tx.conn.execute(stmt)]

        found = await self._tx.read(work)
        if not found:
            raise definition_not_found(name)
        return found

    async def list_latest(
        self, *, limit: int, starting_after: str = ""
    ) -> tuple[list[Definition], bool]:
        """The latest version of each definition whose name sorts after `starting_after`,
        by name; has_more when more exist past `limit`."""
        newer = definitions.alias("newer")
        has_newer = (
            sa.select(newer.c.name)
            .where(
                newer.c.name == definitions.c.name,
                sa.not_(newer.c.deleted),
                newer.c.version_key > definitions.c.version_key,
            )
            .exists()
        )
        stmt = sa.select(definitions).where(_VISIBLE, ~has_newer)
        if starting_after:
            stmt = stmt.where(definitions.c.name > starting_after)
        stmt = stmt.order_by(definitions.c.name).limit(limit + 1)

        def work(tx: Tx) -> list[Any]:
            return list(tx.conn.execute(stmt).all())

        found = await self._tx.read(work)
        return [_from_row(r._mapping) for r in found[:limit]], len(found) > limit
