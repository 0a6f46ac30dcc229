"""Every relative link of README.md, CHANGELOG.md and docs/*.md leads somewhere: the file or
folder exists in the repository, and an `#anchor` is a heading of the page it names (as GitHub
makes anchors: lower case, punctuation dropped, spaces as hyphens, repeats numbered)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.docs.reader import CHANGELOG, ROOT, anchors, links, name, pages, slug


@pytest.mark.parametrize("page", [*pages(), CHANGELOG], ids=name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for line, target in links(page):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:  # http(s), mailto: not checked here
            continue
        path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        where = f"{name(page)}:{line}: {target}"
        if not path.exists() or ROOT not in (path, *path.parents):
            broken.append(f"{where}: no such file in the repository")
        elif parts.fragment:
            if path.suffix != ".md":
                broken.append(f"{where}: an anchor into a page that is not Markdown")
            elif parts.fragment not in anchors(path):
                broken.append(f"{where}: {name(path)} has no heading with that anchor")
    assert not broken, "\n".join(broken)


def test_anchors_are_made_as_github_makes_them() -> None:
    assert slug("The op contract") == "the-op-contract"
    assert slug("Containers: a docker worker") == "containers-a-docker-worker"
    assert slug("`gyoza-grpc serve`") == "gyoza-grpc-serve"
    assert slug("A worker's calls") == "a-workers-calls"
    assert slug("Load balancing: per RPC, not per connection") == (
        "load-balancing-per-rpc-not-per-connection"
    )
    assert slug("The dashboard with 100,000 runs") == "the-dashboard-with-100000-runs"
    assert slug("Breaking changes (CI refuses them)") == "breaking-changes-ci-refuses-them"
    assert slug("Keys, TLS and [reflection](x.md)") == "keys-tls-and-reflection"


def test_the_pages_have_links_to_check() -> None:
    assert len([t for page in pages() for _, t in links(page)]) > 40
