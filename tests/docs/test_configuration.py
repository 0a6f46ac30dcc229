"""docs/configuration.md against the code's one definition of the flags: the argparse parsers
`gyoza_grpc/cli/` builds. Every flag of every command is in the page's table for that command
and every flag there exists; each flag's environment variable is found by setting variables and
watching which default moves, and must be the one the page names; a default the page shows is
the parser's; and every environment variable the code names is on the page, and the other way
round.

The tables follow `<!-- config: COMMAND -->` comments: `gyoza-grpc` (the options before the
command), `serve`, `migrate`, `worker`, `gateway`, `client` (the flags every client command
shares), `runs create` and the other client commands, and `op-environment` (the variables a
worker sets for its ops).
"""

from __future__ import annotations

import argparse
import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gyoza_grpc.cli import build_parser
from gyoza_grpc.client_cli import CLIENT_COMMANDS
from tests.docs.reader import DOCS, ROOT, code_spans, marked_tables

PAGE = DOCS / "configuration.md"
TOP = "gyoza-grpc"  # the options given before the command
CLIENT = "client"  # the flags every client command shares
OP_ENVIRONMENT = "op-environment"
SOURCE = ROOT / "gyoza_grpc"
# Names the code spells like environment variables that are not variables.
NOT_VARIABLES = {"GYOZA_ERROR": "the ErrorInfo reason of a GyozaError (domain/errors.py)"}

Key = tuple[str, str]  # (command, the flag's longest option string)


def environment_names() -> set[str]:
    """Every string in gyoza_grpc/ that is an environment variable's name."""
    names = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if value == "DOCKER_HOST" or (
                    value.startswith("GYOZA_") and value.replace("_", "").isalnum()
                    and value.isupper()
                ):  # fmt: skip
                    names.add(value)
    return names - set(NOT_VARIABLES)


def commands(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, Any]]:
    """(command, parser) of the top level and of every command that takes no sub-command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not path or not subs:
        yield path or TOP, parser
    for action in subs:
        for word, sub in action.choices.items():
            yield from commands(sub, f"{path} {word}".strip())


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A parser's optional arguments by their longest option string (help left out)."""
    return {
        max(a.option_strings, key=len): a
        for a in parser._actions
        if a.option_strings
        and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    }


