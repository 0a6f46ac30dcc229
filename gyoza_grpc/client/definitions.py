"""DefinitionService's calls: versioned op definitions, and runs made from them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from gyoza.v1 import definitions_pb2, runs_pb2
from gyoza_grpc.client.convert import JsonObject, to_struct
from gyoza_grpc.client.paging import AsyncPager, Page
from gyoza_grpc.client.runs import new_request_id
from gyoza_grpc.client.transport import Transport

DEFINITIONS_PAGE_SIZE = 100  # the most ListDefinitions answers at once


class DefinitionCalls:
    """The DefinitionService part of `AsyncClient` (and, through it, of `Client`)."""

    _transport: Transport

    async def upsert_definition(
        self, definition: definitions_pb2.Definition, *, timeout: timedelta | None = None
    ) -> definitions_pb2.UpsertDefinitionResponse:
        """Add a version of an op definition; the answer's `created` is False when that
        version was already stored with the same body (nothing changed). Retried: sending
        the same version twice stores it once (a retried call whose first try got through
        answers `created=False`)."""
        request = definitions_pb2.UpsertDefinitionRequest(definition=definition)
        resp: definitions_pb2.UpsertDefinitionResponse = await self._transport.unary(
            self._transport.stubs.definitions.UpsertDefinition,
            request,
            timeout=timeout,
            retry=True,
        )
        return resp

    async def get_definition(
        self, name: str, *, version: str = "", timeout: timedelta | None = None
    ) -> definitions_pb2.Definition:
        """One version of a definition (the latest when `version` is empty)."""
        request = definitions_pb2.GetDefinitionRequest(name=name, version=version)
        resp = await self._transport.unary(
            self._transport.stubs.definitions.GetDefinition, request, timeout=timeout, retry=True
        )
        definition: definitions_pb2.Definition = resp.definition
        return definition

    def list_definitions(
        self,
        *,
        starting_after: str = "",
        page_size: int = DEFINITIONS_PAGE_SIZE,
        limit: int | None = None,
        timeout: timedelta | None = None,
    ) -> AsyncPager[definitions_pb2.Definition]:
        """The latest version of every definition, by name, read lazily: `page_size` per
        call (1..100), after the name `starting_after`, at most `limit` in all."""

        async def fetch(
            previous: Sequence[definitions_pb2.Definition] | None, size: int
        ) -> Page[definitions_pb2.Definition]:
            request = definitions_pb2.ListDefinitionsRequest(
                limit=size, starting_after=starting_after if previous is None else previous[-1].name
            )
            resp = await self._transport.unary(
                self._transport.stubs.definitions.ListDefinitions,
                request,
                timeout=timeout,
                retry=True,
            )
            return Page(list(resp.definitions), resp.has_more)

        return AsyncPager(fetch, page_size=page_size, limit=limit)

    async def list_definition_versions(
        self, name: str, *, timeout: timedelta | None = None
    ) -> list[definitions_pb2.Definition]:
        """Every version of one definition, the latest (highest semantic version) first."""
        request = definitions_pb2.ListDefinitionVersionsRequest(name=name)
        resp = await self._transport.unary(
            self._transport.stubs.definitions.ListDefinitionVersions,
            request,
            timeout=timeout,
            retry=True,
        )
        return list(resp.definitions)

    async def delete_definition(
        self, name: str, *, version: str = "", timeout: timedelta | None = None
    ) -> list[str]:
        """Hide a version (every version when `version` is empty) from reads and new runs;
        the versions deleted, latest first. Not retried: a repeat finds nothing to delete."""
        request = definitions_pb2.DeleteDefinitionRequest(name=name, version=version)
        resp = await self._transport.unary(
            self._transport.stubs.definitions.DeleteDefinition,
            request,
            timeout=timeout,
            retry=False,
        )
        return list(resp.versions)

    async def create_run_from_definition(
        self,
        name: str,
        *,
        version: str = "",
        inputs: JsonObject | None = None,
        priority: int | None = None,
        request_id: str | None = None,
        timeout: timedelta | None = None,
    ) -> runs_pb2.Run:
        """Create a PENDING run of a definition (its latest version when `version` is
        empty): the inputs are checked against its input specs, defaults filled in, and the
        run inherits its image, constraints, retry policy and event delivery. `request_id`
        as in `create_run`: the client makes one when None, so its retries are safe."""
        request = definitions_pb2.CreateRunFromDefinitionRequest(
            name=name,
            version=version,
            inputs=to_struct(inputs or {}, "inputs"),
            priority=priority,
            request_id=new_request_id() if request_id is None else request_id,
        )
        resp = await self._transport.unary(
            self._transport.stubs.definitions.CreateRunFromDefinition,
            request,
            timeout=timeout,
            retry=bool(request.request_id),
        )
        run: runs_pb2.Run = resp.run
        return run
