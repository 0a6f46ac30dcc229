"""`gyoza-grpc runs create|get|list|count|cancel|retry|events|watch`: the handlers, and the
table of commands (`RUNS`) at the end."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2
from rich.text import Text

from gyoza.v1 import runs_pb2
from gyoza_grpc.client import Client, RunState
from gyoza_grpc.client_cli.commands import Command, Group, flag
from gyoza_grpc.client_cli.failures import EXIT_OK, EXIT_UNAVAILABLE, UsageError
from gyoza_grpc.client_cli.inputs import (
    int32,
    int64,
    parse_pairs,
    read_json_object,
    timestamp,
    to_struct,
)
from gyoza_grpc.client_cli.output import (
    Output,
    compact,
    enum_name,
    event_type_name,
    optional,
    state_text,
    when,
)
from gyoza_grpc.client_cli.watch import watch_run

S = runs_pb2
STATES = ("pending", "assigned", "running", "completed", "failed", "cancelled")
# The events a run page is read in when `runs events` is given no --limit.
_EVENTS_PAGE = 1000


def create_run(args: argparse.Namespace, client: Client, out: Output) -> int:
    inputs = read_json_object(args.inputs_file, "--inputs-file") if args.inputs_file else {}
    inputs.update(parse_pairs(args.input, "--input"))
    inputs_pb = to_struct(inputs, "inputs")
    # No --request-id: the client makes one, so its retries never create a second run.
    request_id = args.request_id or None
    if args.definition:
        _refuse_ad_hoc_flags(args)
        run = client.create_run_from_definition(
            args.definition,
            version=args.version,
            inputs=inputs_pb,
            priority=args.priority,
            request_id=request_id,
        )
    else:
        if args.version:
            raise UsageError("--version goes with --definition")
        run = client.create_run(
            args.image, inputs=inputs_pb, request_id=request_id, **_ad_hoc(args)
        )
    if args.quiet:
        print(run.id)
    elif out.as_json:
        out.json_document(run)
    else:
        show_run(out, run)
    return EXIT_OK


_AD_HOC_FLAGS = (
    "cpu",
    "ram_mb",
    "vram_mb",
    "gpu_id",
    "max_attempts",
    "initial_backoff",
    "backoff_multiplier",
    "max_backoff",
)


def _refuse_ad_hoc_flags(args: argparse.Namespace) -> None:
    given = [n for n in _AD_HOC_FLAGS if getattr(args, n) is not None]
    given += [n for n in ("topic", "attribute") if getattr(args, n)]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise UsageError(f"{flags}: a run made from a definition takes these from the definition")


_MAX_DURATION_S = 315_576_000_000  # google.protobuf.Duration's range: 10,000 years


def _duration(seconds: float | None, flag: str) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    if seconds < 0:
        raise UsageError(f"{flag} must not be negative")
    if not seconds <= _MAX_DURATION_S:  # also NaN and inf, which no Duration holds
        raise UsageError(f"{flag} must be a number of seconds up to {_MAX_DURATION_S}")
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _ad_hoc(args: argparse.Namespace) -> dict[str, Any]:
    """create_run's arguments from the ad-hoc flags."""
    constraints = runs_pb2.Constraints(
        cpu=args.cpu, ram_mb=args.ram_mb, vram_mb=args.vram_mb, gpu_id=args.gpu_id
    )
    retry = runs_pb2.RetryPolicy(
        max_attempts=args.max_attempts or 0,
        initial_backoff=_duration(args.initial_backoff, "--initial-backoff"),
        backoff_multiplier=args.backoff_multiplier or 0.0,
        max_backoff=_duration(args.max_backoff, "--max-backoff"),
    )
    attributes = parse_pairs(args.attribute, "--attribute")
    if attributes and not args.topic:
        raise UsageError("--attribute goes with --topic")
    return {
        "priority": args.priority,
        "constraints": constraints,
        "retry_policy": retry,
        "topic": args.topic,
        "attributes": to_struct(attributes, "attributes"),
    }


