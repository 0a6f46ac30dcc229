"""The runs this process last read, kept for GetRun on a SQLite file.

GetRun is the call clients poll. On a SQLite file this process is the database's one writer, so
it knows when a cached run goes stale, and keeps it exact:
- each group-commit batch forgets the runs it touched right after its COMMIT, before any
  caller hears of it, then keeps the runs it wrote;
- a commit that changed anything by any other connection (another process on the file, or
  this process's async engine: the workers' and definitions' transactions) changes
  `PRAGMA data_version` on the store's write connection, which nothing but those commits
  changes: each use checks it first and starts afresh when it moved.
A read that began before a write's COMMIT cannot fill the cache after it: reads run in line on
the loop, start to finish. PostgreSQL (replicas, other writers) has no cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gyoza_grpc.domain.model import Run

# Runs kept; past either bound the oldest entries go. The bytes are the JSON documents' sizes,
# estimated (strings and keys by length, anything else 8), plus ENTRY_OVERHEAD a run.
DEFAULT_LIMIT = 10_000
DEFAULT_BUDGET_BYTES = 32 * 1024 * 1024
ENTRY_OVERHEAD = 2048
# A run whose inputs and outputs are larger is not kept (a document may be 1 MiB): reading it
# back costs little beside what its size costs everywhere else.
MAX_ENTRY_BYTES = 64 * 1024


def _size(doc: Any, budget: int) -> int:
    """An estimate of `doc`'s size, stopping once past `budget` (the walk stays short)."""
    if isinstance(doc, str):
        return len(doc)
    if isinstance(doc, dict):
        total = 0
        for key, value in doc.items():
            total += len(key) + _size(value, budget - total)
            if total > budget:
                break
        return total
    if isinstance(doc, list):
        total = 0
        for value in doc:
            total += 8 + _size(value, budget - total)
            if total > budget:
                break
        return total
    return 8


class RunCache:
    __slots__ = ("_budget", "_bytes", "_limit", "_runs", "_version")

    def __init__(
        self, limit: int = DEFAULT_LIMIT, budget_bytes: int = DEFAULT_BUDGET_BYTES
    ) -> None:
        self._limit = limit
        self._budget = budget_bytes
        self._runs: dict[str, tuple[Run, int]] = {}
        self._bytes = 0
        self._version: int | None = None

    def check(self, data_version: int) -> None:
        """Start afresh when another connection has committed since the last check."""
        if data_version != self._version:
            self._runs.clear()
            self._bytes = 0
            self._version = data_version

    def get(self, run_id: str) -> Run | None:
        found = self._runs.get(run_id)
        return None if found is None else found[0]

    def put(self, run: Run) -> None:
        self.forget((run.id,))
        size = _size(run.inputs, MAX_ENTRY_BYTES)
        size += _size(run.attempt.outputs, MAX_ENTRY_BYTES - size)
        if size > MAX_ENTRY_BYTES:
            return
        size += ENTRY_OVERHEAD
        runs = self._runs
        while runs and (len(runs) >= self._limit or self._bytes + size > self._budget):
            self.forget((next(iter(runs)),))
        runs[run.id] = (run, size)
        self._bytes += size

    def forget(self, run_ids: Iterable[str]) -> None:
        runs = self._runs
        for run_id in run_ids:
            found = runs.pop(run_id, None)
            if found is not None:
                self._bytes -= found[1]
