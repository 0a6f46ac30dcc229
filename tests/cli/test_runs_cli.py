"""`gyoza-grpc runs ...` as a process against a real server: what it sends, prints and exits."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc
from google.protobuf import json_format

from gyoza.v1 import runs_pb2, runs_pb2_grpc
from gyoza_grpc.domain.limits import Limits
from tests.cli.conftest import CliServer, cli
from tests.conftest import launch
from tests.service.helpers import add, as_dict, create, get

S = runs_pb2


def no_ansi(text: str) -> bool:
    return "\x1b" not in text


async def test_create_with_inputs_and_flags_then_get_and_list(
    srv: CliServer, tmp_path: Path
) -> None:
    inputs_file = tmp_path / "inputs.json"
    inputs_file.write_text(json.dumps({"n": 1, "from_file": [1, "a"], "flag": False}))
    made = await cli(
        srv.target, "runs", "create", "--image", "img:1",
        "--inputs-file", str(inputs_file),
        "--input", "n=3", "--input", "name=bob", "--input", 'obj={"a": [1, 2]}',
        "--input", "quoted=\"7\"", "--input", "eq=a=b",
        "--priority", "7", "--cpu", "2", "--ram-mb", "512", "--gpu-id", "1",
        "--max-attempts", "3", "--initial-backoff", "1.5",
        "--topic", "t1", "--attribute", "team=ml",
        "--request-id", "req-1", "--json", "--api-key", "k-flag",
    )  # fmt: skip
    assert made.code == 0, made.err
    doc = json.loads(made.out)
    run = await get(srv.runs, doc["id"])
    assert doc["state"] == "RUN_STATE_PENDING" and doc["priority"] == 7
    assert as_dict(run.inputs) == {
        "n": 3, "from_file": [1, "a"], "flag": False, "name": "bob",
        "obj": {"a": [1, 2]}, "quoted": "7", "eq": "a=b",
    }  # fmt: skip
    assert (run.constraints.cpu, run.constraints.ram_mb, run.constraints.gpu_id) == (2, 512, 1)
    assert not run.constraints.HasField("vram_mb")
    assert run.retry_policy.max_attempts == 3
    assert run.retry_policy.initial_backoff.ToMilliseconds() == 1500
    assert run.event_delivery.topic == "t1"
    assert as_dict(run.event_delivery.attributes) == {"team": "ml"}
    assert run.request_id == "req-1"

    # Inputs from stdin; the API key from the environment; -q prints the id alone.
    quiet = await cli(
        srv.target, "runs", "create", "--image", "img:2", "--inputs-file", "-", "-q",
        env={"GYOZA_API_KEY": "k-env"}, stdin=b'{"x": "from stdin"}',
    )  # fmt: skip
    assert quiet.code == 0, quiet.err
    second = await get(srv.runs, quiet.out.strip())
    assert as_dict(second.inputs) == {"x": "from stdin"} and second.image == "img:2"
    assert srv.recorder.keys_sent_to("CreateRun") == ["k-flag", "k-env"]

    gets_before = len(srv.recorder.keys_sent_to("GetRun"))
    shown = await cli(srv.target, "runs", "get", run.id)
    assert shown.code == 0, shown.err
    assert no_ansi(shown.out)
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in shown.out.splitlines()}
    assert lines["id"] == run.id and lines["state"] == "PENDING" and lines["image"] == "img:1"
    assert json.loads(lines["inputs"])["obj"] == {"a": [1, 2]}
    assert lines["topic"] == "t1"
    assert srv.recorder.keys_sent_to("GetRun")[gets_before:] == [""]  # no key given, none sent

    listed = await cli(
        srv.target, "runs", "list", "--state", "PENDING", "--image", "img:2", "--json"
    )
    assert listed.code == 0, listed.err
    page = json_format.Parse(listed.out, runs_pb2.ListRunsResponse())
    assert [r.id for r in page.data] == [second.id] and not page.has_more

    table = await cli(srv.target, "runs", "list", "--limit", "1")
    assert table.code == 0, table.err
    rows = table.out.splitlines()
    assert rows[0].split()[:3] == ["ID", "STATE", "PRIORITY"]
    assert len(rows) == 2 and rows[1].split()[:2] == [second.id, "PENDING"]  # newest first
    assert no_ansi(table.out)
    assert f"more: --starting-after {second.id}" in table.err


async def test_cancel_retry_and_events(srv: CliServer) -> None:
    run = await create(srv.runs)
    await add(srv.runs, run.id, S.EVENT_TYPE_STARTED, payload={"worker_id": "w"})
    await add(srv.runs, run.id, S.EVENT_TYPE_PROGRESS, progress=30, msg="a third [done]")

    cancelled = await cli(srv.target, "runs", "cancel", run.id, "--reason", "no longer needed")
    assert cancelled.code == 0, cancelled.err
    assert "CANCELLED" in cancelled.out
    assert (await get(srv.runs, run.id)).state == S.RUN_STATE_CANCELLED

    retried = await cli(srv.target, "runs", "retry", run.id, "--json")
    assert retried.code == 0, retried.err
    doc = json.loads(retried.out)
    assert doc["state"] == "RUN_STATE_PENDING" and doc["currentAttempt"] == 2

    table = await cli(srv.target, "runs", "events", run.id)
    assert table.code == 0, table.err
    rows = [line.split() for line in table.out.splitlines()]
    assert rows[0] == ["SEQ", "TIME", "ATTEMPT", "TYPE", "STATE", "PROGRESS", "MESSAGE"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    # seq, date, time, attempt, type, state, [progress,] message
    assert [r[4] for r in rows[1:]] == ["STARTED", "PROGRESS", "CANCELLED", "RETRIED"]
    assert rows[2][6:] == ["30%", "a", "third", "[done]"]  # text, not markup
    assert rows[3][3:] == ["1", "CANCELLED", "CANCELLED", "no", "longer", "needed"]

    lines = await cli(srv.target, "runs", "events", run.id, "--after", "1", "--json")
    assert lines.code == 0, lines.err
    events = [json.loads(line) for line in lines.out.splitlines()]
    assert [(e["seq"], e["type"]) for e in events] == [
        ("2", "EVENT_TYPE_CANCELLED"),
        ("3", "EVENT_TYPE_RETRIED"),
    ]
    assert events[1]["attempt"] == 2 and events[1]["runId"] == run.id


async def test_count_per_state_and_with_a_state(srv: CliServer) -> None:
    await create(srv.runs, "img-count")
    cancelled = await create(srv.runs, "img-count")
    await cli(srv.target, "runs", "cancel", cancelled.id)
    await create(srv.runs, "img-other")

    table = await cli(srv.target, "runs", "count", "--image", "img-count")
    assert table.code == 0, table.err
    assert no_ansi(table.out)
    rows = [line.split() for line in table.out.splitlines()]
    assert rows == [
        ["STATE", "RUNS"],
        ["PENDING", "1"],
        ["ASSIGNED", "0"],
        ["RUNNING", "0"],
        ["COMPLETED", "0"],
        ["FAILED", "0"],
        ["CANCELLED", "1"],
        ["total", "2"],
    ]

    one = await cli(srv.target, "runs", "count", "--state", "pending")
    assert one.code == 0, one.err
    assert [line.split() for line in one.out.splitlines()] == [["STATE", "RUNS"], ["PENDING", "2"]]

    doc = await cli(srv.target, "runs", "count", "--definition", "none", "--json")
    assert doc.code == 0, doc.err
    got = json_format.Parse(doc.out, runs_pb2.CountRunsResponse())
    assert got.total == 0 and [c.count for c in got.by_state] == [0] * 6

    reversed_range = await cli(
        srv.target, "runs", "count", "--since", "2030-01-01T00:00:00Z",
        "--until", "2020-01-01T00:00:00Z",
    )  # fmt: skip
    assert reversed_range.code == 3
    assert reversed_range.err.startswith("error: INVALID_ARGUMENT: ")
    assert "created_lt" in reversed_range.err


async def test_errors_name_the_status_and_exit_non_zero(srv: CliServer) -> None:
    missing = await cli(srv.target, "runs", "get", "no-such-run")
    assert missing.code == 3
    assert missing.out == ""
    assert missing.err.startswith("error: NOT_FOUND: ") and "no-such-run" in missing.err

    refused = await cli(srv.target, "runs", "create", "--image", "img", "--cpu", "-1")
    assert refused.code == 3
    first, *violations = refused.err.splitlines()
    assert first.startswith("error: INVALID_ARGUMENT: ")
    assert violations == ["  constraints.cpu: must be >= 0, got -1"]

    bad_input = await cli(srv.target, "runs", "create", "--image", "img", "--input", "novalue")
    assert bad_input.code == 2
    assert bad_input.err == "error: --input expects KEY=VALUE, got 'novalue'\n"

    not_object = await cli(
        srv.target, "runs", "create", "--image", "img", "--inputs-file", "-", stdin=b"[1, 2]"
    )
    assert not_object.code == 2 and "must hold a JSON object" in not_object.err
    assert srv.recorder.keys_sent_to("CreateRun") == [""]  # only the server-refused one was sent

    no_ca = await cli(srv.target, "workers", "list", "--tls-ca", "/nonexistent/ca.pem")
    assert no_ca.code == 2 and no_ca.err.startswith("error: --tls-ca: cannot read ")

    unreachable = await cli("127.0.0.1:1", "runs", "list", "--timeout", "5")
    assert unreachable.code == 4
    assert unreachable.err.startswith("error: UNAVAILABLE: ")


async def test_what_no_request_can_carry_is_a_usage_error_not_a_traceback(
    srv: CliServer,
) -> None:
    """Arguments that are not UTF-8, integers past int32/int64, JSON strings with a lone
    surrogate, durations no google.protobuf.Duration holds: `error: ...`, exit 2, nothing sent."""
    not_utf8 = os.fsdecode(b"\xff")  # how Python passes on an argument's bytes that are not UTF-8
    cases = {
        ("runs", "get", not_utf8): "error: id: '\\udcff' is not valid UTF-8",
        ("runs", "create", "--image", not_utf8): "error: image: '\\udcff' is not valid UTF-8",
        ("runs", "create", "--image", "i", "--input", 'x="\\ud800"'): (
            "error: inputs.x: '\\ud800' is not valid UTF-8"
        ),
        ("definitions", "get", not_utf8): "error: name: '\\udcff' is not valid UTF-8",
        ("runs", "create", "--image", "i", "--priority", str(2**31)): (
            f"argument --priority: {2**31} is out of range (-2147483648..2147483647)"
        ),
        ("runs", "list", "--limit", str(-(2**31) - 1)): "argument --limit: ",
        ("definitions", "list", "--limit", str(2**31)): "argument --limit: ",
        ("runs", "events", "r", "--attempt", str(2**31)): "argument --attempt: ",
        ("runs", "watch", "r", "--after", str(2**63)): (
            f"argument --after: {2**63} is out of range"
        ),
        ("runs", "create", "--image", "i", "--initial-backoff", "1e300"): (
            "error: --initial-backoff must be a number of seconds up to 315576000000"
        ),
        ("runs", "create", "--image", "i", "--max-backoff", "nan"): (
            "error: --max-backoff must be a number of seconds up to 315576000000"
        ),
    }
    results = await asyncio.gather(*(cli(srv.target, *args) for args in cases))
    for (args, expected), got in zip(cases.items(), results, strict=True):
        assert (got.code, got.out) == (2, ""), (args, got)
        assert "Traceback" not in got.err and expected in got.err, (args, got.err)
    assert srv.recorder.calls == []


async def test_events_with_a_limit_read_on_past_a_page_cut_by_the_budget(sqlite_url: str) -> None:
    """`runs events --limit N` gives N events although the server ends each page early at its
    response budget (here about 4 KiB: a few 1 KB events a page)."""
    gs = await launch(sqlite_url, limits=Limits(max_response_bytes=4 * 1024))
    try:
        async with grpc.aio.insecure_channel(gs.target) as channel:
            runs = runs_pb2_grpc.RunServiceStub(channel)
            run = await create(runs)
            for i in range(12):
                await add(runs, run.id, S.EVENT_TYPE_INFO, msg=f"{i}", payload={"b": "x" * 1000})
        got = await cli(gs.target, "runs", "events", run.id, "--limit", "10", "--json")
        assert got.code == 0, got.err
        assert [json.loads(line)["seq"] for line in got.out.splitlines()] == [
            str(i) for i in range(10)
        ]
    finally:
        await gs.stop(0)
