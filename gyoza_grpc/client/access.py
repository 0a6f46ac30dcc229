"""AccessService's call: what the caller's API key lets it do."""

from __future__ import annotations

from datetime import timedelta

from gyoza.v1 import access_pb2
from gyoza_grpc.client.transport import Transport


class AccessCalls:
    """The AccessService part of `AsyncClient` (and, through it, of `Client`)."""

    _transport: Transport

    async def get_caller(self, *, timeout: timedelta | None = None) -> access_pb2.GetCallerResponse:
        """The role of this client's key and every method it may call (`keys_required` is
        False when the server has no keys: anyone may call anything)."""
        resp: access_pb2.GetCallerResponse = await self._transport.unary(
            self._transport.stubs.access.GetCaller,
            access_pb2.GetCallerRequest(),
            timeout=timeout,
            retry=True,
        )
        return resp
