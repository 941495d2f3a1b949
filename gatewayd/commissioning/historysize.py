"""How many days `history.max_bytes` holds, estimated from the configuration (check-config prints it).

Each tag's samples per day lie between two rates the configuration fixes:

- held still: a tag reported by exception stores one sample per `max_interval` (or per poll, when
  polled more slowly); an `every_read` tag one per poll;
- every read changes: every tag stores one sample per poll of its device (`poll_interval`).

A day's bytes are the samples times `store.keeping.BYTES_PER_SAMPLE` (measured by bench/bench_history.py).
Events are left out: they are few beside samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.config.model import Config
from store.history import DAY
from store.keeping import BYTES_PER_SAMPLE


@dataclass(frozen=True)
class HistorySize:
    tags: int
    samples_per_day_still: float
    samples_per_day_busy: float
    max_bytes: int
    keep_days: float

    @property
    def days_still(self) -> float:
        return self.max_bytes / max(self.samples_per_day_still * BYTES_PER_SAMPLE, 1e-9)

    @property
    def days_busy(self) -> float:
        return self.max_bytes / max(self.samples_per_day_busy * BYTES_PER_SAMPLE, 1e-9)

    def summary(self) -> str:
        """One line for check-config, and a caution when the bound holds fewer days than history.keep."""
        if self.keep_days == 0:
            return "history: off (history.keep 0)"
        line = (f"history: {_size(self.max_bytes)} (history.max_bytes) holds {self.days_still:,.1f} days at "
                f"{self.tags} tags while values hold still ({self.samples_per_day_still:,.0f} samples a day) and "
                f"{self.days_busy:,.1f} days if every read changes ({self.samples_per_day_busy:,.0f} a day), at "
                f"about {BYTES_PER_SAMPLE} bytes a sample; history.keep is {self.keep_days:g} days")
        if self.days_busy < self.keep_days:
            shortest = "even while values hold still" if self.days_still < self.keep_days else "if values move"
            line += f"\n  the bound is reached before history.keep {shortest}: the oldest days go early"
        return line


def _size(size: int) -> str:
    return f"{size / 2**30:.3g} GiB" if size >= 2**30 else f"{size / 2**20:.3g} MiB"


def history_size(config: Config) -> HistorySize:
    still = busy = 0.0
    for device in config.devices:
        for tag in device.tags:
            per_poll = DAY / device.poll_interval
            busy += per_poll
            still += per_poll if tag.report == "every_read" else DAY / max(tag.max_interval, device.poll_interval)
    return HistorySize(len(config.tags), still, busy, config.history.max_bytes, config.history.keep / DAY)
