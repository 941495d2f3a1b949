"""docs/security.md names a test for each defence: every `file::test` it names must exist, so the page cannot
promise a proof that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"\b((?:tests|hil_tests)/[\w/]+\.py)::(\w+)")


def test_every_test_the_security_page_names_exists():
    page = (ROOT / "docs" / "security.md").read_text()
    references = REFERENCE.findall(page)
    assert len(references) >= 40, "the page names a test for each defence"
    missing = [f"{file}::{name}" for file, name in references
               if not (ROOT / file).is_file()
               or not re.search(rf"^(async )?def {name}\(", (ROOT / file).read_text(), re.M)]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_the_readme_links_the_security_page():
    assert "(docs/security.md)" in (ROOT / "README.md").read_text()
