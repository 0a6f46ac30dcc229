"""AccessService: what the caller's API key may do, so that a client offers only the actions
the server would accept (the dashboard hides Cancel and Retry from a reader key).

The auth interceptor has already refused a missing or unknown key; this looks the presented
key up again (constant time, as the interceptor does) to name its role."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from gyoza.v1 import access_pb2, access_pb2_grpc
from gyoza_grpc.domain.access import ApiKeys, Role
from gyoza_grpc.server.api import roles
from gyoza_grpc.server.api.auth import presented_key
from gyoza_grpc.server.api.errors import unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_ROLES = {
    Role.ADMIN: access_pb2.ROLE_ADMIN,
    Role.WORKER: access_pb2.ROLE_WORKER,
    Role.READER: access_pb2.ROLE_READER,
}


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    @unary
    async def GetCaller(
        self, request: access_pb2.GetCallerRequest, context: Context
    ) -> access_pb2.GetCallerResponse:
        if not self._keys:
            return access_pb2.GetCallerResponse(
                keys_required=False, methods=sorted(roles.ALL_METHODS)
            )
        key = presented_key(context.invocation_metadata())
        role = self._keys.role_of(key) if key else None
        if role is None:  # only without the auth interceptor in front (a test's server)
            return access_pb2.GetCallerResponse(keys_required=True)
        return access_pb2.GetCallerResponse(
            keys_required=True, role=_ROLES[role], methods=sorted(roles.ALLOWED[role])
        )
