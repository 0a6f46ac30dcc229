"""`runs watch`: the event stream as lines, a live progress bar on a terminal, JSON Lines."""

from __future__ import annotations

from contextlib import ExitStack

from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text

from gyoza.v1 import runs_pb2
from gyoza_grpc.client import Client
from gyoza_grpc.client_cli.output import Output, enum_name, event_type_name, when

S = runs_pb2


def event_line(event: runs_pb2.Event) -> Text:
    """One event as one line: `seq time #attempt TYPE STATE [progress] msg`."""
    state = enum_name(S.RunState, event.state, "RUN_STATE_")
    progress = f" {event.progress}%" if event.HasField("progress") else ""
    return Text(
        f"{event.seq:>4}  {when(event.time)}  #{event.attempt}  "
        f"{event_type_name(event.type):<9} {state:<9}{progress}  {event.msg}".rstrip()
    )


class _Bar:
    """The run's progress: PROGRESS events move it, a new attempt starts it over."""

    def __init__(self, progress: Progress, run_id: str) -> None:
        self._progress = progress
        self._run_id = run_id
        self._attempt = 0
        self._task: TaskID = progress.add_task(run_id, total=100)

    def show(self, event: runs_pb2.Event) -> None:
        self._progress.console.print(event_line(event))
        done: int | None = None
        if event.attempt != self._attempt or event.type == S.EVENT_TYPE_RETRIED:
            self._attempt = event.attempt
            done = 0
        if event.HasField("progress"):
            done = event.progress
        if event.state == S.RUN_STATE_COMPLETED:
            done = 100
        state = enum_name(S.RunState, event.state, "RUN_STATE_")
        description = f"{self._run_id} #{event.attempt} {state}"
        self._progress.update(self._task, completed=done, description=description, refresh=True)


def watch_run(client: Client, run_id: str, after: int | None, out: Output) -> int | None:
    """Print the run's events until the run ends; the state after the last one (None: none).

    The stream has no deadline, and resumes by itself after a dropped connection or a server
    restart (the client's watch_retry); Ctrl-C cancels it and propagates as KeyboardInterrupt.
    """
    state: int | None = None
    with ExitStack() as stack:
        bar: _Bar | None = None
        if not out.as_json and out.interactive:
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                console=out.console,
            )
            stack.enter_context(progress)
            bar = _Bar(progress, run_id)
        for event in client.watch_events(run_id, after=after):
            state = event.state
            if out.as_json:
                out.json_line(event)
            elif bar is not None:
                bar.show(event)
            else:
                out.console.print(event_line(event))
    return state
