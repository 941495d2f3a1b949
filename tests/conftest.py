"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from scanplant import FakeClock

import gatewayd.points
import gatewayd.scan


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The point table and the scan read this clock instead of the system's."""
    fake = FakeClock()
    monkeypatch.setattr(gatewayd.points, "time", fake)
    monkeypatch.setattr(gatewayd.scan, "time", fake)
    return fake
