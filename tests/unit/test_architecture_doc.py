"""The design lives in the repository: comments cite ``docs/architecture.md`` sections
that exist, and no design document or issue outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CITED = [
    *sorted((ROOT / "src").rglob("*.py")),
    *sorted((ROOT / "tests").rglob("*.py")),
    *sorted((ROOT / "benchmarks").rglob("*.py")),
    ROOT / "README.md",
    ROOT / "docker-compose.yml",
]
CITATION = re.compile(r"architecture\.md §(\d+)")
OUTSIDE = re.compile(r"DESIGN(\.md| §)|design card|\(issue \d+\)|\bissue \d+\b")


def _texts() -> dict[str, str]:
    return {str(path.relative_to(ROOT)): path.read_text() for path in CITED}


def test_every_cited_section_exists():
    # Given the sections of docs/architecture.md
    sections = set(re.findall(r"^## (\d+)\. ", ARCHITECTURE.read_text(), re.MULTILINE))
    # When the code, tests and README cite them
    cited = {(name, n) for name, text in _texts().items() for n in CITATION.findall(text)}
    # Then each cited section is there (and the page is cited at all)
    assert cited, "nothing cites docs/architecture.md"
    assert sorted((name, n) for name, n in cited if n not in sections) == []


def test_nothing_cites_a_document_outside_the_repository():
    # Given the code, tests and README; this file names the patterns, so it is left out
    texts = {
        name: text for name, text in _texts().items() if not name.endswith(Path(__file__).name)
    }
    # Then none cites a design document or an issue the repository does not have
    found = {name: OUTSIDE.findall(text) for name, text in texts.items()}
    assert {name: hits for name, hits in found.items() if hits} == {}
