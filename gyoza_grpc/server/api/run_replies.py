"""GetRun's replies, kept while the store hands back the very same Run.

On a SQLite file the store answers GetRun from its run cache (store/run_cache.py): the same
frozen Run object until the run changes, when a new object replaces it. A client polling a
run it waits for asks for that same object again and again, and filling a reply (about two
dozen protobuf fields and the inputs' Struct) was the largest part of GetRun's own work. So the
reply made for a Run object is kept and returned again while the store returns that object;
grpc only serializes a reply, so one message can answer many calls. Identity, not equality:
a new object (any change, a reload, or a store without a cache) makes a new reply.
"""

from __future__ import annotations

from gyoza.v1 import runs_pb2
from gyoza_grpc.domain.model import Run
from gyoza_grpc.server.api import convert

# Replies kept, oldest dropped first: about 4 MiB with small inputs (the run cache keeps the
# Runs themselves, so this holds little more than the messages).
DEFAULT_LIMIT = 4096


class RunReplies:
    __slots__ = ("_limit", "_replies")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._replies: dict[str, tuple[Run, runs_pb2.GetRunResponse]] = {}

    def reply(self, run: Run) -> runs_pb2.GetRunResponse:
        """The GetRun reply (no events) for `run`: the one made before for this very object,
        else a new one, kept. The caller must not change it."""
        replies = self._replies
        found = replies.get(run.id)
        if found is not None and found[0] is run:
            return found[1]
        out = runs_pb2.GetRunResponse()
        convert.fill_run(out.run, run)
        if found is None and len(replies) >= self._limit:
            del replies[next(iter(replies))]
        replies[run.id] = (run, out)
        return out
