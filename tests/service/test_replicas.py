"""Two replicas over one PostgreSQL database: watchers on one see what is written through the
other (LISTEN/NOTIFY, and the catch-up when a notification is lost), long-polling claims wake
across replicas, claims and eviction sweeps stay exactly-once, topic cursors stay gap-free.

Each replica is a full server (its own fan-out, claim signal, listener and pool) in this
process; they share nothing but the database. tests/e2e/test_replicas_e2e.py does the same
with two `gyoza-grpc serve` processes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy.engine import make_url

from gyoza.v1 import (
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
)
from gyoza_grpc.server import GyozaServer
from gyoza_grpc.server.store.wakeups import MAX_PAYLOAD_BYTES, Wakeups, decode
from tests import databases
from tests.conftest import eventually, launch
from tests.service.helpers import add, error_reason, fails

S = runs_pb2
W = workers_pb2
# A catch-up slower than any test: what arrives in time came through NOTIFY.
NO_CATCHUP = {"catchup_interval_s": 600.0}
# Generous per-event bound for a loaded 2-core machine; the typical figure is far lower.
EVENT_BOUND_S = 2.0


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await databases.create_postgres_database()
    try:
        yield url
    finally:
        await databases.drop_postgres_database(url)


class Replica:
    def __init__(self, gs: GyozaServer, channel: grpc.aio.Channel) -> None:
        self.gs = gs
        self.channel = channel
        self.runs = runs_pb2_grpc.RunServiceStub(channel)
        self.topics = topics_pb2_grpc.TopicServiceStub(channel)
        self.workers = workers_pb2_grpc.WorkerServiceStub(channel)


async def _replica(url: str, **overrides: Any) -> Replica:
    gs = await launch(url, **overrides)
    assert gs.wakeup is not None
    await asyncio.wait_for(gs.wakeup.listening.wait(), 10)
    return Replica(gs, grpc.aio.insecure_channel(gs.target))


async def _close(*replicas: Replica) -> None:
    for r in replicas:
        await r.channel.close()
        await r.gs.stop(0)


async def create(r: Replica, topic: str = "", **kw: Any) -> runs_pb2.Run:
    req = S.CreateRunRequest(image="img", event_delivery=S.EventDelivery(topic=topic), **kw)
    return (await r.runs.CreateRun(req)).run


def _wait(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


async def register(r: Replica, worker_id: str, cpu: int = 64) -> None:
    await r.workers.Heartbeat(
        W.HeartbeatRequest(worker_id=worker_id, resources=W.Resources(cpu=cpu, ram_mb=64000))
    )


async def long_poll(r: Replica, worker_id: str, wait_s: float) -> W.ClaimRunsResponse:
    req = W.ClaimRunsRequest(worker_id=worker_id, max_runs=1, wait=_wait(wait_s))
    resp: W.ClaimRunsResponse = await r.workers.ClaimRuns(req)
    return resp


def _report(label: str, latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return (
        f"{label}: n={len(ms)} p50={statistics.median(ms):.1f}ms "
        f"p90={ms[int(len(ms) * 0.9) - 1]:.1f}ms max={ms[-1]:.1f}ms"
    )


# -- the wake-up message ----------------------------------------------------------------------


def test_a_payload_round_trips_and_an_oversized_one_asks_for_everything() -> None:
    w = Wakeups(runs={"r1", "r2"}, topics={"t é"}, workers={"w1"}, claimable=True)
    got = decode(w.encode("me"))
    assert got is not None
    assert (got.origin, got.runs, got.topics, got.workers) == (
        "me",
        ("r1", "r2"),
        ("t é",),
        ("w1",),
    )
    assert got.claimable and not got.everything
    big = Wakeups(runs={f"run-{i:06d}" for i in range(2000)})
    text = big.encode("me")
    assert len(text.encode()) <= MAX_PAYLOAD_BYTES
    got = decode(text)
    assert got is not None and got.everything and got.runs == ()
    assert decode("not json") is None and decode('{"x": 1}') is None


# -- watchers ---------------------------------------------------------------------------------


async def test_watchers_on_b_see_every_event_written_through_a_in_order(pg_url: str) -> None:
    a = await _replica(pg_url, **NO_CATCHUP)
    b = await _replica(pg_url, **NO_CATCHUP)
    try:
        run = await create(a, topic="feed")
        sent: dict[int, float] = {}
        got_run: list[tuple[int, float]] = []
        got_topic: list[tuple[int, int, float]] = []
        n = 40

        async def watch_run() -> None:
            call = b.runs.WatchEvents(S.WatchEventsRequest(run_id=run.id))
            async for item in call:
                if item.HasField("event"):
                    got_run.append((item.event.seq, time.monotonic()))
                    if item.event.state == S.RUN_STATE_COMPLETED:
                        return

        async def watch_topic() -> None:
            call = b.topics.WatchTopic(topics_pb2.WatchTopicRequest(topic="feed"))
            async for item in call:
                if item.HasField("event"):
                    e = item.event
                    got_topic.append((e.cursor, e.event.seq, time.monotonic()))
                    if e.event.state == S.RUN_STATE_COMPLETED:
                        return

        watchers = [asyncio.create_task(watch_run()), asyncio.create_task(watch_topic())]
        await eventually(lambda: _subscribed(b, 2))
        started = (await add(a.runs, run.id, S.EVENT_TYPE_STARTED)).run
        sent[started.last_seq] = time.monotonic()
        for i in range(1, n):
            await asyncio.sleep(0.01)
            resp = await add(a.runs, run.id, S.EVENT_TYPE_PROGRESS, progress=i)
            sent[resp.run.last_seq] = time.monotonic()
        done = await add(a.runs, run.id, S.EVENT_TYPE_COMPLETED)
        sent[done.run.last_seq] = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*watchers), 30)

        assert [seq for seq, _ in got_run] == list(range(n + 1))  # 0 = CREATED: no gap or dup
        assert [c for c, _, _ in got_topic] == list(range(1, n + 2))
        assert [seq for _, seq, _ in got_topic] == list(range(n + 1))
        run_lat = [t - sent[seq] for seq, t in got_run if seq in sent]
        topic_lat = [t - sent[seq] for _, seq, t in got_topic if seq in sent]
        print("\n" + _report("cross-replica WatchEvents", run_lat))
        print(_report("cross-replica WatchTopic", topic_lat))
        assert max(run_lat) < EVENT_BOUND_S and max(topic_lat) < EVENT_BOUND_S
    finally:
        await _close(a, b)


async def _subscribed(r: Replica, n: int) -> bool:
    return r.gs.fanout.subscriber_count() >= n


async def test_a_lost_notification_is_healed_by_the_catch_up(pg_url: str) -> None:
    a = await _replica(pg_url, **NO_CATCHUP)
    b = await _replica(pg_url, **NO_CATCHUP)
    assert b.gs.wakeup is not None
    try:
        run = await create(a, topic="lost")
        got: list[int] = []
        call = b.runs.WatchEvents(S.WatchEventsRequest(run_id=run.id))

        async def watch() -> None:
            async for item in call:
                if item.HasField("event"):
                    got.append(item.event.seq)

        task = asyncio.create_task(watch())
        await eventually(lambda: _subscribed(b, 1))
        received: list[str] = []
        b.gs.wakeup.on_payload = received.append  # type: ignore[method-assign]  # drop them all
        await add(a.runs, run.id, S.EVENT_TYPE_STARTED)
        await add(a.runs, run.id, S.EVENT_TYPE_PROGRESS, progress=5)
        await eventually(lambda: _true(len(received) >= 2))
        await asyncio.sleep(0.3)
        assert got == [], "with its notifications dropped, B cannot have heard of the events"
        assert await b.gs.wakeup.catch_up() == 1  # the run is behind the tables: fed once
        await eventually(lambda: _true(got == [0, 1]))
        assert await b.gs.wakeup.catch_up() == 0  # now up to date: nothing to do
        call.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await _close(a, b)


async def _true(value: bool) -> bool:
    return value


async def test_a_killed_listener_connection_only_delays_delivery(pg_url: str) -> None:
    a = await _replica(pg_url, **NO_CATCHUP)
    b = await _replica(pg_url, catchup_interval_s=0.5)
    assert b.gs.wakeup is not None and b.gs.wakeup.connection is not None
    try:
        run = await create(a)
        got: list[int] = []
        call = b.runs.WatchEvents(S.WatchEventsRequest(run_id=run.id))

        async def watch() -> None:
            async for item in call:
                if item.HasField("event"):
                    got.append(item.event.seq)

        task = asyncio.create_task(watch())
        await eventually(lambda: _subscribed(b, 1))
        pid = b.gs.wakeup.connection.get_server_pid()
        dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
        admin = await asyncpg.connect(dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        # Written while B has no listener: reaches B's watcher through the catch-up or the
        # catch-up that follows the reconnect.
        await add(a.runs, run.id, S.EVENT_TYPE_STARTED)
        for i in range(1, 3):
            await add(a.runs, run.id, S.EVENT_TYPE_PROGRESS, progress=i)
        await eventually(lambda: _true(got == [0, 1, 2]), timeout_s=10)
        await eventually(lambda: _true(b.gs.wakeup.connects >= 2), timeout_s=10)  # type: ignore[union-attr]
        assert b.gs.wakeup.connection.get_server_pid() != pid
        # Reconnected: the fast path works again.
        await add(a.runs, run.id, S.EVENT_TYPE_PROGRESS, progress=50)
        await eventually(lambda: _true(got == [0, 1, 2, 3]), timeout_s=EVENT_BOUND_S)
        call.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await _close(a, b)


# -- claims -----------------------------------------------------------------------------------


async def test_a_claim_long_poll_on_b_wakes_when_a_run_is_created_on_a(pg_url: str) -> None:
    a = await _replica(pg_url, **NO_CATCHUP)
    b = await _replica(pg_url, **NO_CATCHUP)
    try:
        await register(b, "w1")
        started = time.monotonic()
        poll = asyncio.create_task(long_poll(b, "w1", 30))
        await eventually(lambda: _true(b.gs.work_signal.waiting == 1))
        created_at = time.monotonic()
        run = await create(a)
        resp = await asyncio.wait_for(poll, 10)
        woke = time.monotonic() - created_at
        print(f"\ncross-replica claim wake-up: {woke * 1000:.1f}ms")
        assert [c.run.id for c in resp.claims] == [run.id]
        assert woke < EVENT_BOUND_S and time.monotonic() - started < 15
    finally:
        await _close(a, b)


async def test_a_run_ending_on_a_wakes_its_workers_long_poll_on_b(pg_url: str) -> None:
    a = await _replica(pg_url, **NO_CATCHUP)
    b = await _replica(pg_url, **NO_CATCHUP)
    try:
        await register(a, "w1", cpu=1)
        first = await create(a, constraints=S.Constraints(cpu=1))
        second = await create(a, constraints=S.Constraints(cpu=1))
        (c,) = (await a.workers.ClaimRuns(W.ClaimRunsRequest(worker_id="w1"))).claims
        assert c.run.id == first.id  # the worker is full now: `second` waits for it
        poll = asyncio.create_task(long_poll(b, "w1", 30))
        await eventually(lambda: _true(b.gs.work_signal.waiting == 1))
        await add(a.runs, first.id, S.EVENT_TYPE_STARTED, attempt=1)
        await add(a.runs, first.id, S.EVENT_TYPE_COMPLETED, attempt=1)
        resp = await asyncio.wait_for(poll, EVENT_BOUND_S + 3)
        assert [x.run.id for x in resp.claims] == [second.id]
    finally:
        await _close(a, b)


async def test_a_lost_claim_wake_up_is_healed_by_the_catch_up(pg_url: str) -> None:
    a = await _replica(pg_url, **NO_CATCHUP)
    b = await _replica(pg_url, catchup_interval_s=0.3)
    assert b.gs.wakeup is not None
    try:
        await register(b, "w1")
        b.gs.wakeup.on_payload = lambda _p: None  # type: ignore[method-assign]
        poll = asyncio.create_task(long_poll(b, "w1", 30))
        await eventually(lambda: _true(b.gs.work_signal.waiting == 1))
        run = await create(a)
        resp = await asyncio.wait_for(poll, 10)  # far sooner than the 30 s poll
        assert [c.run.id for c in resp.claims] == [run.id]
    finally:
        await _close(a, b)


async def test_eight_workers_on_two_replicas_claim_500_runs_each_exactly_once(pg_url: str) -> None:
    a = await _replica(pg_url)
    b = await _replica(pg_url)
    try:
        replicas = [a, b]
        workers = [(f"w{i}", replicas[i % 2]) for i in range(8)]
        for worker_id, r in workers:
            await register(r, worker_id, cpu=1000)
        claimed: Counter[str] = Counter()
        total = 500
        creating = asyncio.Event()

        async def work(worker_id: str, r: Replica) -> None:
            idle = 0
            while idle < 3 or not creating.is_set():
                req = W.ClaimRunsRequest(worker_id=worker_id, max_runs=5, wait=_wait(0.5))
                resp = await r.workers.ClaimRuns(req)
                idle = 0 if resp.claims else idle + 1
                claimed.update(c.run.id for c in resp.claims)

        async def create_all() -> set[str]:
            ids: set[str] = set()
            for start in range(0, total, 50):
                batch = [create(replicas[i % 2]) for i in range(start, start + 50)]
                ids.update(r.id for r in await asyncio.gather(*batch))
            creating.set()
            return ids

        tasks = [asyncio.create_task(work(w, r)) for w, r in workers]
        created = await create_all()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert len(created) == total
        assert set(claimed) == created
        assert [run_id for run_id, n in claimed.items() if n != 1] == []
    finally:
        await _close(a, b)


async def test_eviction_sweeps_on_both_replicas_retry_each_run_once(pg_url: str) -> None:
    fast = {"lease_seconds": 2, "sweep_interval_s": 0.05}
    a = await _replica(pg_url, **fast)
    b = await _replica(pg_url, **fast)
    try:
        await register(a, "doomed", cpu=1000)
        retry = S.RetryPolicy(max_attempts=3)
        made = [await create(a if i % 2 else b, retry_policy=retry) for i in range(20)]
        resp = await b.workers.ClaimRuns(W.ClaimRunsRequest(worker_id="doomed", max_runs=20))
        assert len(resp.claims) == 20
        running = {c.run.id for c in resp.claims[:10]}
        for run_id in running:
            await add(a.runs, run_id, S.EVENT_TYPE_STARTED, attempt=1)

        async def all_pending_again() -> bool:
            runs = [(await a.runs.GetRun(S.GetRunRequest(id=r.id))).run for r in made]
            return all(r.state == S.RUN_STATE_PENDING and r.current_attempt == 2 for r in runs)

        await eventually(all_pending_again, timeout_s=15)
        await asyncio.sleep(0.5)  # more sweeps on both replicas: none may touch them again
        for r in made:
            resp_a = await a.runs.ListAttempts(S.ListAttemptsRequest(run_id=r.id))
            assert len(resp_a.attempts) == 2, r.id
            timeline = (await a.runs.ListEvents(S.ListEventsRequest(run_id=r.id))).events
            kinds = Counter(e.type for e in timeline)
            if r.id in running:
                assert (kinds[S.EVENT_TYPE_FAILED], kinds[S.EVENT_TYPE_RETRIED]) == (1, 1)
            else:
                assert kinds[S.EVENT_TYPE_FAILED] == 0
            assert [e.seq for e in timeline] == list(range(len(timeline)))
    finally:
        await _close(a, b)


# -- topics -----------------------------------------------------------------------------------


async def test_topic_writers_through_both_replicas_get_gap_free_cursors(pg_url: str) -> None:
    a = await _replica(pg_url)
    b = await _replica(pg_url)
    try:
        replicas = [a, b]
        made = [await create(replicas[i % 2], topic="shared") for i in range(8)]
        per_run = 12
        expected = len(made) * per_run
        seen: dict[str, list[int]] = {"a": [], "b": []}

        async def watch(name: str, r: Replica) -> None:
            call = r.topics.WatchTopic(topics_pb2.WatchTopicRequest(topic="shared"))
            async for item in call:
                if item.HasField("event"):
                    seen[name].append(item.event.cursor)
                    if len(seen[name]) == expected:
                        return

        watchers = [asyncio.create_task(watch("a", a)), asyncio.create_task(watch("b", b))]

        async def write(i: int, run: runs_pb2.Run) -> None:
            for p in range(per_run):
                r = replicas[(i + p) % 2]
                await add(r.runs, run.id, S.EVENT_TYPE_INFO, msg=f"{i}/{p}")

        await asyncio.gather(*(write(i, run) for i, run in enumerate(made)))
        await asyncio.wait_for(asyncio.gather(*watchers), 30)
        listed = await a.topics.ListTopicEvents(
            topics_pb2.ListTopicEventsRequest(topic="shared", limit=1000)
        )
        cursors = [e.cursor for e in listed.events]
        assert cursors == list(range(1, expected + 1))
        assert seen["a"] == cursors and seen["b"] == cursors
    finally:
        await _close(a, b)


# -- statement timeout ------------------------------------------------------------------------


async def test_a_statement_past_the_timeout_is_unavailable_not_unknown(pg_url: str) -> None:
    r = await _replica(pg_url, db_statement_timeout_s=0.3)
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    admin = await asyncpg.connect(dsn)
    try:
        run = await create(r)
        tx = admin.transaction()
        await tx.start()
        await admin.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", run.id)
        started = time.monotonic()
        err = await fails(add(r.runs, run.id, S.EVENT_TYPE_STARTED), grpc.StatusCode.UNAVAILABLE)
        assert time.monotonic() - started < 5
        assert "statement timeout" in (err.details() or "")
        assert error_reason(err) == "DATABASE_TIMEOUT"
        await tx.rollback()
        # The lock is gone: the same call goes through, and nothing half-done was left.
        resp = await add(r.runs, run.id, S.EVENT_TYPE_STARTED)
        assert resp.event.seq == 0 and resp.run.state == S.RUN_STATE_RUNNING
    finally:
        await admin.close()
        await _close(r)


def test_serve_flags_and_environment_set_the_timeout_and_the_catch_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gyoza_grpc.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--db-statement-timeout", "2.5", "--catchup-interval", "0.25"]
    )
    assert (args.db_statement_timeout, args.catchup_interval) == (2.5, 0.25)
    monkeypatch.setenv("GYOZA_DB_STATEMENT_TIMEOUT", "7")
    monkeypatch.setenv("GYOZA_CATCHUP_INTERVAL", "3")
    args = build_parser().parse_args(["serve"])
    assert (args.db_statement_timeout, args.catchup_interval) == (7.0, 3.0)
