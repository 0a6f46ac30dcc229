"""schemathesis against a live `gyoza-grpc gateway` in front of a live `gyoza-grpc serve`,
fuzzing every operation of /openapi.json (valid and invalid requests), with the checks the
gateway must pass: no 5xx, every answer within its schema and content type, no status code
the document does not list, and nothing accepted that the schema rejects.

Each operation is fuzzed with valid requests (where a run id is in the path, some of them
name real runs, made before, so the success answers are fuzzed too, not only the 404s) and
with invalid ones. The examples are bounded per operation to keep the whole run well under
a minute. (schemathesis' own pytest plugin cannot load a schema from a fixture under pytest 9,
so each operation's strategy is driven by hypothesis here.)

GET /runs/stream is left out: every request it accepts is a stream that never ends (and almost
any query is one it accepts), so each example would wait out the client's timeout. Its frames
and its refusals are checked against the same document in tests/gateway/test_dashboard_routes.py.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from gyoza_grpc.gateway.openapi import ROUTES, Route
from tests.e2e.process import serve
from tests.gateway.live import gateway_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_EXAMPLES = 10
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]


def _post(address: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{address}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc: dict[str, Any] = json.load(resp)
        return doc


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """The gateway's address, and the ids of a few runs made through it."""
    cwd: Path = tmp_path_factory.mktemp("schemathesis")
    with serve(cwd, "--port", "0", "--database-url", "sqlite+aiosqlite:///st.db") as server:
        target = server.wait_serving()
        with gateway_process(cwd, target) as (_, address):
            ids = [_post(address, "/runs", {"image": f"img{i}"})["id"] for i in range(3)]
            _post(address, f"/runs/{ids[0]}/cancel", {})
            yield address, ids


@pytest.fixture(scope="module")
def gateway_schema(live_gateway: tuple[str, list[str]]) -> Any:
    address, _ = live_gateway
    return schemathesis.openapi.from_url(f"http://{address}/openapi.json")


FUZZED = [route for route in ROUTES if route.path != "/runs/stream"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("route", FUZZED, ids=lambda r: f"{r.method} {r.path}")
def test_gateway_conforms_to_its_openapi(
    gateway_schema: Any, live_gateway: tuple[str, list[str]], route: Route, mode: GenerationMode
) -> None:
    _, ids = live_gateway
    operation = gateway_schema[route.path][route.method]
    cases = operation.as_strategy(mode)
    if "{id}" in route.path and mode is GenerationMode.POSITIVE:
        real = [operation.as_strategy(mode, path_parameters={"id": i}) for i in ids[:2]]
        cases = st.one_of(cases, *real)

    @given(cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    fuzz()
