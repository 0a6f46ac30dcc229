"""Helpers for the operations tests: capture the access log, scrape /metrics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gyoza_grpc.server.ops.log_format import JsonFormatter


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def text(self) -> str:
        return self._stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Every line, parsed as JSON (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def rpcs(self, method: str) -> list[dict[str, Any]]:
        suffix = "/" + method
        return [
            d for d in self.lines() if d.get("message") == "rpc" and d["method"].endswith(suffix)
        ]


@contextmanager
def access_log() -> Iterator[Captured]:
    """The gyoza_grpc.access logger's lines, as the JSON formatter writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gyoza_grpc.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield Captured(stream)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of http://127.0.0.1:PORT/metrics: {(name, sorted labels): value}."""
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
