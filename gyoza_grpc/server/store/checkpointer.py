"""WAL checkpoints on a thread of their own, not inside a commit on the event loop.

SQLite in WAL mode appends each commit to the -wal file and, by default, the commit that takes
the log past 1,000 pages also copies the log back into the database and (synchronous=NORMAL)
fsyncs it: a copy and a disk flush on the loop, every few hundred CreateRuns (random run
ids touch many pages). Here a daemon thread runs `PRAGMA wal_checkpoint(PASSIVE)` on its own
connection every `interval_s`. A passive checkpoint never waits for the writer or the readers
and SQLite releases the GIL while it copies and syncs, so it runs beside the loop on the other
core. The writers' own automatic checkpoint stays as a backstop at SAFETY_NET_PAGES, should this
thread fall behind.

Durability is unchanged: a commit is in the WAL before it returns, as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

# The writers' automatic checkpoint, in pages (4 KiB): only if this thread falls behind.
SAFETY_NET_PAGES = 20_000
INTERVAL_S = 0.2


class WalCheckpointer:
    def __init__(self, database: str, *, interval_s: float = INTERVAL_S) -> None:
        self._database = database
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self.checkpoints = 0
        # The last checkpoint's (busy, frames in the WAL, frames copied back), for tests.
        self.last: tuple[int, int, int] | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the thread is alive: started, and not yet ended by stop()."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Ends the thread after its current checkpoint (if any)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._database, isolation_level=None)
                    self.last = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as err:  # the file went away, a disk error: retry later
                    log.warning("WAL checkpoint failed: %s", err)
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()
