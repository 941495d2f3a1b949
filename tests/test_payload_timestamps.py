"""Source times of payloads: epoch seconds, milliseconds and ISO 8601, at the edges of what is valid."""

from __future__ import annotations

import math

import pytest

from drivers.sourcetime import LATEST, BadTimestamp, source_time


@pytest.mark.parametrize("raw, fmt, expected", [
    (0, "s", 0.0), (1764613800, "s", 1764613800.0), (1764613800.25, "s", 1764613800.25),
    (LATEST - 1, "s", LATEST - 1), (0, "ms", 0.0), (1764613800250, "ms", 1764613800.25),
    (LATEST * 1000 - 1, "ms", LATEST - 0.001),
    ("2026-12-01T18:30:00Z", "iso8601", 1796149800.0), ("2026-12-01T18:30:00.250Z", "iso8601", 1796149800.25),
    ("2026-12-02T02:30:00+08:00", "iso8601", 1796149800.0), ("1970-01-01T00:00:00+00:00", "iso8601", 0.0),
    (" 2026-12-01 18:30:00Z ", "iso8601", 1796149800.0), ("9999-12-31T23:59:59Z", "iso8601", LATEST - 1),
])
def test_valid_times(raw, fmt, expected):
    assert source_time(raw, fmt) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("raw, fmt", [
    (-1, "s"), (-0.001, "s"), (LATEST, "s"), (1e300, "s"), (math.nan, "s"), (math.inf, "s"), (True, "s"),
    ("1764613800", "s"), (None, "s"), ([1], "s"), (-1, "ms"), (LATEST * 1000, "ms"), ("5", "ms"),
    ("2026-12-01T18:30:00", "iso8601"),  # no offset: whose local time?
    ("1969-12-31T23:59:59Z", "iso8601"), ("yesterday", "iso8601"), (1764613800, "iso8601"), ("", "iso8601"),
    ("2026-13-01T00:00:00Z", "iso8601"),
])
def test_invalid_times_are_refused(raw, fmt):
    with pytest.raises(BadTimestamp):
        source_time(raw, fmt)