def get_run(args: argparse.Namespace, client: Client, out: Output) -> int:
    run = client.get_run(args.id, with_events=args.events)
    if out.as_json:
        out.json_document(run)
        return EXIT_OK
    show_run(out, run)
    if args.events:
        out.console.print()
        show_events(out, run.events)
    return EXIT_OK


def list_runs(args: argparse.Namespace, client: Client, out: Output) -> int:
    pager = client.list_runs(
        **_filters(args),
        starting_after=args.starting_after,
        ending_before=args.ending_before,
        page_size=args.limit,  # 0: the server's default
    )
    page = pager.first_page()
    if out.as_json:
        out.json_document(runs_pb2.ListRunsResponse(data=page.items, has_more=page.has_more))
        return EXIT_OK
    out.table(
        ("ID", "STATE", "PRIORITY", "WHAT", "PROGRESS", "ATTEMPT", "CREATED"),
        (
            (
                r.id,
                state_text(r.state),
                str(r.priority),
                _what(r),
                f"{r.progress}%",
                _attempt(r),
                when(r.created_at),
            )
            for r in page.items
        ),
    )
    if page.has_more and page.items:
        if args.ending_before:
            out.note(f"more: --ending-before {page.items[0].id}")
        else:
            out.note(f"more: --starting-after {page.items[-1].id}")
    return EXIT_OK


