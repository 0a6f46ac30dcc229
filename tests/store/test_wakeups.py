"""Wakeups.merge: a group-commit batch's one NOTIFY names what every write of it touched."""

from __future__ import annotations

import dataclasses

from gyoza_grpc.server.store.wakeups import Wakeups, decode


def test_a_merge_keeps_every_kind_of_key() -> None:
    parts = [
        Wakeups(runs={"r1"}),
        Wakeups(topics={"t"}),
        Wakeups(workers={"w"}),
        Wakeups(stops={"r2"}),
        Wakeups(claimable=True),
    ]
    merged = Wakeups()
    for part in parts:
        merged.merge(part)
    # A field added to Wakeups later must be merged too: each is set here by one part.
    for f in dataclasses.fields(Wakeups):
        assert getattr(merged, f.name), f"merge drops {f.name}"
    got = decode(merged.encode("o"))
    assert got is not None
    assert (got.runs, got.topics, got.workers, got.stops, got.claimable) == (
        ("r1",),
        ("t",),
        ("w",),
        ("r2",),
        True,
    )
