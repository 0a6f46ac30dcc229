"""README.md's walkthroughs (or any Markdown file's) as test steps, shared by the tests that
run them for real.

A step is a `<!-- KIND: NAME ... -->` comment, the fenced ```bash block (or another language's)
right after it (blank lines skipped) and, if the next fenced block is ```json or ```text, what
the page shows as the answer. The README's commands use 127.0.0.1:50051 (README_TARGET) for the
server's address.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
README_TARGET = "127.0.0.1:50051"
# Values that differ on every run: the README's example values are not compared.
VOLATILE_KEYS = frozenset(
    {"created_at", "updated_at", "time", "duration_ms", "started_at", "finished_at"}
)
_FENCE = re.compile(r"^```(\w*)$")


@dataclass(frozen=True)
class MarkedStep:
    name: str
    args: str  # what the marker says after the name (e.g. " sets RUN=run.id")
    command: str
    line: int  # the marker's line in README.md, from 1
    shown_lang: str = ""  # "json", "text", or "" when the README shows no answer
    shown: str | None = None


def fenced(lines: list[str], i: int) -> tuple[str, str, int] | None:
    """The fenced block starting at line i (blank lines skipped): (lang, body, end), else None."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or (m := _FENCE.match(lines[i])) is None:
        return None
    end = lines.index("```", i + 1)
    return m[1], "\n".join(lines[i + 1 : end]), end + 1


def marked_steps(
    kind: str,
    args: str = "",
    text: str | None = None,
    *,
    path: Path = README,
    lang: str = "bash",
) -> list[MarkedStep]:
    """Every `<!-- KIND: NAME ARGS -->` step of `path` (README.md; or of `text`), in order,
    each a ```LANG block (```bash by default).

    `args` is a regex for what may follow the name; a marker of this kind that does not match
    fails, so a typo cannot silently drop a step.
    """
    marker = re.compile(rf"^<!-- {re.escape(kind)}: (?P<name>[\w-]+)(?P<args>{args}) -->$")
    lines = (path.read_text() if text is None else text).splitlines()
    steps = []
    for i, line in enumerate(lines):
        if not line.startswith(f"<!-- {kind}: "):
            continue
        m = marker.match(line)
        assert m is not None, f"{path.name}:{i + 1}: malformed marker {line!r}"
        block = fenced(lines, i + 1)
        assert block is not None and block[0] == lang, f"{path.name}:{i + 1}: no ```{lang} after"
        _, command, end = block
        shown = fenced(lines, end)
        if shown is not None and shown[0] in ("json", "text"):
            steps.append(MarkedStep(m["name"], m["args"], command, i + 1, shown[0], shown[1]))
        else:
            steps.append(MarkedStep(m["name"], m["args"], command, i + 1))
    return steps


def grpcurl_dir() -> str:
    """Where grpcurl is: beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        return str(beside.parent)
    found = shutil.which("grpcurl")
    if found is None:
        reason = "grpcurl not found beside sys.executable or on PATH (pip install '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return str(Path(found).parent)


def assert_contains(
    shown: Any, real: Any, where: str = "", volatile: frozenset[str] = VOLATILE_KEYS
) -> None:
    """Every field the README shows is in the real answer, with the value shown (the values of
    `volatile` keys only have to be there)."""
    if isinstance(shown, dict):
        assert isinstance(real, dict), f"{where}: README shows an object, got {real!r}"
        for key, value in shown.items():
            assert key in real, f"{where}.{key}: shown in README, missing from {real!r}"
            if key not in volatile:
                assert_contains(value, real[key], f"{where}.{key}", volatile)
    elif isinstance(shown, list):
        assert isinstance(real, list) and len(real) == len(shown), f"{where}: {real!r}"
        for n, (s, r) in enumerate(zip(shown, real, strict=True)):
            assert_contains(s, r, f"{where}[{n}]", volatile)
    else:
        assert shown == real, f"{where}: README shows {shown!r}, the server answered {real!r}"


def assert_lines_in_order(shown: str, real: str) -> None:
    """Every line the README shows is a line of the real answer, in the same order."""
    real_lines = iter(real.splitlines())
    for line in shown.splitlines():
        assert any(r == line for r in real_lines), f"README line {line!r} not in:\n{real}"
