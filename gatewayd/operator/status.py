"""The figures behind `gatewayd status` that are not counters: the uplink's recent rate, tags by quality,
alarms by priority, the data-quality flags. Pure functions of the live objects, called on the loop."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from gatewayd.operator.render import quality_name
from core.types import QUALITY_BAD_MIN

RATE_SAMPLE = 5.0  # seconds between uplink counter samples
RATE_WINDOW = 60.0  # seconds the uplink rate is averaged over


class RateWindow:
    """Uplink counters sampled every RATE_SAMPLE seconds; rates over the last RATE_WINDOW seconds."""

    FIELDS = ("acknowledged", "rows_acknowledged", "bytes_published")

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=int(RATE_WINDOW / RATE_SAMPLE) + 1)

    def add(self, now: float, stats: Any) -> None:
        self.samples.append((now, {name: float(getattr(stats, name)) for name in self.FIELDS}))

    def rates(self, now: float, stats: Any) -> dict[str, float] | None:
        """Per second since the oldest sample in the window; None before the first sample."""
        if not self.samples:
            return None
        then, figures = self.samples[0]
        seconds = now - then
        if seconds <= 0:
            return None
        return {f"{name}_per_second": (float(getattr(stats, name)) - figures[name]) / seconds
                for name in self.FIELDS} | {"window_seconds": seconds}


def tag_quality(table: Any) -> dict[str, Any]:
    """How many tags are good, uncertain (stale among them) and bad, each kind but good by reason."""
    quality = table.quality
    bad = quality[quality >= QUALITY_BAD_MIN]
    uncertain = quality[(quality > 0) & (quality < QUALITY_BAD_MIN)]
    return {"total": len(table), "good": int((quality == 0).sum()), "uncertain": int(uncertain.size),
            "bad": int(bad.size), "uncertain_by_reason": _by_reason(uncertain), "bad_by_reason": _by_reason(bad)}


def _by_reason(codes: np.ndarray) -> dict[str, int]:
    return {quality_name(code): count for code, count in sorted(Counter(codes.tolist()).items())}


def alarms_by_priority(states: Sequence[tuple[str, str, int]], levels: dict[str, int]) -> list[dict[str, Any]]:
    """(priority, ISA state, count) of the alarms outside NORM, grouped by priority, most urgent first."""
    grouped: dict[str, dict[str, int]] = {}
    for priority, state, count in states:
        grouped.setdefault(priority, {})[state] = count
    return [{"priority": priority, "total": sum(counts.values()), "states": counts}
            for priority, counts in sorted(grouped.items(), key=lambda item: -levels.get(item[0], 0))]


def data_quality_status(figures: dict[str, Any] | None, quality: Any) -> dict[str, Any] | None:
    """The data-quality figures per device (current period and since start) and the flagged tags."""
    if figures is None:
        return None
    return {**figures, "flagged": quality.flagged()}
