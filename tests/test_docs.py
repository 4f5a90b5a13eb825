"""The documentation stands alone: every ``docs/*.md`` page that the code, the README or another
page points to exists, each page is reachable from the README, and no text cites a document that
ships outside the project."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# every place users read: the package's docstrings, apps, benchmarks, configs, README, docs
SOURCES = [
    *ROOT.glob("medcl/**/*.py"),
    *ROOT.glob("apps/**/*.py"),
    *ROOT.glob("benchmarks/*.py"),
    *ROOT.glob("configs/**/*.yaml"),
    ROOT / "README.md",
    *DOCS.glob("*.md"),
]
DOC_REF = re.compile(r"docs/([\w-]+\.md)|\]\(([\w-]+\.md)\)")
BUNDLE_CARD = "README.md"  # docs/README.md is the model card inside an exported MONAI bundle


def _referenced(path: Path) -> set[str]:
    found = {a or b for a, b in DOC_REF.findall(path.read_text(encoding="utf-8"))}
    return found - {BUNDLE_CARD}


def test_every_cited_page_exists() -> None:
    missing = {
        f"{path.relative_to(ROOT)} → docs/{name}"
        for path in SOURCES
        for name in _referenced(path)
        if not (DOCS / name).is_file()
    }
    assert not missing, sorted(missing)


def test_every_page_is_linked_from_the_readme() -> None:
    pages = {p.name for p in DOCS.glob("*.md")}
    assert {"objectives.md", "comparing.md", "scale.md"} <= pages
    assert pages <= _referenced(ROOT / "README.md")


def test_no_citation_of_an_outside_guide() -> None:
    cites = re.compile(r"\bGUIDE\b")
    offenders = [
        str(path.relative_to(ROOT))
        for path in [*SOURCES, *ROOT.glob("tests/**/*.py")]
        if path != Path(__file__).resolve() and cites.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, offenders
