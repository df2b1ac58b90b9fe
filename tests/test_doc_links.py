"""The documentation travels with the product: every link in README.md and docs/ resolves inside the clone.

A newcomer following README and docs/ must never land on a missing page or anchor, and
no page may send them to a path outside the clone, as a link or as plain text.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# [text](target) outside code spans and fences; images too.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(text: str, *, code: bool = False) -> str:
    """The page without fenced blocks and (unless *code*) inline code: links there are examples, not links."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line.replace("`", "") if code else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -N for repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(page.read_text("utf-8"), code=True).splitlines():  # a heading keeps its code's text
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = "".join(ch for ch in m.group(1).lower()
                       if ch in " -_" or unicodedata.category(ch)[0] in "LN").replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    # explicit <a id="..."> / <a name="..."> anchors count too
    anchors.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", page.read_text("utf-8")))
    return anchors


def _links(page: Path) -> list[str]:
    return LINK.findall(_prose(page.read_text("utf-8")))


def _broken(page: Path) -> list[str]:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: — not the clone's business
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target}: points outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: {dest.relative_to(ROOT)} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_clone(page):
    assert _broken(page) == []


def test_the_readme_links_into_docs():
    targets = {t.partition("#")[0] for t in _links(ROOT / "README.md")}
    for must in ("docs/architecture.md", "docs/trust-model.md", "docs/bundle-format.md", "docs/spec-reference.md"):
        assert must in targets, must


def _paths_out(page: Path) -> list[str]:
    """Relative paths written in a page's prose (link or text) that climb out of the clone."""
    found = re.findall(r"(?<![\w./])((?:\.\./)+[\w.-][\w./-]*)", _prose(page.read_text("utf-8")))
    return [p for p in found if ROOT not in (page.parent / p).resolve().parents]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_names_a_path_outside_the_clone(page):
    assert _paths_out(page) == []


def test_the_checker_finds_a_broken_link_and_a_missing_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top Part\n\n[ok](b.md#the-end) [code](b.md#what-verify-checks) [gone](c.md) [anchor](b.md#nowhere) "
                                   "[out](../x.md) `[code](d.md)`\n", "utf-8")
    (tmp_path / "b.md").write_text("## The end\n\n## What `verify` checks\n", "utf-8")
    assert _broken(tmp_path / "a.md") == [
        "c.md: c.md does not exist",
        "b.md#nowhere: no heading #nowhere in b.md",
        "../x.md: points outside the repository",
    ]
    (tmp_path / "c.md").write_text("See ../../elsewhere/DESIGN.md and ./b.md, `../../code/only`.\n", "utf-8")
    assert _paths_out(tmp_path / "c.md") == ["../../elsewhere/DESIGN.md"]
