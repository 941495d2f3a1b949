"""The point table: the current value of every tag, one row a tag, in preallocated numpy arrays.

Drivers write into it (it is their `SampleSink`); the scan loop reads it every tick. Everything runs
on the event loop thread, so writes need no lock. `gateway_ts` is the Unix time (gateway wall clock) of
each row's latest read, `updated` the same instant on the monotonic clock; a row never read carries the
time the table was made (its NO_VALUE is reported once, with that time).

Staleness lives here too: the scan calls `mark_stale` every tick, which turns a row whose value was
not refreshed within its tag's `stale_after` STALE (uncertain, the value kept); the next read clears
it. Rows of `report: every_read` tags also go to the read log (gatewayd.values.readlog) on every write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from gatewayd.config.model import TagConfig
from gatewayd.values.readlog import ReadLog
from core.types import QUALITY_BAD_MIN, Event, Quality


class PointTable:
    def __init__(self, tags: Sequence[TagConfig]):
        self.tags = tuple(tags)
        self.rows = {tag.name: row for row, tag in enumerate(self.tags)}
        size = len(self.tags)
        self.value = np.full(size, np.nan)
        self.quality = np.full(size, Quality.NO_VALUE, dtype=np.uint8)
        self.source_ts = np.full(size, np.nan)
        self.gateway_ts = np.full(size, time.time())
        # when each row was last read, on the monotonic clock: "is this reading new" and "is it stale"
        # must not depend on a wall clock that can step back
        self.updated = np.full(size, time.monotonic())  # "NO_VALUE" was learnt when the table was made
        # completed reads of each row (a write whose quality is not bad, or a confirmation), for the
        # data-quality figures
        self.reads = np.zeros(size, dtype=np.int64)
        self.configured_stale_after = np.array([tag.stale_after for tag in self.tags], dtype=np.float64)
        self.stale_after = self.configured_stale_after.copy()  # widened where a device asked (widen_stale_after)
        self.held_quality = np.zeros(size, dtype=np.uint8)  # a STALE row's quality before it went stale
        self.stale_due = np.inf  # monotonic time the next row turns STALE if nothing refreshes it
        self.every_read = np.array([tag.report == "every_read" for tag in self.tags], dtype=np.bool_)
        self.read_log = ReadLog() if self.every_read.any() else None
        self._every_row_every_read = bool(self.every_read.all())  # a write logs all its rows, unmasked
        self.pending_events: list[Event] = []
        self.changed = asyncio.Event()  # wakes the scan loop as soon as a poll brought data

    def __len__(self) -> int:
        return len(self.tags)

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.rows[name] for name in names), dtype=np.int64, count=len(names))

    def write(self, rows: np.ndarray, values: np.ndarray, quality: int | np.ndarray = Quality.GOOD,
              source_ts: float | np.ndarray | None = None, read_at: float | np.ndarray | None = None) -> None:
        source_ts = np.nan if source_ts is None else source_ts
        self.value[rows] = values
        self.quality[rows] = quality
        self.source_ts[rows] = source_ts
        if not isinstance(quality, (int, np.integer)):  # a code per row
            self.reads[rows] += np.asarray(quality) < QUALITY_BAD_MIN
        elif quality < QUALITY_BAD_MIN:
            self.reads[rows] += 1
        stamp = self._stamp(rows, read_at)
        if self.read_log is not None:
            keep = None if self._every_row_every_read else self.every_read[rows]
            self._log(rows, values, quality, source_ts, stamp, keep)

    def set_quality(self, rows: np.ndarray, quality: int, read_at: float | np.ndarray | None = None) -> None:
        """Keep the last value but mark it; counts as a new reading so the change is reported (an
        every_read row logs it only when its quality changes: a retry is not a read)."""
        changed = self.quality[rows] != quality if self.read_log is not None else None
        self.quality[rows] = quality
        stamp = self._stamp(rows, read_at)
        if changed is not None:
            self._log(rows, self.value[rows], quality, self.source_ts[rows], stamp, changed & self.every_read[rows])

    def confirm(self, rows: np.ndarray, read_at: float | None = None) -> None:
        """The device confirmed that these rows still hold the values last sent (an OPC UA publish,
        data or keep-alive): they count as read at `read_at`, and a STALE one gets its quality back.
        Rows with a bad quality wait for a real value; a row read after `read_at` keeps its later time."""
        rows = np.asarray(rows)
        rows = rows[(self.quality[rows] < QUALITY_BAD_MIN) & (read_at is None or self.updated[rows] < read_at)]
        self.reads[rows] += 1
        stale = self.quality[rows] == Quality.STALE
        self.quality[rows[stale]] = self.held_quality[rows[stale]]
        stamp = self._stamp(rows, read_at)
        if self.read_log is not None:
            self._log(rows, self.value[rows], self.quality[rows], self.source_ts[rows], stamp,
                      stale & self.every_read[rows])

    def widen_stale_after(self, rows: np.ndarray, seconds: float) -> None:
        """See SampleSink.widen_stale_after: the configured value or `seconds`, whichever is longer."""
        self.stale_after[rows] = np.maximum(self.configured_stale_after[rows], seconds)

    def mark_stale(self, now: float) -> int:
        """Turn STALE every row with a live quality not refreshed within its `stale_after` by `now`
        (monotonic), stamped with the moment it became stale: its read time plus stale_after. Returns
        how many; sets `stale_due` to when the next one will, if nothing refreshes it."""
        watched = (self.quality < QUALITY_BAD_MIN) & (self.quality != Quality.STALE)
        deadline = self.updated + self.stale_after
        due = watched & (deadline < now)
        waiting = deadline[watched & ~due]
        self.stale_due = float(waiting.min()) if waiting.size else np.inf
        if not due.any():
            return 0
        rows = np.flatnonzero(due)
        self.held_quality[rows] = self.quality[rows]
        self.quality[rows] = Quality.STALE
        self.updated[rows] = deadline[rows]
        self.gateway_ts[rows] += self.stale_after[rows]
        if self.read_log is not None:
            self._log(rows, self.value[rows], Quality.STALE, self.source_ts[rows], self.gateway_ts[rows],
                      self.every_read[rows])
        return rows.size

    def _stamp(self, rows: np.ndarray, read_at: float | np.ndarray | None) -> float | np.ndarray:
        """`updated` is the read time on the monotonic clock; `gateway_ts` the same instant on the wall
        clock, taken as now minus the read's age so that a wall-clock step since the read cannot skew it.
        Returns the gateway time (a float for one read time, its arithmetic done on Python floats: on
        a 0-d array it took longer than the rest of a block's write)."""
        wall_now, mono_now = time.time(), time.monotonic()
        if read_at is None:
            self.updated[rows] = mono_now
            stamp = wall_now
        elif isinstance(read_at, float):
            self.updated[rows] = read_at
            stamp = wall_now - (mono_now - read_at)
        else:
            self.updated[rows] = read_at
            stamp = wall_now - (mono_now - np.asarray(read_at, dtype=np.float64))
        self.gateway_ts[rows] = stamp
        self.changed.set()
        return stamp

    def _log(self, rows: np.ndarray, values, quality, source_ts, stamp, keep: np.ndarray | None) -> None:
        """Append the `keep` part of a write (None: all of it) to the read log (copies: the writer may reuse
        its arrays); a scalar stands for every row and goes as it is. A write whose rows are all kept (a
        block of every_read tags) is copied whole, without a mask: at 10,000 every_read registers a
        second the masks were most of the write's time."""
        every = keep is None or bool(keep.all())
        if not every and not keep.any():  # type: ignore[union-attr]
            return

        def kept(column):
            if getattr(column, "ndim", 0) == 0:
                return column
            return np.array(column) if every else np.asarray(column)[keep]

        self.read_log.add(kept(rows), kept(values), kept(quality), kept(source_ts), kept(stamp))

    def event(self, event: Event) -> None:
        self.pending_events.append(event)
        self.changed.set()

    def take_events(self) -> list[Event]:
        events, self.pending_events = self.pending_events, []
        return events
