"""The reads of `report: every_read` rows, each kept until the scan stores it, in the order they came.

The point table holds only the latest value of a row, and report-by-exception looks at it once a
tick: two reads of a row between two ticks would leave one. For rows whose every completed read must
be stored, the table also appends each read here (value, quality, source time, gateway time) and the
scan drains the log into the same transaction as the other samples. The log is bounded: if the scan
stalls for so long that more than `limit` reads wait, the oldest go, and what went is counted per row
so that the scan can record it as a `gap` event, never silently.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

DEFAULT_LIMIT = 1_000_000  # reads waiting at most (about 40 MB); the scan normally drains it every tick
COLUMNS = ("rows", "value", "quality", "source_ts", "gateway_ts")


@dataclass(frozen=True)
class Reads:
    """Reads as parallel arrays: table row, value, quality, device time, gateway time (Unix seconds)."""

    rows: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    source_ts: np.ndarray
    gateway_ts: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


class ReadLog:
    """Each write's reads as they came: its rows and values, and its quality, device time and gateway time,
    each either one scalar for every row (a block read gives one of each) or an array. They become
    arrays only when the scan takes them, all writes at once: expanding three scalars into arrays at
    every write was most of an every_read write's time."""

    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self._writes: deque[tuple] = deque()  # (count, rows, value, quality, source_ts, gateway_ts)
        self._waiting = 0
        self.dropped: dict[int, list[float]] = {}  # row -> [reads dropped, first gateway ts, last gateway ts]

    def __len__(self) -> int:
        return self._waiting

    def add(self, rows: np.ndarray, value: np.ndarray, quality, source_ts, gateway_ts) -> None:
        """The reads of one write: `rows` and `value` arrays the log may keep (copies, if the writer reuses
        its own), the others each a scalar standing for every row or an array as long as `rows`."""
        count = len(rows)
        self._writes.append((count, rows, value, quality, source_ts, gateway_ts))
        self._waiting += count
        while self._waiting > self.limit:
            oldest = self._writes.popleft()
            self._waiting -= oldest[0]
            stamps = np.broadcast_to(oldest[5], oldest[0]).tolist()
            for row, ts in zip(oldest[1].tolist(), stamps):
                entry = self.dropped.setdefault(row, [0, ts, ts])
                entry[0] += 1
                entry[1], entry[2] = min(entry[1], ts), max(entry[2], ts)

    def take(self) -> Reads | None:
        """Every waiting read in arrival order, or None; the log is empty afterwards."""
        if not self._writes:
            return None
        writes, total = self._writes, self._waiting
        self._writes, self._waiting = deque(), 0
        reads = Reads(np.empty(total, np.int64), np.empty(total), np.empty(total, np.uint8), np.empty(total),
                      np.empty(total))
        columns = [getattr(reads, name) for name in COLUMNS]
        start = 0
        for count, *values in writes:
            for column, value in zip(columns, values):
                column[start:start + count] = value
            start += count
        return reads

    def take_dropped(self) -> dict[int, list[float]]:
        dropped, self.dropped = self.dropped, {}
        return dropped
