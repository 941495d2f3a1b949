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
    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self._chunks: deque[Reads] = deque()
        self._waiting = 0
        self.dropped: dict[int, list[float]] = {}  # row -> [reads dropped, first gateway ts, last gateway ts]

    def __len__(self) -> int:
        return self._waiting

    def add(self, reads: Reads) -> None:
        self._chunks.append(reads)
        self._waiting += len(reads)
        while self._waiting > self.limit:
            oldest = self._chunks.popleft()
            self._waiting -= len(oldest)
            for row, ts in zip(oldest.rows.tolist(), oldest.gateway_ts.tolist()):
                entry = self.dropped.setdefault(row, [0, ts, ts])
                entry[0] += 1
                entry[1], entry[2] = min(entry[1], ts), max(entry[2], ts)

    def take(self) -> Reads | None:
        """Every waiting read in arrival order, or None; the log is empty afterwards."""
        if not self._chunks:
            return None
        chunks, self._chunks, self._waiting = self._chunks, deque(), 0
        if len(chunks) == 1:
            return chunks[0]
        return Reads(*(np.concatenate([getattr(chunk, name) for chunk in chunks])
                       for name in ("rows", "value", "quality", "source_ts", "gateway_ts")))

    def take_dropped(self) -> dict[int, list[float]]:
        dropped, self.dropped = self.dropped, {}
        return dropped
