"""The adapter every value passes through: a driver writes positions 0..n-1 of its own tag list, and
its `DeviceSink` maps them onto point-table rows (`drivers.kit.SampleSink` is the interface)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.types import Event, Quality


class DeviceSink:
    """What a driver writes into: positions 0..n-1 of its own tag list, mapped onto point-table rows.

    A reload that rebuilds the table retargets the sink; the driver keeps running and never knows.
    """

    def __init__(self, table: Any, rows: np.ndarray):
        self.table, self.rows = table, rows

    def retarget(self, table: Any, rows: np.ndarray) -> None:
        self.table, self.rows = table, rows

    def write(self, rows: np.ndarray, values: np.ndarray, quality: int | np.ndarray = Quality.GOOD,
              source_ts: float | np.ndarray | None = None, read_at: float | np.ndarray | None = None) -> None:
        self.table.write(self.rows[rows], values, quality, source_ts, read_at)

    def set_quality(self, rows: np.ndarray, quality: int, read_at: float | np.ndarray | None = None) -> None:
        self.table.set_quality(self.rows[rows], quality, read_at)

    def confirm(self, rows: np.ndarray, read_at: float | None = None) -> None:
        self.table.confirm(self.rows[rows], read_at)

    def widen_stale_after(self, rows: np.ndarray, seconds: float) -> None:
        self.table.widen_stale_after(self.rows[rows], seconds)

    def event(self, event: Event) -> None:
        self.table.event(event)
