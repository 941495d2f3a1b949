"""`make test` collects tests/ and hil_tests/ in one pytest run, as rootdir-relative modules without
packages: two test files of the same name in both folders stop the whole run at collection."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_test_module_name_is_used_in_both_test_folders():
    unit = {path.name for path in (ROOT / "tests").glob("test_*.py")}
    hil = {path.name for path in (ROOT / "hil_tests").glob("test_*.py")}
    assert not unit & hil, f"rename one of each: {sorted(unit & hil)}"
