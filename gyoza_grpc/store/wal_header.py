"""Has anything committed to a SQLite WAL database? Read off its WAL-index header, not asked.

The run cache (store/run_cache.py) must drop what another connection may have changed, and
`PRAGMA data_version` on the write connection tells it exactly. But every GetRun asking
SQLite cost far more in the server than the 3 µs it costs alone: the call lets go of the GIL
twice, and grpc's threads take it each time (GetRun at concurrency 32: about 18 µs of the
event loop's time a call, measured with the pragma on and off).

In WAL mode every commit, by any connection of any process, rewrites the WAL-index header at
the start of the -shm file (it holds the last frame committed and the log's salts: its bytes
change on every commit; checkpoints keep their counters elsewhere). SQLite maps that file into
every connection's memory; so does this class, read-only, and compares the header's 96 bytes
(both copies) with what it saw when the cache was last checked. Unchanged bytes mean no commit
has completed since, so the cache is still exact; changed bytes send the caller to the pragma.

Why reading it without a lock is safe: a committer writes the second copy, then the first,
before its COMMIT returns. A read that sees both copies unchanged therefore comes before any
commit that has returned to its caller; a torn read differs from what was seen and costs one
pragma. The header a caller records is read *before* its pragma, so a commit that lands in
between changes the bytes and is caught at the next look.

The mapping is only safe while a connection of this process keeps the database open in WAL
mode (SQLite truncates the -shm only when its first connection opens it): Engines opens it
after its held connections and closes it before them.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

# Two copies of the 48-byte WalIndexHdr (https://www.sqlite.org/walformat.html#the_wal_index).
HEADER_BYTES = 96


class WalHeader:
    """The WAL-index header of one database file, mapped read-only."""

    __slots__ = ("_map", "seen")

    def __init__(self, shm: mmap.mmap) -> None:
        self._map = shm
        # What the header was before the last exact check (None: never checked).
        self.seen: bytes | None = None

    @classmethod
    def open(cls, database: str) -> WalHeader | None:
        """The header of `database`'s -shm file, or None when there is none to map (not in WAL
        mode, not yet opened, or a file system without shared memory): the caller then asks
        SQLite every time."""
        path = Path(database + "-shm")
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < HEADER_BYTES:
                return None
            return cls(mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)  # the mapping keeps its own reference to the file

    def read(self) -> bytes:
        return self._map[:HEADER_BYTES]

    def close(self) -> None:
        self._map.close()
