"""The client commands as tables: a command is one row (its name, help, flags and handler),
and `add_group` makes the argparse sub-commands of a table.

A new command is then a row and its handler, never parser code; flags that several commands
share (the run filters of `runs list` and `runs count`) are one tuple that their rows take.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gyoza_grpc.client import Client
    from gyoza_grpc.client_cli.output import Output

# A command's code: the parsed flags, a connected client, where to print; the exit code.
Handler = Callable[[argparse.Namespace, "Client", "Output"], int]


@dataclass(frozen=True, slots=True)
class Flag:
    """One `add_argument(*names, **options)`; `group` puts it under a titled group of the
    help, `one_of` in a required group of flags of which exactly one is given."""

    names: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    group: str = ""
    one_of: str = ""


def flag(*names: str, group: str = "", one_of: str = "", **options: Any) -> Flag:
    return Flag(names, options, group, one_of)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    handler: Handler
    flags: tuple[Flag, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    """A top-level client command (`runs`) and its sub-commands."""

    name: str
    help: str
    commands: tuple[Command, ...]


def add_group(sub: Any, group: Group, common: argparse.ArgumentParser, parser_class: type) -> None:
    """`group` and its commands under the top-level sub-parsers; each command's parser takes
    the `common` flags and runs its handler (`args.client_handler`)."""
    parser = sub.add_parser(group.name, help=group.help)
    cmds = parser.add_subparsers(
        dest=f"{group.name}_command", required=True, parser_class=parser_class
    )
    for command in group.commands:
        options: dict[str, Any] = {"parents": [common], "help": command.help}
        if command.description:
            options["description"] = command.description
        cmd = cmds.add_parser(command.name, **options)
        sections: dict[tuple[str, str], Any] = {}
        for f in command.flags:
            target: Any = cmd
            if f.one_of:
                key = ("one_of", f.one_of)
                if key not in sections:
                    sections[key] = cmd.add_mutually_exclusive_group(required=True)
                target = sections[key]
            elif f.group:
                key = ("group", f.group)
                if key not in sections:
                    sections[key] = cmd.add_argument_group(f.group)
                target = sections[key]
            target.add_argument(*f.names, **f.options)
        cmd.set_defaults(client_handler=command.handler)
