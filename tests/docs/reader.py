"""The pages of README.md and docs/ as data: fenced blocks, the steps marked in them, headings
and their anchors, links, tables; and the comparison of a page's answers with real ones.

A step is a `<!-- KIND: NAME ARGS -->` comment, the fenced block right after it (blank lines
skipped) and, when the next fenced block is ```json or ```text, what the page shows as the
answer. A block that no test can run says why in `<!-- not-run: REASON -->`.

Ids in an answer stand for the real ones: `Examples` maps each example UUID a page shows to the
real id found in its place, so later commands of the page run with the real id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHANGELOG = ROOT / "CHANGELOG.md"
# The address every page's commands use for the server (`gyoza-grpc serve`'s default).
EXAMPLE_TARGET = "127.0.0.1:50051"
# Values that differ on every run: present in the answer, never compared.
VOLATILE_KEYS = frozenset(
    {"created_at", "updated_at", "time", "duration_ms", "started_at", "finished_at", "peer"}
)

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!-- (?P<kind>[\w-]+): (?P<rest>.*?) -->$")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A time stamp as the CLI, the logs and proto JSON print it.
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:\d\d)?")


def pages() -> list[Path]:
    """README.md and every docs/*.md."""
    return [README, *sorted(DOCS.glob("*.md"))]


def name(path: Path) -> str:
    """The page's path from the repository's root, for messages."""
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int  # the opening fence's line, from 1
    end: int  # the index of the line after the closing fence


def blocks(lines: list[str]) -> list[Block]:
    """Every fenced block of a page, in order."""
    out = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        close = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert close is not None, f"line {i + 1}: a fenced block that never closes"
        out.append(Block(m[1], "\n".join(lines[i + 1 : close]), i + 1, close + 1))
        i = close + 1
    return out


def outside_blocks(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(index, line) of every line that is not inside a fenced block."""
    inside = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            inside = not inside if (line.strip() == "```" or not inside) else inside
            continue
        if not inside:
            yield i, line


@dataclass(frozen=True)
class Marker:
    kind: str
    rest: str  # what follows "KIND: ": a step's name and arguments, or a reason
    line: int  # from 1
    block: Block | None  # the fenced block right after it (blank lines skipped), if any


def markers(path: Path) -> list[Marker]:
    """Every `<!-- KIND: ... -->` comment of a page outside fenced blocks."""
    lines = path.read_text().splitlines()
    by_line = {b.line - 1: b for b in blocks(lines)}
    out = []
    for i, line in outside_blocks(lines):
        m = _MARKER.match(line)
        if m is None:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        out.append(Marker(m["kind"], m["rest"], i + 1, by_line.get(j)))
    return out


@dataclass(frozen=True)
class MarkedStep:
    name: str
    args: str  # what the marker says after the name
    command: str  # the block's body
    lang: str
    line: int  # the marker's line, from 1
    shown_lang: str = ""  # "json", "text", or "" when the page shows no answer
    shown: str | None = None


def marked_steps(
    kind: str, path: Path, *, langs: tuple[str, ...] = ("bash",), args: str = ""
) -> list[MarkedStep]:
    """Every `<!-- KIND: NAME ARGS -->` step of `path`, in order, each a block in one of
    `langs`. `args` is a regex for what may follow the name; a marker of this kind that does
    not match fails, so a typo cannot silently drop a step."""
    lines = path.read_text().splitlines()
    all_blocks = blocks(lines)
    pattern = re.compile(rf"(?P<name>[\w-]+)(?P<args>{args})")
    steps = []
    for marker in markers(path):
        if marker.kind != kind:
            continue
        where = f"{name(path)}:{marker.line}"
        m = pattern.fullmatch(marker.rest)
        assert m is not None, f"{where}: malformed marker {marker.rest!r}"
        block = marker.block
        assert block is not None and block.lang in langs, f"{where}: no {langs} block after"
        after = next((b for b in all_blocks if b.line > block.line), None)
        shown = None
        if after is not None and after.lang in ("json", "text"):
            between = lines[block.end : after.line - 1]
            if all(not line.strip() for line in between):  # the very next thing on the page
                shown = after
        steps.append(
            MarkedStep(
                m["name"],
                m["args"],
                block.body,
                block.lang,
                marker.line,
                shown.lang if shown else "",
                shown.body if shown else None,
            )
        )
    return steps


# -- answers ---------------------------------------------------------------------------------


@dataclass
class Examples:
    """The example values a page shows, each with the real value found in its place."""

    real: dict[str, str] = field(default_factory=dict)

    def add(self, example: str, real: str) -> None:
        known = self.real.setdefault(example, real)
        assert known == real, f"example {example} stands for both {known} and {real}"

    def substitute(self, text: str) -> str:
        for example in sorted(self.real, key=len, reverse=True):
            text = text.replace(example, self.real[example])
        return text

    def unknown_ids(self, text: str) -> list[str]:
        """The UUIDs of `text` that stand for nothing yet (after substitution)."""
        reals = set(self.real.values())
        return [u for u in UUID.findall(self.substitute(text)) if u not in reals]

    def match(self, shown: str, real: str, *, loose: bool = False) -> bool:
        """Whether `real` is `shown` with each example id in place of a real one (recorded when
        it matches); with `loose`, any run of blanks matches any other and times match any
        time (for the CLI's columns and log lines)."""
        if loose:
            shown, real = shown.strip(), real.strip()
        parts: list[str] = []
        groups: dict[str, str] = {}  # an example id -> its group in this pattern
        pos = 0
        tokens = UUID.pattern + (f"|{_TIME.pattern}" if loose else "")
        for m in re.finditer(tokens, shown):
            parts.append(_literal(shown[pos : m.start()], loose))
            token = m[0]
            if UUID.fullmatch(token):
                if token in self.real:
                    parts.append(re.escape(self.real[token]))
                elif token in groups:
                    parts.append(f"(?P={groups[token]})")
                else:
                    groups[token] = f"u{len(groups)}"
                    parts.append(f"(?P<{groups[token]}>{UUID.pattern})")
            else:
                parts.append(_TIME.pattern)
            pos = m.end()
        parts.append(_literal(shown[pos:], loose))
        found = re.fullmatch("".join(parts), real)
        if found is None:
            return False
        for example, group in groups.items():
            self.add(example, found[group])
        return True


def _literal(text: str, loose: bool) -> str:
    if not loose:
        return re.escape(text)
    return "".join(
        r"\s+" if piece.isspace() else re.escape(piece) for piece in re.split(r"(\s+)", text)
    )


def assert_contains(
    shown: Any,
    real: Any,
    examples: Examples,
    where: str = "",
    volatile: frozenset[str] = VOLATILE_KEYS,
) -> None:
    """Every field the page shows is in the real answer, with the value shown (the values of
    `volatile` keys only have to be there; example ids stand for real ones)."""
    if isinstance(shown, dict):
        assert isinstance(real, dict), f"{where}: the page shows an object, got {real!r}"
        for key, value in shown.items():
            assert key in real, f"{where}.{key}: shown on the page, missing from {real!r}"
            if key not in volatile:
                assert_contains(value, real[key], examples, f"{where}.{key}", volatile)
    elif isinstance(shown, list):
        assert isinstance(real, list) and len(real) == len(shown), f"{where}: {real!r}"
        for n, (s, r) in enumerate(zip(shown, real, strict=True)):
            assert_contains(s, r, examples, f"{where}[{n}]", volatile)
    elif isinstance(shown, str) and isinstance(real, str):
        assert examples.match(shown, real), f"{where}: the page shows {shown!r}, got {real!r}"
    else:
        assert shown == real, f"{where}: the page shows {shown!r}, the program answered {real!r}"


def assert_lines_in_order(
    shown: str, real: str, examples: Examples, *, loose: bool = False
) -> None:
    """Every line the page shows is a line of the real output, in the same order."""
    real_lines = iter(real.splitlines())
    for line in shown.splitlines():
        assert any(examples.match(line, r, loose=loose) for r in real_lines), (
            f"the page's line {line!r} is not in (or not in order in):\n{real}"
        )


# -- headings, anchors, links, tables ---------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without Markdown, lower case, punctuation
    dropped (but `-` and `_`), spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, numbered as GitHub numbers repeats (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in outside_blocks(path.read_text().splitlines()):
        m = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if m is None:
            continue
        base = slug(m[1])
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`[^`]*`")


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline Markdown link of a page, outside code."""
    out = []
    for i, line in outside_blocks(path.read_text().splitlines()):
        for m in _LINK.finditer(_CODE_SPAN.sub("", line)):
            out.append((i + 1, m[1]))
    return out


@dataclass(frozen=True)
class Table:
    marker: str  # what the marker before it says
    header: list[str]
    rows: list[list[str]]
    line: int


def marked_tables(path: Path, kind: str) -> list[Table]:
    """Every table right after a `<!-- KIND: ... -->` comment."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in outside_blocks(lines):
        m = _MARKER.match(line)
        if m is None or m["kind"] != kind:
            continue
        rows = []
        j = i + 1
        while j < len(lines) and lines[j].startswith("|"):
            rows.append(_cells(lines[j]))
            j += 1
        assert len(rows) >= 2, f"{name(path)}:{i + 1}: no table after the marker"
        out.append(Table(m["rest"], rows[0], rows[2:], i + 1))
    return out


def _cells(row: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", row.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def code_spans(cell: str) -> list[str]:
    """The `code` of a table cell, in order."""
    return [s[1:-1] for s in _CODE_SPAN.findall(cell)]
