"""Every citation of the project's own documents resolves inside the repository, and none points outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*REPO.joinpath("ntkdist").rglob("*.py"), *REPO.joinpath("flows").rglob("*.py"),
                  *REPO.joinpath("tests").rglob("*.py"), *REPO.joinpath("bench").rglob("*.py")])
# "docs/theory.md §5.2", "docs/theory.md §2.2 and §2.6", "docs/theory.md §1.1, §3.2"
CITATION = re.compile(r"(docs/[\w.-]+\.md)((?:(?:,|\s+and)?\s*§\d+(?:\.\d+)?)*)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")
OUTSIDE = ("REFERENCE.md", "DESIGN.md", "../shared")


def citations(text: str):
    for match in CITATION.finditer(text):
        yield match.group(1), SECTION.findall(match.group(2))


def headings(path: Path) -> set[str]:
    """Section numbers of a markdown file's numbered headings ("## 5. …", "### 5.2 …")."""
    found = set()
    for line in path.read_text().splitlines():
        heading = re.match(r"#{2,4}\s+(\d+(?:\.\d+)?)\.?\s", line)
        if heading:
            found.add(heading.group(1))
    return found


def test_the_citation_reader_sees_sections_and_lists():
    assert list(citations("see docs/theory.md §2.2 and §2.6; docs/solvers.md")) == [
        ("docs/theory.md", ["2.2", "2.6"]), ("docs/solvers.md", [])]
    assert list(citations("(docs/theory.md §1.1, §3.2; stax)")) == [("docs/theory.md", ["1.1", "3.2"])]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_cited_document_and_section_exists(source):
    text = source.read_text()
    for document, sections in citations(text):
        path = REPO / document
        assert path.is_file(), f"{source.relative_to(REPO)} cites {document}, which is not in the repository"
        missing = set(sections) - headings(path)
        assert not missing, f"{source.relative_to(REPO)} cites {document} §{', §'.join(sorted(missing))}: no such section"
    if source.name != "test_citations.py":
        for outside in OUTSIDE:
            assert outside not in text, f"{source.relative_to(REPO)} points outside the repository ({outside})"


def test_the_theory_notes_are_cited_by_the_math_rooms():
    cited = {p for p in SOURCES if "docs/theory.md" in p.read_text() and "ntkdist" in p.parts}
    for room in ("kernels", "theory", "linalg"):
        assert any(room in p.parts for p in cited), f"no module of ntkdist/{room} cites docs/theory.md"
