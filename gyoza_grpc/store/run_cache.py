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

from gyoza_grpc.domain.model import Run

# Runs kept; past it the oldest entry goes. A Run with small inputs is a few KiB.
DEFAULT_LIMIT = 10_000


class RunCache:
    __slots__ = ("_limit", "_runs", "_version")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._runs: dict[str, Run] = {}
        self._version: int | None = None

    def check(self, data_version: int) -> None:
        """Start afresh when another connection has committed since the last check."""
        if data_version != self._version:
            self._runs.clear()
            self._version = data_version

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def put(self, run: Run) -> None:
        runs = self._runs
        if len(runs) >= self._limit and run.id not in runs:
            del runs[next(iter(runs))]
        runs[run.id] = run

    def forget(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            self._runs.pop(run_id, None)
