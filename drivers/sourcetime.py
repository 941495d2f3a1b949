"""A payload's source time as Unix seconds, in the one format its configuration names.

- `s`: seconds since 1970-01-01 UTC, a JSON number (integer or fraction);
- `ms`: milliseconds since then, a JSON number;
- `iso8601`: a string such as `2026-12-01T18:30:00.250Z` or `...+08:00`; the offset is required,
  since a local time without one cannot be placed (a sensor's zone is not the gateway's).

The format is configured, never guessed: a guess between seconds and milliseconds is wrong by a
factor of 1000 on some payloads. Valid times lie in [1970-01-01, 10000-01-01): a negative epoch or
a year past 9999 is a broken clock, not a time. Strings of digits, booleans and NaN are refused.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

FORMATS = ("s", "ms", "iso8601")
LATEST = 253402300800.0  # 10000-01-01T00:00:00Z: the first second no format here can name


class BadTimestamp(ValueError):
    """The field is not a time in the configured format; the message says what it is."""


def source_time(raw: Any, fmt: str) -> float:
    """Unix seconds for `raw` in format `fmt`; BadTimestamp if it is not one."""
    if fmt == "iso8601":
        seconds = _iso(raw)
    else:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise BadTimestamp(f"expected a number of {'milliseconds' if fmt == 'ms' else 'seconds'}, "
                               f"got {_short(raw)}")
        seconds = float(raw) / 1000.0 if fmt == "ms" else float(raw)
    if not (0.0 <= seconds < LATEST):  # also refuses NaN
        raise BadTimestamp(f"{_short(raw)} is outside 1970-01-01..9999-12-31")
    return seconds


def _iso(raw: Any) -> float:
    if not isinstance(raw, str):
        raise BadTimestamp(f"expected an ISO 8601 string, got {_short(raw)}")
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadTimestamp(f"{_short(raw)} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise BadTimestamp(f"{_short(raw)} has no UTC offset (add Z or +hh:mm)")
    try:
        seconds = moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise BadTimestamp(f"{_short(raw)} is outside 1970-01-01..9999-12-31") from None
    return seconds if math.isfinite(seconds) else math.nan


def _short(raw: Any) -> str:
    text = repr(raw)
    return f"{type(raw).__name__} {text if len(text) <= 40 else text[:40] + '...'}"
