"""Every relative link and anchor in README.md and docs/*.md leads somewhere: the file exists, and the anchor is a
heading of it as GitHub names headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img\s[^>]*src=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading (github-slugger): its text lowercased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The relative links and image sources of a page's prose (not of its code)."""
    prose = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    targets = [link or image for link, image in LINK.findall(prose)]
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("heading, anchor", [
    ("Inference (`benchmarks/inference.py`)", "inference-benchmarksinferencepy"),
    ("Training, evaluation, deployment", "training-evaluation-deployment"),
    ("The model zoo (`specs/`, `resdsl zoo`)", "the-model-zoo-specs-resdsl-zoo"),
    ("Whole processes (`python benchmarks/frontend.py --cli`)", "whole-processes-python-benchmarksfrontendpy---cli"),
])
def test_anchors_are_named_as_github_names_them(heading, anchor):
    assert github_anchor(heading) == anchor


def test_a_page_has_links_to_check():
    assert "docs/cli.md" in links(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with this anchor")
    assert broken == []
