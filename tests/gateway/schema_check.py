"""Every answer the gateway tests get is checked against the gateway's own /openapi.json: its
status must be documented for the operation, its content type the documented one, and a JSON
body must match the documented schema (an event stream's frames: next_frame checks them).

`checked_client(app)` is the aiohttp TestClient every gateway test uses; a client middleware
does the check, so no test can forget it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from gyoza_grpc.gateway.openapi import document
from gyoza_grpc.gateway.runner import GatewayRunner


@dataclass
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any] = field(repr=False)


@cache
def _operations() -> tuple[Operation, ...]:
    out = []
    for template, ops in document()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, spec in ops.items():
            out.append(Operation(method.upper(), template, pattern, spec))
    return tuple(out)


def operation(method: str, path: str) -> Operation | None:
    for op in _operations():
        if op.method == method and op.pattern.match(path):
            return op
    return None


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """`instance` against `schema`, whose $refs point into the document's components."""
    root = {**schema, "components": document()["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(instance), key=lambda e: e.path)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def check_answer(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """One answer against the document (paths it does not describe: JSON `{"detail"}`)."""
    op = operation(method, path)
    if op is None:
        if (path == "/openapi.json" and status == 200) or 300 <= status < 400:
            return  # the document itself; a redirect (a trailing slash)
        doc = json.loads(body)
        assert status >= 300 and isinstance(doc.get("detail"), str), (method, path, doc)
        return
    responses = op.spec["responses"]
    where = f"{method} {path} -> {status}"
    assert str(status) in responses, f"{where}: status not documented for {op.template}"
    content = responses[str(status)]["content"]
    assert content_type in content, f"{where}: {content_type} is not {list(content)}"
    if content_type == "application/json":
        try:
            validate(json.loads(body), content[content_type]["schema"])
        except AssertionError as err:
            raise AssertionError(f"{where}: answer does not match its schema:\n{err}") from None


def check_frame(fields: dict[str, str], path: str = "/runs/x/events/stream") -> None:
    """One SSE frame of the stream at `path` against its itemSchema (its data against the
    contentSchema)."""
    op = operation("GET", path)
    assert op is not None
    item = op.spec["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    event = {"event": "message", **fields}
    validate(event, item)
    for choice in item["anyOf"]:
        if choice["properties"]["event"]["const"] == event["event"]:
            validate(json.loads(event["data"]), choice["properties"]["data"]["contentSchema"])


async def _check(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    resp = await handler(req)
    if resp.content_type == "text/event-stream":
        check_answer(req.method, req.url.path, resp.status, resp.content_type, b"")
    else:
        body = await resp.read()  # kept: the test reads it again
        check_answer(req.method, req.url.path, resp.status, resp.content_type, body)
    return resp


class GatewayTestServer(TestServer):
    """The app behind the gateway's own runner, as `gyoza-grpc gateway` serves it."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


def checked_client(app: web.Application) -> TestClient[Any, Any]:
    return TestClient(GatewayTestServer(app), middlewares=(_check,))


def iter_schema_refs(schema: Any) -> Iterator[str]:
    """Every component a schema refers to, directly or not."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref":
                yield value.rsplit("/", 1)[-1]
            else:
                yield from iter_schema_refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from iter_schema_refs(value)
