"""The runs feed's mailboxes: the newest copy of a run wins, filters, overflow -> resync, and
the end at close (through `follow`, as WatchRuns reads it)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gyoza_grpc.domain.errors import Unavailable
from gyoza_grpc.domain.model import EventDelivery, Run, RunSpec
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.server.streams.run_feed import Quiet, Resync, RunFeed, RunFilter, follow

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def run(image: str = "img", topic: str = "") -> Run:
    return new_run(RunSpec(image=image, event_delivery=EventDelivery(topic=topic)), T0)


def changed(r: Run, last_seq: int, seconds: int = 1) -> Run:
    return replace(r, last_seq=last_seq, updated_at=r.updated_at + timedelta(seconds=seconds))


def test_the_newest_copy_of_a_run_is_kept() -> None:
    feed = RunFeed()
    watch = feed.subscribe(RunFilter())
    r = run()
    feed.publish(changed(r, 3))
    feed.publish(changed(r, 1))  # an older copy, published late: ignored
    other = run()
    feed.publish(other)
    taken = watch.take()
    assert [(x.id, x.last_seq) for x in taken if isinstance(x, Run)] == [(r.id, 3), (other.id, -1)]
    assert watch.take() == []


def test_filters_match_properties_a_run_never_changes() -> None:
    feed = RunFeed()
    by_image = feed.subscribe(RunFilter(image="a"))
    by_topic = feed.subscribe(RunFilter(topic="t"))
    by_both = feed.subscribe(RunFilter(image="a", topic="t"))
    a, at, b = run("a"), run("a", topic="t"), run("b")
    for r in (a, at, b):
        feed.publish(r)
    assert [x.id for x in by_image.take() if isinstance(x, Run)] == [a.id, at.id]
    assert [x.id for x in by_topic.take() if isinstance(x, Run)] == [at.id]
    assert [x.id for x in by_both.take() if isinstance(x, Run)] == [at.id]


def test_a_watcher_behind_by_more_runs_than_it_holds_gets_a_resync() -> None:
    feed = RunFeed(buffer_limit=3)
    watch = feed.subscribe(RunFilter())
    first = run()
    for _ in range(3):
        feed.publish(run())
    feed.publish(changed(first, 5))
    feed.publish(first)  # nothing more is held until the watcher has taken the resync
    taken = watch.take()
    assert len(taken) == 1 and isinstance(taken[0], Resync)
    assert "more than 3 runs" in taken[0].reason
    feed.publish(first)
    assert [x.id for x in watch.take() if isinstance(x, Run)] == [first.id]


def test_many_changes_of_one_run_take_one_slot() -> None:
    feed = RunFeed(buffer_limit=2)
    watch = feed.subscribe(RunFilter())
    r = run()
    for seq in range(100):
        feed.publish(changed(r, seq, seq))
    taken = watch.take()
    assert [(x.id, x.last_seq) for x in taken if isinstance(x, Run)] == [(r.id, 99)]


async def test_follow_heartbeats_then_ends_unavailable_at_close() -> None:
    feed = RunFeed()
    watch = feed.subscribe(RunFilter())
    items = follow(feed, watch, heartbeat_s=0.05)
    assert isinstance(await anext(items), Quiet)
    r = run()
    feed.publish(r)
    got = await anext(items)
    assert isinstance(got, Run) and got.id == r.id
    feed.lose_all("lost")
    assert await anext(items) == Resync("lost")
    feed.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(anext(items), 5)
    assert feed.watcher_count() == 0
