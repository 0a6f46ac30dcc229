"""A bare grpc.aio server: the ceiling that bench/watch_fanout.py and bench/suite.py compare
gyoza-grpc with, run with gyoza-grpc's server options.

No proto, no database: generic method handlers on raw bytes.

- ``/bench.Bare/Echo`` (unary): returns its request (suite.py's ceiling for unary calls).
- ``/bench.Bare/Publish`` (unary): appends the payload to an in-memory log and wakes every open
  ``Watch`` stream (one shared asyncio.Event, replaced at each publish). Replies empty.
- ``/bench.Bare/Watch`` (server-streaming): replays the log, then sends each new payload as it
  is published; it ends after a payload whose FINAL flag is set.

- ``/gyoza.v1.RunService/CreateRun`` (unary, with ``--sqlite PATH``): the least a CreateRun can
  do, the floor suite.py sets gyoza-grpc's beside: decode the request, insert a run row and an
  attempt row with sqlite3 (WAL, synchronous=NORMAL) through the same group commit as
  gyoza-grpc (store/group_commit.py), answer a Run with the id, image, priority, inputs and
  times. No validation, no domain objects, no interceptors, no log.

A payload is ``seq`` (8 bytes, big-endian, signed), a flags byte (``FINAL`` = 1), then padding.

Run: ``python bench/bare_server.py --port PORT [--sqlite PATH]`` (until SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc

SERVICE = "bench.Bare"
PUBLISH = f"/{SERVICE}/Publish"
ECHO = f"/{SERVICE}/Echo"
WATCH = f"/{SERVICE}/Watch"
FINAL = 1
HEADER = 9

# The keepalive settings of gyoza-grpc's server, so both servers hold streams the same way.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
]


def encode(seq: int, *, final: bool = False, size: int = HEADER) -> bytes:
    head = seq.to_bytes(8, "big", signed=True) + bytes([FINAL if final else 0])
    return head + b"x" * max(0, size - HEADER)


def decode(payload: bytes) -> tuple[int, bool]:
    return int.from_bytes(payload[:8], "big", signed=True), bool(payload[8] & FINAL)


class Broadcast:
    """Every published payload, and one Event that all watchers await, swapped per publish."""

    def __init__(self) -> None:
        self.log: list[bytes] = []
        self.changed = asyncio.Event()

    def publish(self, payload: bytes) -> None:
        self.log.append(payload)
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()

    async def publish_handler(self, request: bytes, context: Any) -> bytes:
        self.publish(request)
        return b""

    async def watch_handler(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            while sent < len(self.log):
                payload = self.log[sent]
                sent += 1
                yield payload
                if payload[8] & FINAL:
                    return
            await self.changed.wait()


async def _echo(request: bytes, context: Any) -> bytes:
    return request


_FLOOR_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, state TEXT, priority INTEGER, "
    "image TEXT, inputs TEXT, created_at INTEGER, updated_at INTEGER)",
    "CREATE TABLE IF NOT EXISTS attempts (id TEXT PRIMARY KEY, run_id TEXT, attempt INTEGER, "
    "created_at INTEGER)",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, id)",
)


class FloorCreate:
    """The floor CreateRun (see the module docstring)."""

    def __init__(self, path: str) -> None:
        import sqlite3

        from gyoza_grpc.server.store.group_commit import GroupCommit

        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for sql in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", *_FLOOR_SCHEMA):
            self._db.execute(sql)
        self._group = GroupCommit(self._commit, asyncio.Lock())

    async def _commit(self, batch: Any) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        for q in batch:
            q.work(db)
        db.execute("COMMIT")
        for q in batch:
            q.future.set_result(None)

    async def create(self, request: Any, context: Any) -> Any:
        import json
        import time
        import uuid

        from google.protobuf import json_format

        from gyoza.v1 import runs_pb2

        run_id, now = str(uuid.uuid4()), time.time_ns() // 1000
        inputs = json.dumps(json_format.MessageToDict(request.inputs))
        priority = request.priority if request.HasField("priority") else 5
        row = (run_id, "PENDING", priority, request.image, inputs, now, now)

        def work(db: Any) -> None:
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?)", row)
            db.execute("INSERT INTO attempts VALUES (?,?,1,?)", (str(uuid.uuid4()), run_id, now))

        await self._group.submit(work)
        reply = runs_pb2.CreateRunResponse()
        run = reply.run
        run.id, run.image, run.priority = run_id, request.image, priority
        run.state, run.current_attempt, run.last_seq = runs_pb2.RUN_STATE_PENDING, 1, -1
        run.inputs.CopyFrom(request.inputs)
        run.created_at.FromMicroseconds(now)
        run.updated_at.FromMicroseconds(now)
        return reply


async def serve(host: str, port: int, sqlite_path: str | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broadcast = Broadcast()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Publish": grpc.unary_unary_rpc_method_handler(broadcast.publish_handler),
            "Watch": grpc.unary_stream_rpc_method_handler(broadcast.watch_handler),
        },
    )
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    if sqlite_path is not None:
        from gyoza.v1 import runs_pb2

        floor = FloorCreate(sqlite_path)
        create = grpc.unary_unary_rpc_method_handler(
            floor.create,
            request_deserializer=runs_pb2.CreateRunRequest.FromString,
            response_serializer=runs_pb2.CreateRunResponse.SerializeToString,
        )
        runs = grpc.method_handlers_generic_handler("gyoza.v1.RunService", {"CreateRun": create})
        server.add_generic_rpc_handlers((runs,))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sqlite", help="a database file: also serve the floor CreateRun")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.sqlite))


if __name__ == "__main__":
    main()