def _when(text: str | None, flag: str) -> datetime | None:
    return None if not text else timestamp(text, flag).ToDatetime(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The run filters (RUN_FILTERS) as list_runs' and count_runs' arguments."""
    return {
        "state": RunState[(args.state or "unspecified").upper()],
        "definition": args.definition,
        "image": args.image,
        "topic": args.topic,
        "created_gte": _when(args.since, "--since"),
        "created_lt": _when(args.until, "--until"),
    }


def count_runs(args: argparse.Namespace, client: Client, out: Output) -> int:
    resp = client.count_runs(**_filters(args))
    if out.as_json:
        out.json_document(resp)
        return EXIT_OK
    rows: list[tuple[Text | str, str]] = [
        (state_text(c.state), str(c.count)) for c in resp.by_state
    ]
    if not rows:  # --state: the total is that state's count
        rows = [(state_text(RunState[args.state.upper()]), str(resp.total))]
    else:
        rows.append(("total", str(resp.total)))
    out.table(("STATE", "RUNS"), rows)
    return EXIT_OK


def cancel_run(args: argparse.Namespace, client: Client, out: Output) -> int:
    _print_run(out, client.cancel_run(args.id, reason=args.reason))
    return EXIT_OK


def retry_run(args: argparse.Namespace, client: Client, out: Output) -> int:
    _print_run(out, client.retry_run(args.id))
    return EXIT_OK


def list_events(args: argparse.Namespace, client: Client, out: Output) -> int:
    # Every page, or at most --limit events (a page of that size: the server checks it).
    events = list(
        client.list_events(
            args.id,
            after=args.after,
            attempt=args.attempt,
            page_size=args.limit or _EVENTS_PAGE,
            limit=args.limit if args.limit > 0 else None,
        )
    )
    if out.as_json:
        for event in events:
            out.json_line(event)
    else:
        show_events(out, events)
    return EXIT_OK


def watch_events(args: argparse.Namespace, client: Client, out: Output) -> int:
    state = watch_run(client, args.id, args.after, out)
    if state is None:  # nothing after --after: ask the run itself
        state = client.get_run(args.id).state
    code = WATCH_EXIT_CODES.get(S.RunState.ValueType(state))
    if code is None:
        name = enum_name(S.RunState, state, "RUN_STATE_")
        out.note(f"error: the event stream ended while the run is {name}")
        return EXIT_UNAVAILABLE
    return code


WATCH_EXIT_CODES = {S.RUN_STATE_COMPLETED: 0, S.RUN_STATE_FAILED: 1, S.RUN_STATE_CANCELLED: 2}


def _print_run(out: Output, run: runs_pb2.Run) -> None:
    if out.as_json:
        out.json_document(run)
    else:
        show_run(out, run)


def _what(run: runs_pb2.Run) -> str:
    if run.op_definition:
        return f"{run.op_definition}@{run.definition_version}"
    return run.image


def _attempt(run: runs_pb2.Run) -> str:
    """The current attempt and the automatic ones allowed (a forced retry may go past them)."""
    return f"{run.current_attempt} of {max(run.retry_policy.max_attempts, 1)}"


def show_run(out: Output, run: runs_pb2.Run) -> None:
    c = run.constraints
    needs = [
        f"{name} {value}"
        for name, value in (
            ("cpu", optional(c, "cpu")),
            ("ram_mb", optional(c, "ram_mb")),
            ("vram_mb", optional(c, "vram_mb")),
            ("gpu", optional(c, "gpu_id")),
        )
        if value != "-"
    ]
    summary = run.execution_summary
    pairs: list[tuple[str, Text | str]] = [
        ("id", run.id),
        ("state", state_text(run.state)),
        ("definition" if run.op_definition else "image", _what(run)),
    ]
    if run.op_definition:
        pairs.append(("image", run.image))
    pairs += [
        ("priority", str(run.priority)),
        ("progress", f"{run.progress}%"),
        ("attempt", _attempt(run)),
        ("inputs", compact(run.inputs)),
        ("outputs", compact(run.outputs)),
        ("needs", ", ".join(needs) or "-"),
        ("topic", run.event_delivery.topic or "-"),
        ("worker", summary.worker_id or "-"),
    ]
    if summary.error_message:
        pairs.append(("error", summary.error_message))
    if run.request_id:
        pairs.append(("request id", run.request_id))
    pairs += [
        ("created", when(run.created_at)),
        ("updated", when(run.updated_at)),
        ("last seq", str(run.last_seq)),
    ]
    if run.HasField("next_attempt_at") and run.state == S.RUN_STATE_PENDING:
        pairs.append(("next attempt", when(run.next_attempt_at)))
    out.fields(pairs)


def event_cells(event: runs_pb2.Event) -> tuple[str, str, str, str, Text, str, str]:
    progress = f"{event.progress}%" if event.HasField("progress") else ""
    return (
        str(event.seq),
        when(event.time),
        str(event.attempt),
        event_type_name(event.type),
        state_text(event.state),
        progress,
        event.msg,
    )


EVENT_COLUMNS = ("SEQ", "TIME", "ATTEMPT", "TYPE", "STATE", "PROGRESS", "MESSAGE")


def show_events(out: Output, events: Any) -> None:
    out.table(EVENT_COLUMNS, (event_cells(e) for e in events))


# -- the commands ------------------------------------------------------------------------------

# `runs list` and `runs count`: ListRuns' filters.
RUN_FILTERS = (
    flag("--state", choices=STATES, type=str.lower),
    flag("--definition", default="", metavar="NAME", help="runs of this definition"),
    flag("--image", default=""),
    flag("--topic", default=""),
    flag("--since", metavar="TIME", help="created at or after (RFC 3339)"),
    flag("--until", metavar="TIME", help="created before (RFC 3339)"),
)
_AD_HOC = "ad-hoc runs only (a definition sets these)"
RUNS = Group(
    "runs",
    "create, read, cancel, retry and watch runs",
    (
        Command(
            "create",
            "create a run from an image or an op definition",
            create_run,
            (
                flag("--image", one_of="what", help="an ad-hoc run of this container image"),
                flag(
                    "--definition",
                    one_of="what",
                    metavar="NAME",
                    help="a run of this op definition",
                ),
                flag(
                    "--version",
                    default="",
                    help="with --definition: this version (default: the latest)",
                ),
                flag(
                    "--input",
                    action="append",
                    default=[],
                    metavar="KEY=VALUE",
                    help="one input; repeat for more (VALUE as JSON when it parses, else a string)",
                ),
                flag("--inputs-file", metavar="FILE", help="a JSON object; '-' for stdin"),
                flag("--priority", type=int32, help="higher runs first (server default 5)"),
                flag("--request-id", default="", help="idempotency key"),
                flag("--cpu", group=_AD_HOC, type=int32, help="CPUs the run needs"),
                flag("--ram-mb", group=_AD_HOC, type=int32, help="RAM the run needs"),
                flag("--vram-mb", group=_AD_HOC, type=int32, help="GPU memory the run needs"),
                flag("--gpu-id", group=_AD_HOC, type=int32, help="pin the run to this GPU"),
                flag(
                    "--max-attempts",
                    group=_AD_HOC,
                    type=int32,
                    help="attempts allowed, the first included",
                ),
                flag("--initial-backoff", group=_AD_HOC, type=float, metavar="SECONDS"),
                flag("--backoff-multiplier", group=_AD_HOC, type=float),
                flag("--max-backoff", group=_AD_HOC, type=float, metavar="SECONDS"),
                flag(
                    "--topic",
                    group=_AD_HOC,
                    default="",
                    help="publish the run's events to this topic",
                ),
                flag(
                    "--attribute",
                    group=_AD_HOC,
                    action="append",
                    default=[],
                    metavar="KEY=VALUE",
                    help="attached to every event published to --topic",
                ),
                flag("-q", "--quiet", action="store_true", help="print only the run id"),
            ),
            "Create a PENDING run. Inputs come from --inputs-file (a JSON object; "
            "'-' reads stdin) and --input KEY=VALUE (VALUE is parsed as JSON when it is JSON, "
            "else taken as a string; --input wins over the file). Prints the run.",
        ),
        Command(
            "get",
            "show one run",
            get_run,
            (
                flag("id"),
                flag("--events", action="store_true", help="with the current attempt's events"),
            ),
        ),
        Command(
            "list",
            "list runs, newest first",
            list_runs,
            (
                *RUN_FILTERS,
                flag("--limit", type=int32, default=0, help="1..100 (server default 10)"),
                flag("--starting-after", default="", metavar="RUN_ID"),
                flag("--ending-before", default="", metavar="RUN_ID"),
            ),
            "List runs, newest first. Page on with --starting-after LAST_ID (the hint "
            "on stderr says when there is more), back with --ending-before FIRST_ID.",
        ),
        Command(
            "count",
            "count runs, per state unless --state is given",
            count_runs,
            RUN_FILTERS,
            "Count the runs that match the filters (those of `runs list`): a row per "
            "state and the total, or with --state that state's count.",
        ),
        Command(
            "cancel",
            "cancel a run that has not ended",
            cancel_run,
            (flag("id"), flag("--reason", default="", help="the CANCELLED event's message")),
        ),
        Command(
            "retry",
            "start a new attempt of an ended run (forced)",
            retry_run,
            (flag("id"),),
        ),
        Command(
            "events",
            "print a run's events (with --json: JSON Lines)",
            list_events,
            (
                flag("id"),
                flag("--after", type=int64, metavar="SEQ", help="only events after this seq"),
                flag("--attempt", type=int32, default=0, help="only this attempt's events"),
                flag("--limit", type=int32, default=0, help="at most this many (default all)"),
            ),
        ),
        Command(
            "watch",
            "follow a run until it ends; exit 0 COMPLETED, 1 FAILED, 2 CANCELLED",
            watch_events,
            (
                flag("id"),
                flag("--after", type=int64, metavar="SEQ", help="only events after this seq"),
            ),
            "Print the run's events as they happen (replaying those already there) "
            "with a progress bar on a terminal, until the run ends. With --json: one event per "
            "line (JSON Lines). Exits 0 when the run ended COMPLETED, 1 FAILED, 2 CANCELLED.",
        ),
    ),
)
