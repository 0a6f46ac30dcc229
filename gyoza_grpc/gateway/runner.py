"""An AppRunner whose connections answer a request aiohttp cannot parse as JSON.

aiohttp refuses a request line or a header over 8190 bytes (and other malformed requests)
before any handler or middleware runs, with a text/plain 400 written by
`RequestHandler.handle_error`. Here that method writes the gateway's error shape instead,
`{"detail": ...}` with the same status, so every answer of the gateway is JSON.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

# aiohttp's default, named: the longest request line, and the longest header.
MAX_LINE_BYTES = 8190


class _JsonErrorHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # Logs and refuses a response already under way, as aiohttp does.
        super().handle_error(request, status, exc, message)
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            detail = "Internal Server Error"
        elif isinstance(exc, LineTooLong):
            detail = f"Bad Request: a request line or header over {MAX_LINE_BYTES} bytes"
        else:
            detail = f"{HTTPStatus(status).phrase}: {message or exc or 'unreadable request'}"
        resp = web.Response(
            status=status, text=json.dumps({"detail": detail}), content_type="application/json"
        )
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """web.AppRunner, with JSON for the requests aiohttp's parser refuses."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_LINE_BYTES)
        kwargs.setdefault("max_field_size", MAX_LINE_BYTES)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same server, making _JsonErrorHandlers
        return server
