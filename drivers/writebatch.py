"""What one drain of the inbox writes into the point table, gathered into few sink calls.

Messages are decoded one by one, but writing each reading alone would cost a numpy call per value.
A `WriteBatch` collects readings (value, quality, source time, arrival time) and bad-quality marks
by the driver's positions, and `flush` hands them to the sink in one `write` and one `set_quality`
per quality. A position that comes again before the flush (two messages of one sensor in one drain)
flushes first, so every reading is written, in arrival order, and none overwrites another unseen
(an every_read tag logs each).
"""

from __future__ import annotations

import numpy as np

from core.types import SampleSink


class WriteBatch:
    def __init__(self, sink: SampleSink, rows: np.ndarray) -> None:
        self.sink, self.rows = sink, rows
        self._positions: list[int] = []
        self._values: list[float] = []
        self._qualities: list[int] = []
        self._stamps: list[float] = []
        self._read_at: list[float] = []
        self._marks: dict[int, list[tuple[int, float]]] = {}  # quality -> [(position, read_at)]
        self._pending: set[int] = set()

    def write(self, position: int, value: float, quality: int, source_ts: float, read_at: float) -> None:
        self._claim(position)
        self._positions.append(position)
        self._values.append(value)
        self._qualities.append(quality)
        self._stamps.append(source_ts)
        self._read_at.append(read_at)

    def mark(self, position: int, quality: int, read_at: float) -> None:
        """The position keeps its last value and takes `quality` (DECODE_ERROR, COMM_FAILURE, STALE)."""
        self._claim(position)
        self._marks.setdefault(quality, []).append((position, read_at))

    def flush(self) -> None:
        if self._positions:
            self.sink.write(self.rows[self._positions], np.array(self._values), np.array(self._qualities, np.uint8),
                            np.array(self._stamps), np.array(self._read_at))
            self._positions, self._values, self._qualities, self._stamps, self._read_at = [], [], [], [], []
        for quality, marks in self._marks.items():
            positions, read_at = zip(*marks)
            self.sink.set_quality(self.rows[list(positions)], quality, np.array(read_at))
        self._marks.clear()
        self._pending.clear()

    def _claim(self, position: int) -> None:
        if position in self._pending:
            self.flush()
        self._pending.add(position)
