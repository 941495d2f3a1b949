"""The point table: the current value of every tag, one row a tag, in preallocated numpy arrays.

Drivers write into it (it is their `SampleSink`); the scan loop reads it every tick. Everything runs
on the event loop thread, so writes need no lock. `gateway_ts` is the Unix time (gateway wall clock) of
each row's latest read, `updated` the same instant on the monotonic clock; a row never read carries the
time the table was made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from gatewayd.config.model import TagConfig
from gatewayd.types import QUALITY_BAD_MIN, Event, Quality


class PointTable:
    def __init__(self, tags: Sequence[TagConfig]):
        self.tags = tuple(tags)
        self.rows = {tag.name: row for row, tag in enumerate(self.tags)}
        size = len(self.tags)
        self.value = np.full(size, np.nan)
        self.quality = np.full(size, Quality.NO_VALUE, dtype=np.uint8)
        self.source_ts = np.full(size, np.nan)
        self.gateway_ts = np.full(size, time.time())
        # when each row was last written, on the monotonic clock: "is this reading new" must not
        # depend on a wall clock that can step back
        self.updated = np.full(size, -np.inf)
        # completed reads of each row (a write whose quality is not bad), for the data-quality figures
        self.reads = np.zeros(size, dtype=np.int64)
        self.pending_events: list[Event] = []
        self.changed = asyncio.Event()  # wakes the scan loop as soon as a poll brought data

    def __len__(self) -> int:
        return len(self.tags)

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.rows[name] for name in names), dtype=np.int64, count=len(names))

    def write(self, rows: np.ndarray, values: np.ndarray, quality: int | np.ndarray = Quality.GOOD,
              source_ts: float | np.ndarray | None = None, read_at: float | np.ndarray | None = None) -> None:
        self.value[rows] = values
        self.quality[rows] = quality
        self.source_ts[rows] = np.nan if source_ts is None else source_ts
        if np.ndim(quality):
            self.reads[rows] += np.asarray(quality) < QUALITY_BAD_MIN
        elif quality < QUALITY_BAD_MIN:
            self.reads[rows] += 1
        self._stamp(rows, read_at)

    def set_quality(self, rows: np.ndarray, quality: int, read_at: float | np.ndarray | None = None) -> None:
        """Keep the last value but mark it; counts as a new reading so the change is reported."""
        self.quality[rows] = quality
        self._stamp(rows, read_at)

    def _stamp(self, rows: np.ndarray, read_at: float | np.ndarray | None) -> None:
        """`updated` is the read time on the monotonic clock; `gateway_ts` the same instant on the wall
        clock, taken as now minus the read's age so that a wall-clock step since the read cannot skew it."""
        wall_now, mono_now = time.time(), time.monotonic()
        if read_at is None:
            self.updated[rows] = mono_now
            self.gateway_ts[rows] = wall_now
        else:
            self.updated[rows] = read_at
            self.gateway_ts[rows] = wall_now - (mono_now - np.asarray(read_at, dtype=np.float64))
        self.changed.set()

    def event(self, event: Event) -> None:
        self.pending_events.append(event)
        self.changed.set()

    def take_events(self) -> list[Event]:
        events, self.pending_events = self.pending_events, []
        return events
