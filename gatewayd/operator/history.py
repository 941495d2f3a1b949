"""`gatewayd history`: times as people write them, and a tag's samples as lines or CSV.

    parse_time("2026-12-01T08:00+08:00")   # ISO 8601; without an offset, the machine's local time
    parse_time("1764547200")               # Unix seconds
    write_samples(history.samples(...), sys.stdout, csv_format=True)
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, UTC
from typing import TextIO

from core.types import quality_name
from store import TagHistory


def parse_time(text: str) -> float:
    """Unix seconds of an epoch number or an ISO 8601 date-time; ValueError naming both forms otherwise."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = datetime.fromisoformat(text.strip()).timestamp()  # naive: local time
        except ValueError:
            raise ValueError(f"{text!r} is not a time: give ISO 8601 (2026-12-01T08:00, 2026-12-01T08:00:00+08:00, "
                             "2026-12-01T00:00Z) or Unix seconds (1764547200)") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a time")
    return seconds


def iso(ts: float) -> str:
    """UTC ISO 8601 to the millisecond, e.g. 2026-12-01T08:00:00.500Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_samples(samples: TagHistory, out: TextIO, csv_format: bool) -> None:
    """One line per sample: time, value (empty in CSV, `-` in text, when there is none) and quality."""
    rows = zip(samples.ts.tolist(), samples.value.tolist(), samples.quality.tolist())
    if csv_format:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time", "epoch", "value", "quality", "quality_name"])
        writer.writerows([iso(ts), f"{ts:.3f}", "" if value != value else repr(value), quality, quality_name(quality)]
                         for ts, value, quality in rows)
        return
    for ts, value, quality in rows:
        out.write(f"{iso(ts)}  {'-' if value != value else format(value, 'g'):>14}  {quality_name(quality)}\n")
