"""GetRun's kept replies (api/run_replies.py): reused for the very same Run object only."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from gyoza.v1 import runs_pb2
from gyoza_grpc.domain.model import RunSpec
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.server.api import convert
from gyoza_grpc.server.api.run_replies import RunReplies

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _fresh(run: object) -> runs_pb2.GetRunResponse:
    out = runs_pb2.GetRunResponse()
    convert.fill_run(out.run, run)  # type: ignore[arg-type]
    return out


def test_the_same_run_object_gets_the_same_reply_and_a_new_one_a_new_reply() -> None:
    replies = RunReplies()
    run = new_run(RunSpec(image="op:1", inputs={"n": 1, "l": [1, {"k": None}]}), NOW)
    first = replies.reply(run)
    assert first == _fresh(run)
    assert replies.reply(run) is first
    changed = dataclasses.replace(run, priority=9)
    second = replies.reply(changed)
    assert second is not first and second == _fresh(changed)
    assert second.run.priority == 9 and first.run.priority == 5
    # An equal but distinct object (a reload) is not trusted: a new reply, equal in content.
    reloaded = dataclasses.replace(changed)
    third = replies.reply(reloaded)
    assert third is not second and third == second


def test_the_oldest_replies_go_past_the_limit() -> None:
    replies = RunReplies(limit=3)
    runs = [new_run(RunSpec(image="op:1"), NOW) for _ in range(4)]
    made = [replies.reply(r) for r in runs]
    assert replies.reply(runs[3]) is made[3] and replies.reply(runs[1]) is made[1]
    assert replies.reply(runs[0]) is not made[0]  # dropped when the fourth came
