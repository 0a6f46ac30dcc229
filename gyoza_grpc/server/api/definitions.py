"""DefinitionService: versioned op definitions, and runs made from them.

Each handler reads its request (api.convert), applies the domain's rules
(domain.definitions, domain.inputs) and calls the stores. A run made from a definition is
created through RunStore.create_run, exactly like CreateRun's runs (request_id included).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from gyoza.v1 import definitions_pb2, definitions_pb2_grpc
from gyoza_grpc.domain import definitions
from gyoza_grpc.domain.clock import Clock, utc_now
from gyoza_grpc.domain.errors import FieldViolation, InvalidArgument
from gyoza_grpc.domain.limits import DEFAULT_LIMITS, Limits
from gyoza_grpc.domain.runs import MAX_REQUEST_ID_LEN, new_run
from gyoza_grpc.server.api import convert
from gyoza_grpc.server.api.errors import unary
from gyoza_grpc.server.api.response_budget import ResponseBudget, fill_within
from gyoza_grpc.server.store.definition_store import DefinitionStore
from gyoza_grpc.server.store.run_store import RunStore

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

DEFAULT_LIST_LIMIT = 10
MAX_LIST_LIMIT = 100


def _name(value: str, field: str = "name") -> str:
    return definitions.check_name(convert.text(value, field), field)


def _version(value: str, field: str = "version") -> str:
    return definitions.check_version(convert.text(value, field), field)


class DefinitionServicer(definitions_pb2_grpc.DefinitionServiceServicer):
    def __init__(
        self,
        store: DefinitionStore,
        runs: RunStore,
        *,
        clock: Clock = utc_now,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._store = store
        self._runs = runs
        self._clock = clock
        self._limits = limits

    @unary
    async def UpsertDefinition(
        self, request: definitions_pb2.UpsertDefinitionRequest, context: Context
    ) -> definitions_pb2.UpsertDefinitionResponse:
        if not request.HasField("definition"):
            raise InvalidArgument.field("definition", "must be set")
        given = convert.definition_from_pb(request.definition)
        d = definitions.new_definition(given, self._clock())
        stored, created = await self._store.upsert(d)
        return definitions_pb2.UpsertDefinitionResponse(
            definition=convert.definition_to_pb(stored), created=created
        )

    @unary
    async def GetDefinition(
        self, request: definitions_pb2.GetDefinitionRequest, context: Context
    ) -> definitions_pb2.GetDefinitionResponse:
        d = await self._store.get(_name(request.name), _version(request.version))
        return definitions_pb2.GetDefinitionResponse(definition=convert.definition_to_pb(d))

    @unary
    async def ListDefinitions(
        self, request: definitions_pb2.ListDefinitionsRequest, context: Context
    ) -> definitions_pb2.ListDefinitionsResponse:
        violations: list[FieldViolation] = []
        limit = request.limit or DEFAULT_LIST_LIMIT
        if not 1 <= limit <= MAX_LIST_LIMIT:
            violations.append(
                FieldViolation("limit", f"must be between 1 and {MAX_LIST_LIMIT} (0 means 10)")
            )
        after = convert.text(request.starting_after, "starting_after")
        problem = definitions.name_problem(after) if after else None
        if problem is not None:
            violations.append(FieldViolation("starting_after", f"a definition name {problem}"))
        if violations:
            raise InvalidArgument.for_fields(violations)
        found, has_more = await self._store.list_latest(limit=limit, starting_after=after)
        out = definitions_pb2.ListDefinitionsResponse()
        complete = fill_within(
            ResponseBudget(self._limits.max_response_bytes),
            out.definitions,
            found,
            lambda entry, d: entry.CopyFrom(convert.definition_to_pb(d)),
        )
        out.has_more = has_more or not complete
        return out

    @unary
    async def ListDefinitionVersions(
        self, request: definitions_pb2.ListDefinitionVersionsRequest, context: Context
    ) -> definitions_pb2.ListDefinitionVersionsResponse:
        found = await self._store.list_versions(_name(request.name))
        return definitions_pb2.ListDefinitionVersionsResponse(
            definitions=[convert.definition_to_pb(d) for d in found]
        )

    @unary
    async def DeleteDefinition(
        self, request: definitions_pb2.DeleteDefinitionRequest, context: Context
    ) -> definitions_pb2.DeleteDefinitionResponse:
        deleted = await self._store.delete(_name(request.name), _version(request.version))
        return definitions_pb2.DeleteDefinitionResponse(versions=deleted)

    @unary
    async def CreateRunFromDefinition(
        self, request: definitions_pb2.CreateRunFromDefinitionRequest, context: Context
    ) -> definitions_pb2.CreateRunFromDefinitionResponse:
        name, version = _name(request.name), _version(request.version)
        inputs = convert.struct_to_dict(request.inputs, "inputs", self._limits.max_json_bytes)
        priority = request.priority if request.HasField("priority") else None
        request_id = convert.text(request.request_id, "request_id")
        if len(request_id) > MAX_REQUEST_ID_LEN:
            raise InvalidArgument.field(
                "request_id", f"must be at most {MAX_REQUEST_ID_LEN} characters"
            )
        d = await self._store.get(name, version)
        spec = definitions.run_spec_for(d, inputs, priority=priority, request_id=request_id)
        run = new_run(spec, self._clock())
        fingerprint = (
            definitions.request_fingerprint(name, version, inputs, priority) if request_id else None
        )
        run, _created = await self._runs.create_run(run, fingerprint)
        out = definitions_pb2.CreateRunFromDefinitionResponse()
        convert.fill_run(out.run, run)
        return out