def defaults() -> dict[Key, object]:
    """Every flag's default as the parsers are built in the current environment."""
    return {
        (command, flag): action.default
        for command, parser in commands(build_parser())
        for flag, action in flags(parser).items()
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in list(os.environ):
        if var.startswith("GYOZA_") or var == "DOCKER_HOST":
            monkeypatch.delenv(var)
    return monkeypatch


def environment_of_flags(monkeypatch: pytest.MonkeyPatch) -> dict[Key, str]:
    """Which variable sets which flag's default: each variable the code names, set to 0 and
    then to 1, and the defaults that move with it."""
    base = defaults()
    found: dict[Key, str] = {}
    for var in sorted(environment_names()):
        for value in ("0", "1"):
            monkeypatch.setenv(var, value)
            moved = {k for k, v in defaults().items() if v != base[k]}
            monkeypatch.delenv(var)
            for key in moved:
                assert found.setdefault(key, var) == var, f"{key} moves with two variables"
    return found


@dataclass(frozen=True)
class Row:
    command: str
    flag: str  # the longest option string, or "" for a variable without a flag
    options: frozenset[str]
    env: str
    default: str  # the first `code` of the default's cell, or ""
    line: int


def documented() -> list[Row]:
    rows = []
    for table in marked_tables(PAGE, "config"):
        assert table.header[:3] == ["flag", "environment", "default"] or (
            table.marker == OP_ENVIRONMENT
        ), f"configuration.md:{table.line}: columns flag, environment, default"
        for cells in table.rows:
            options = frozenset(s.split()[0] for s in code_spans(cells[0]) if s.startswith("-"))
            envs = [s.split("=")[0] for s in code_spans(cells[1])]
            assert len(envs) <= 1, f"configuration.md:{table.line}: one variable a row: {cells}"
            spans = code_spans(cells[2])
            rows.append(
                Row(
                    table.marker,
                    max(options, key=len) if options else "",
                    options,
                    envs[0] if envs else "",
                    spans[0] if spans else "",
                    table.line,
                )
            )
    return rows


def in_table(command: str, flag: str, action: argparse.Action) -> str:
    """The row to add to the page, for the failure message."""
    return f"{command}: | `{flag}` | | `{action.default}` | {action.help} |"


def test_every_flag_is_on_the_page_and_every_row_is_a_flag(clean_env: pytest.MonkeyPatch) -> None:
    parsers = dict(commands(build_parser()))
    client = [c for c in parsers if c.split()[0] in CLIENT_COMMANDS]
    shared = set.intersection(*(set(flags(parsers[c])) for c in client))
    expected: dict[tuple[str, str], argparse.Action] = {}
    for command, parser in parsers.items():
        for flag, action in flags(parser).items():
            table = CLIENT if command in client and flag in shared else command
            expected.setdefault((table, flag), action)
    rows = [r for r in documented() if r.flag]
    on_page = {(r.command, r.flag) for r in rows}
    missing = [in_table(c, f, a) for (c, f), a in expected.items() if (c, f) not in on_page]
    extra = [
        f"configuration.md:{r.line}: {r.command} {r.flag}"
        for r in rows
        if (r.command, r.flag) not in expected
    ]
    assert not missing, "flags missing from docs/configuration.md:\n" + "\n".join(missing)
    assert not extra, "rows for flags the code does not have:\n" + "\n".join(extra)
    for row in rows:
        action = expected[(row.command, row.flag)]
        assert row.options == set(action.option_strings), (
            f"line {row.line}: {action.option_strings}"
        )
    assert len(on_page) == len(rows), "a flag twice in one command's tables"


def test_every_flags_variable_is_the_one_on_the_page(clean_env: pytest.MonkeyPatch) -> None:
    parsers = dict(commands(build_parser()))
    by_flag = environment_of_flags(clean_env)
    client = {c for c in parsers if c.split()[0] in CLIENT_COMMANDS}
    found = defaults()
    for row in documented():
        if not row.flag:
            continue
        commands_of_row = client if row.command == CLIENT else {row.command}
        for command in commands_of_row:
            if (command, row.flag) in found:
                want = by_flag.get((command, row.flag), "")
                assert row.env == want, (
                    f"configuration.md:{row.line}: {command} {row.flag} is set by "
                    f"{want or 'no variable'}, the page says {row.env or 'none'}"
                )


def test_every_variable_is_on_the_page(clean_env: pytest.MonkeyPatch) -> None:
    names = environment_names()
    on_page = {r.env for r in documented() if r.env}
    assert names - on_page == set(), "variables the code reads, missing from the page"
    assert on_page - names == set(), "variables on the page that the code does not name"
    # A variable without a flag is read by the command itself, not by its parser.
    by_flag = set(environment_of_flags(clean_env).values())
    for row in documented():
        if not row.flag and row.command != OP_ENVIRONMENT:
            assert row.env not in by_flag, f"line {row.line}: {row.env} sets a flag: name it"


def test_every_default_on_the_page_is_the_codes(clean_env: pytest.MonkeyPatch) -> None:
    found = defaults()
    parsers = dict(commands(build_parser()))
    client = [c for c in parsers if c.split()[0] in CLIENT_COMMANDS]
    for row in documented():
        if not row.flag:
            continue
        command = client[0] if row.command == CLIENT else row.command
        default = found[(command, row.flag)]
        if default is None or default == "" or isinstance(default, (bool, list)):
            continue  # "none", "off", "this machine's": said in words
        where = f"configuration.md:{row.line}: {row.command} {row.flag}"
        assert row.default, f"{where}: show the default, `{default}`"
        try:
            assert float(row.default) == float(str(default)), f"{where}: the code says {default}"
        except ValueError:
            assert row.default == str(default), f"{where}: the code says {default!r}"


def test_the_op_environment_is_what_the_worker_sets() -> None:
    names = {r.env for r in documented() if r.command == OP_ENVIRONMENT}
    worker = "\n".join(p.read_text() for p in (SOURCE / "worker").rglob("*.py"))
    assert names and all(f'"{n}"' in worker for n in names), "the worker sets each"
    contract = (DOCS / "workers.md").read_text()
    assert all(f"`{n}`" in contract for n in names), "the op contract names them too"
