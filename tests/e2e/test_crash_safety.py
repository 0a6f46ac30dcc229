"""SIGKILL the server in the middle of a create / event / claim load, restart it, 20 times:
every acknowledged write is there with its content, nothing is half-written.

Each round starts `gyoza-grpc serve` on the same SQLite file, runs concurrent clients
(CreateRun, AddEvent up to terminal events, CancelRun, Heartbeat + ClaimRuns), records every
write the server acknowledged, kills the server at a random moment with SIGKILL, and then
reads the file directly: each acknowledged run and event is there unchanged, and
tests/consistency.py finds no half-written state (a run without its attempt, an event after
a terminal one, a seq gap) and `PRAGMA integrity_check` says ok. The next round's start proves
the server comes back on the file and serves what was acknowledged before the kill.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from gyoza.v1 import runs_pb2, runs_pb2_grpc, workers_pb2, workers_pb2_grpc
from tests.consistency import database_problems
from tests.e2e.process import serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDS = 20
CLIENTS = 6
ET = runs_pb2


@dataclass
class Acked:
    """Writes the server acknowledged, as the client saw them."""

    runs: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # image, inputs
    events: dict[tuple[str, int], tuple[str, str, dict[str, Any]]] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)

    def event(self, e: runs_pb2.Event) -> None:
        self.events[(e.run_id, e.seq)] = (
            ET.EventType.Name(e.type).removeprefix("EVENT_TYPE_"),
            e.msg,
            json_format.MessageToDict(e.payload),
        )


def _struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(doc)
    return s


async def _client(
    stub: runs_pb2_grpc.RunServiceStub, acked: Acked, name: str, rng: random.Random
) -> None:
    """Runs through their lifecycle until the server goes away."""
    k = 0
    while True:
        k += 1
        inputs = {"client": name, "k": float(k), "blob": "x" * rng.randrange(0, 2000)}
        req = runs_pb2.CreateRunRequest(
            image=f"img-{name}",
            inputs=_struct(inputs),
            retry_policy=runs_pb2.RetryPolicy(max_attempts=2),
            event_delivery=runs_pb2.EventDelivery(topic="crash" if k % 2 else ""),
        )
        run = (await stub.CreateRun(req)).run
        acked.runs[run.id] = (run.image, json_format.MessageToDict(run.inputs))
        steps: list[tuple[int, dict[str, Any]]] = [
            (ET.EVENT_TYPE_INFO, {"note": f"{name}-{k}"}),
            (ET.EVENT_TYPE_STARTED, {"worker_id": name}),
            (ET.EVENT_TYPE_PROGRESS, {}),
        ]
        end = rng.choice(["complete", "fail", "cancel"])
        if end == "complete":
            steps.append((ET.EVENT_TYPE_COMPLETED, {"outputs": {"r": float(k)}}))
        elif end == "fail":
            steps.append((ET.EVENT_TYPE_FAILED, {"error_message": "boom"}))
        for type_, payload in steps:
            event = runs_pb2.AddEventRequest(
                run_id=run.id, type=type_, msg=f"m{k}", payload=_struct(payload)
            )
            if type_ == ET.EVENT_TYPE_PROGRESS:
                event.progress = 50
            try:
                acked.event((await stub.AddEvent(event)).event)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.FAILED_PRECONDITION:  # a claim got there first
                    raise
        if end == "cancel":
            try:
                done = (
                    await stub.CancelRun(runs_pb2.CancelRunRequest(id=run.id, reason="stop"))
                ).run
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
            else:
                acked.events[(run.id, done.last_seq)] = ("CANCELLED", "stop", {})


async def _worker(ch: grpc.aio.Channel, acked: Acked, worker_id: str) -> None:
    """Heartbeats and claims (each claim appends an ASSIGNED event)."""
    workers = workers_pb2_grpc.WorkerServiceStub(ch)
    resources = workers_pb2.Resources(cpu=64, ram_mb=64_000)
    while True:
        await workers.Heartbeat(
            workers_pb2.HeartbeatRequest(worker_id=worker_id, resources=resources)
        )
        acked.workers.add(worker_id)
        resp = await workers.ClaimRuns(
            workers_pb2.ClaimRunsRequest(worker_id=worker_id, max_runs=5)
        )
        for c in resp.claims:
            acked.events[(c.run.id, c.run.last_seq)] = ("ASSIGNED", "", {"worker_id": worker_id})


async def _load_then_kill(
    target: str, acked: Acked, kill: Any, rng: random.Random, round_: int
) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = runs_pb2_grpc.RunServiceStub(ch)
        tasks = [
            asyncio.create_task(_client(stub, acked, f"c{round_}-{i}", random.Random(rng.random())))
            for i in range(CLIENTS)
        ]
        tasks.append(asyncio.create_task(_worker(ch, acked, f"w{round_}")))
        # Let the load get going, then kill the server while calls are in flight.
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        for t in tasks:
            assert not t.done(), f"a client stopped before the kill: {t.exception()!r}"
        kill()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        # After the kill every call fails (UNAVAILABLE, or a stream reset); nothing else.
        assert isinstance(r, grpc.aio.AioRpcError), repr(r)


def _check_acked(db_path: Path, acked: Acked) -> list[str]:
    db = sqlite3.connect(db_path)
    try:
        runs = {
            r[0]: (r[1], json.loads(r[2])) for r in db.execute("SELECT id, image, inputs FROM runs")
        }
        events = {
            (r[0], r[1]): (r[2], r[3], json.loads(r[4]))
            for r in db.execute("SELECT run_id, seq, type, msg, payload FROM events")
        }
        workers = {r[0] for r in db.execute("SELECT worker_id FROM workers")}
    finally:
        db.close()
    problems = []
    for run_id, content in acked.runs.items():
        if runs.get(run_id) != content:
            problems.append(
                f"acknowledged run {run_id}: {content!r:.80} is {runs.get(run_id)!r:.80}"
            )
    for key, (type_, msg, payload) in acked.events.items():
        got = events.get(key)
        if got is None or got[0] != type_ or (type_ != "ASSIGNED" and got[1:] != (msg, payload)):
            problems.append(f"acknowledged event {key} {type_}: found {got!r:.120}")
    problems.extend(f"acknowledged worker {w} is missing" for w in acked.workers - workers)
    return problems


async def test_sigkill_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    db_path = tmp_path / "crash.db"
    url = f"sqlite+aiosqlite:///{db_path}"
    acked = Acked()
    rng = random.Random(7)
    started = time.monotonic()
    counts = []
    for round_ in range(ROUNDS):
        before = len(acked.runs) + len(acked.events)
        with serve(
            tmp_path, "--port", "0", "--database-url", url, log_name=f"serve-{round_}.log"
        ) as proc:
            target = proc.wait_serving()
            if round_:  # the restarted server serves what was acknowledged before the kill
                await _spot_check(target, acked, rng)
            await _load_then_kill(target, acked, proc.process.kill, rng, round_)
            assert proc.process.wait(10) == -9
        counts.append(len(acked.runs) + len(acked.events) - before)
        assert counts[-1] > 0, f"round {round_}: nothing was acknowledged"
        problems = _check_acked(db_path, acked) + await database_problems(url)
        assert problems == [], f"round {round_}:\n" + "\n".join(problems[:20])
    assert sum(counts) > ROUNDS * 10, counts
    took = time.monotonic() - started
    print(f"{ROUNDS} kills, {sum(counts)} acknowledged writes checked, {took:.1f}s")


async def _spot_check(target: str, acked: Acked, rng: random.Random) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = runs_pb2_grpc.RunServiceStub(ch)
        for run_id in rng.sample(sorted(acked.runs), min(5, len(acked.runs))):
            got = (await stub.GetRun(runs_pb2.GetRunRequest(id=run_id))).run
            assert (got.image, json_format.MessageToDict(got.inputs)) == acked.runs[run_id]
            listed = await stub.ListEvents(runs_pb2.ListEventsRequest(run_id=run_id))
            seqs = {(run_id, e.seq) for e in listed.events}
            assert {k for k in acked.events if k[0] == run_id} <= seqs
