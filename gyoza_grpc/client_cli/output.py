"""What the client commands print: rich tables for people, proto JSON for scripts.

On a terminal, tables have borders and colour; in a pipe (or with NO_COLOR) they are plain
space-aligned columns without ANSI codes, wide enough that nothing is cut. `--json` prints the
response as one proto3-JSON document; streams (`events`, `watch`) print JSON Lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gyoza.v1 import runs_pb2

# Width of a table printed into a pipe: wide enough that ids and messages are never cut.
_PIPE_WIDTH = 1000
_STATE_STYLE = {
    "PENDING": "yellow",
    "ASSIGNED": "cyan",
    "RUNNING": "blue",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
}


def make_console(file: Any = None) -> Console:
    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(
            file=file or sys.stdout,
            highlight=False,
            width=_PIPE_WIDTH,
            color_system=None,
            emoji=False,
        )
    return console


class Output:
    """Where a command prints, and how: a table or key/value list for people, or JSON."""

    def __init__(self, *, as_json: bool, console: Console | None = None) -> None:
        self.as_json = as_json
        self.console = console or make_console()

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def json_document(self, message: Message) -> None:
        doc = json_format.MessageToJson(
            message, indent=2, always_print_fields_with_no_presence=True
        )
        sys.stdout.write(doc + "\n")
        sys.stdout.flush()

    def json_line(self, message: Message) -> None:
        doc = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        sys.stdout.write(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
        sys.stdout.flush()

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Text | str]]) -> None:
        table = self._table()
        for name in columns:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
        self._print(table)

    def fields(self, pairs: Iterable[tuple[str, Text | str]]) -> None:
        """A key/value list: one record, read down."""
        table = self._table(show_header=False)
        table.add_column(style="bold" if self.interactive else None)
        table.add_column(overflow="fold")
        for key, value in pairs:
            table.add_row(Text(key), value if isinstance(value, Text) else Text(value))
        self._print(table)

    def _print(self, table: Table) -> None:
        if self.interactive:
            self.console.print(table)
            return
        with self.console.capture() as captured:  # rich pads cells: no trailing blanks in pipes
            self.console.print(table)
        lines = captured.get().splitlines()
        self.console.file.write("".join(line.rstrip() + "\n" for line in lines))
        self.console.file.flush()

    def note(self, text: str) -> None:
        """A hint for people (paging, what changed) that never goes into stdout's data."""
        print(text, file=sys.stderr)

    def _table(self, *, show_header: bool = True) -> Table:
        if self.interactive:
            return Table(box=box.SIMPLE_HEAD, show_header=show_header, header_style="bold")
        return Table(box=None, show_header=show_header, header_style=None, pad_edge=False)


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """RUN_STATE_PENDING -> PENDING; an unknown number prints as itself."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def state_text(value: int) -> Text:
    name = enum_name(runs_pb2.RunState, value, "RUN_STATE_")
    return Text(name, style=_STATE_STYLE.get(name, ""))


def event_type_name(value: int) -> str:
    return enum_name(runs_pb2.EventType, value, "EVENT_TYPE_")


def when(ts: timestamp_pb2.Timestamp) -> str:
    """A UTC time to the second, or '-' when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def compact(value: struct_pb2.Struct) -> str:
    """A Struct as one line of JSON ('-' when empty); whole numbers without '.0'."""
    if not value.fields:
        return "-"
    return json.dumps(plain(json_format.MessageToDict(value)), separators=(", ", ": "))


def plain(value: Any) -> Any:
    """A Struct carries numbers as doubles: show 3.0 as 3."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def optional(message: Message, field: str, fmt: str = "{}") -> str:
    return fmt.format(getattr(message, field)) if message.HasField(field) else "-"
