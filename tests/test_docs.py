"""The repository's own documents: code cites sections of docs/METHODS.md that exist, and the
documents link to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("vidgen", "timelapse", "tools", "tests") for p in sorted((ROOT / d).rglob("*.py"))]
CITE = re.compile(r"docs/METHODS\.md,?\s+(?:sections?\s+|§)?(\d+(?:\.\d+)?)(?:\s+and\s+(\d+(?:\.\d+)?))?")


def method_sections() -> set[str]:
    heads = re.findall(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", (ROOT / "docs/METHODS.md").read_text(), flags=re.M)
    return set(heads)


def test_methods_document_has_numbered_sections():
    sections = method_sections()
    assert {"1", "1.1", "2", "3", "4", "4.3", "8", "9", "13"} <= sections, sorted(sections)


def test_code_cites_methods_sections_that_exist():
    sections = method_sections()
    cited, missing = 0, []
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(r"(?<![/\w])METHODS\.md", text), f"{path}: cite docs/METHODS.md by its path"
        for m in CITE.finditer(text):
            for number in filter(None, m.groups()):
                cited += 1
                if number not in sections:
                    missing.append(f"{path.relative_to(ROOT)}: docs/METHODS.md {number}")
    assert cited > 50, cited  # the pattern still finds the citations
    assert not missing, missing


def test_documents_name_files_that_exist():
    """Markdown links and `path/in/the/repository` mentions in README.md and docs/*.md."""
    named, broken = 0, []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        links = [(doc.parent, t) for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in t]
        paths = [(ROOT, t.split(":")[0]) for t in re.findall(
            r"`((?:vidgen|timelapse|tools|configs|docs|tests|datasets)/[^`\s*{}<>\[\]|]+?)`", text)]
        for base, target in links + paths:
            named += 1
            if not (base / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert named > 50, named
    assert not broken, broken
