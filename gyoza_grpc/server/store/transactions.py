"""The one seam between the stores and a database: units of work run as transactions.

Every store operation is a synchronous `Work` function of a `Tx`: plain SQLAlchemy statements
on `tx.conn`, no awaits in between. A `Transactions` runs it as one transaction:
- `read(work)`: one consistent snapshot (nothing another writer commits meanwhile shows);
- `write(work)`: committed before `write` returns; the callbacks the work registered with
  `tx.after_commit` run once it has committed (the fan-out, the claim signal), never for a
  write that was rolled back.

Two implementations: `store/sqlite_transactions.py` (held connections on the event loop,
group commit, the run cache) and `store/pg_transactions.py` (asyncpg, one greenlet per
transaction, NOTIFY for the other replicas). The stores above them (runs, workers, claims,
definitions) never know which one they run on, beyond the SQL dialect (`tx.is_sqlite`).

Why synchronous work: a SQLite statement on an indexed table takes microseconds, less than a
hop to a thread or a greenlet switch would; and a transaction that never yields cannot see the
loop run another writer in the middle of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy import Connection

from gyoza_grpc.domain.model import Run
from gyoza_grpc.server.store.run_cache import RunCache
from gyoza_grpc.server.store.wakeups import Wakeups

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Tx:
    """One unit of work's view of its transaction: the connection, and what the work changed.

    `known_run(id)` is the run as this transaction sees it when that is known without a read:
    what this write, or an earlier write of the same group-commit batch, made of it, else the
    run cache (SQLite). `wrote(run)` records a run as the write left it; the transaction layer
    forgets the cached copies of every run written and keeps the new ones once committed.
    """

    __slots__ = (
        "_cache",
        "_callbacks",
        "_open_cache",
        "_runs",
        "_shared",
        "conn",
        "is_sqlite",
        "wakeups",
    )

    def __init__(
        self,
        conn: Connection,
        *,
        is_sqlite: bool,
        cache: RunCache | None = None,
        open_cache: Callable[[], RunCache | None] | None = None,
        shared: dict[str, Run] | None = None,
    ) -> None:
        self.conn = conn
        self.is_sqlite = is_sqlite
        self._cache = cache
        # A read's cache is checked against other connections' commits on first use only.
        self._open_cache = open_cache
        self._shared = shared
        self._runs: dict[str, Run] = {}
        self._callbacks: list[Callable[[], None]] = []
        # What a write touched, for the other replicas (PostgreSQL's NOTIFY).
        self.wakeups = Wakeups()

    def _the_cache(self) -> RunCache | None:
        if self._open_cache is not None:
            self._cache, self._open_cache = self._open_cache(), None
        return self._cache

    def known_run(self, run_id: str) -> Run | None:
        run = self._runs.get(run_id)
        if run is None and self._shared is not None:
            run = self._shared.get(run_id)
        if run is None:
            cache = self._the_cache()
            if cache is not None:
                run = cache.get(run_id)
        return run

    def wrote(self, run: Run) -> None:
        self._runs[run.id] = run

    def keep(self, run: Run) -> None:
        """A read offers a run it loaded to the cache (kept only where one is exact)."""
        if self._shared is None:
            cache = self._the_cache()
            if cache is not None:
                cache.put(run)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    @property
    def written(self) -> dict[str, Run]:
        """The runs this write changed, as it left them."""
        return self._runs

    def committed(self) -> None:
        """Run the callbacks, in the order they were registered (the layer calls this)."""
        for callback in self._callbacks:
            callback()


# One transaction's work.
Work = Callable[[Tx], T]


class Transactions(Protocol):
    """How the stores reach the database (see the module docstring)."""

    @property
    def is_sqlite(self) -> bool: ...

    @property
    def caches_runs(self) -> bool:
        """Whether a read may answer a run from the run cache: then an unchanged run is the
        very same Run object from one call to the next."""
        ...

    async def read(self, work: Work[T]) -> T: ...

    async def write(self, work: Work[T], *, key: str = "") -> T:
        """Writes with the same non-empty `key` (a run id, a worker id) commit in the order
        they were made; others may commit side by side."""
        ...

    async def close(self) -> None:
        """Let go of held connections (before the engines are disposed)."""
        ...
