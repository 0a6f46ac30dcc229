"""rows.dumps: the stored JSON text is exactly json.dumps's compact, non-ASCII-escaping form."""

from __future__ import annotations

import json
import math

import pytest

from gyoza_grpc.server.store.rows import dumps, loads

DOCS = [
    {},
    {"n": 1, "task": 3},
    {"a": [1, 2.5, None, True, False, "é\u2028\x00"], "b": {"c": {}, "d": []}},
    {"big": 10**30, "neg": -0.0, "tiny": 5e-324, "emoji": "🍜"},
]


@pytest.mark.parametrize("doc", DOCS)
def test_dumps_matches_json_dumps_and_round_trips(doc: dict[str, object]) -> None:
    text = dumps(doc)
    assert text == json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert loads(text) == doc


def test_dumps_refuses_what_json_cannot_hold() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            dumps({"x": bad})
