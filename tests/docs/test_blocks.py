"""Every fenced block with a language in README.md and docs/*.md is run by a test, or says why
it cannot be: a block is a step (`<!-- KIND: NAME -->` right before it, for a KIND some test
reads), the answer shown right after a step, or `<!-- not-run: REASON -->`. Blocks without a
language are diagrams and formulas."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.reader import ROOT, Block, blocks, markers, name, pages

# Each kind of step, and what runs it.
KINDS = {
    "ci": ".ci/run",
    "taste": "tests/docs/test_readme.py",
    "tutorial": "tests/docs/test_tutorial.py",
    "tutorial-workers": "tests/docs/test_tutorial_workers.py",
    "workers-docker": "tests/docs/test_workers_doc.py",
    "workers-sdk": "tests/docs/test_workers_doc.py",
    "production": "tests/docs/test_production.py",
    "deploy": "tests/docs/test_deploy_doc.py",
    "gateway": "tests/docs/test_gateway_doc.py",
    "dashboard": "tests/docs/test_gateway_doc.py",
    "cli": "tests/docs/test_cli_doc.py",
    "client-example": "tests/docs/test_client_doc.py",
}
TABLE_KINDS = {"config": "tests/docs/test_configuration.py"}  # markers of tables, not blocks
NOT_RUN = "not-run"
MAX_NOT_RUN = 3  # exceptions stay few


def covered(path: Path) -> tuple[set[int], list[str]]:
    """The lines of the blocks a marker covers (the block after it, and the answer right after
    that), and the problems found on the way."""
    lines = path.read_text().splitlines()
    all_blocks = blocks(lines)
    done: set[int] = set()
    problems = []
    for marker in markers(path):
        where = f"{name(path)}:{marker.line}"
        if marker.kind in TABLE_KINDS:
            continue
        if marker.kind != NOT_RUN and marker.kind not in KINDS:
            problems.append(f"{where}: no test reads steps of kind {marker.kind!r}")
        if marker.kind == NOT_RUN and len(marker.rest.split()) < 4:
            problems.append(f"{where}: say why the block cannot be run")
        if marker.block is None:
            problems.append(f"{where}: a marker with no block after it")
            continue
        done.add(marker.block.line)
        after = answer_after(marker.block, all_blocks, lines)
        if after is not None:
            done.add(after.line)
    return done, problems


def answer_after(block: Block, all_blocks: list[Block], lines: list[str]) -> Block | None:
    """The ```json or ```text block right after `block` (only blank lines between)."""
    after = next((b for b in all_blocks if b.line > block.line), None)
    if after is None or after.lang not in ("json", "text"):
        return None
    if any(line.strip() for line in lines[block.end : after.line - 1]):
        return None
    return after


@pytest.mark.parametrize("path", pages(), ids=name)
def test_every_block_is_run_or_says_why_not(path: Path) -> None:
    done, problems = covered(path)
    for block in blocks(path.read_text().splitlines()):
        if block.lang and block.line not in done:
            problems.append(
                f"{name(path)}:{block.line}: a ```{block.lang} block no test runs: mark it as "
                "a step of a test (docs/development.md), or <!-- not-run: REASON -->"
            )
    assert not problems, "\n".join(problems)


def test_every_kind_is_used_and_read() -> None:
    used = {m.kind for path in pages() for m in markers(path)}
    for kind, reader in {**KINDS, **TABLE_KINDS}.items():
        assert kind in used, f"no page has steps of kind {kind!r}: drop it from KINDS"
        source = (ROOT / reader).read_text()
        assert f'"{kind}"' in source or kind == "ci", f"{reader} does not read {kind!r} steps"


def test_the_kinds_are_documented_for_contributors() -> None:
    guide = (ROOT / "docs" / "development.md").read_text()
    missing = [kind for kind in KINDS if f"`{kind}`" not in guide]
    assert not missing, f"docs/development.md's table of kinds lacks {missing}"


def test_few_blocks_are_not_run() -> None:
    not_run = [
        f"{name(path)}:{m.line}: {m.rest}"
        for path in pages()
        for m in markers(path)
        if m.kind == NOT_RUN
    ]
    assert len(not_run) <= MAX_NOT_RUN, "\n".join(not_run)
