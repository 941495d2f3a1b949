"""Fixtures shared by the unit tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from scanplant import FakeClock

import gatewayd.values.points
import gatewayd.values.scan


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The point table and the scan read this clock instead of the system's."""
    fake = FakeClock()
    monkeypatch.setattr(gatewayd.values.points, "time", fake)
    monkeypatch.setattr(gatewayd.values.scan, "time", fake)
    return fake


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A directory others may traverse (tmp_path is 0700), so permission tests test the socket's own."""
    top = Path(tempfile.mkdtemp(prefix="gatewayd-control-"))
    top.chmod(0o755)
    yield top / "run"
    for path in sorted(top.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    top.rmdir()
