"""The README stays a front page: short, the two commands, links that lead somewhere."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_the_readme_is_a_front_page():
    assert len(README.splitlines()) <= 300  # everything else lives on the docs site (docs/, make docs)
    assert "make demo   # " in README and "make test   # " in README


def test_every_relative_link_of_the_readme_exists():
    links = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README) if "://" not in t]
    assert links, "the README links to its docs"
    missing = [t for t in links if not (REPO / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_every_docs_page_is_in_the_site_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    assert [p for p in pages if f": {p}" not in nav] == []
