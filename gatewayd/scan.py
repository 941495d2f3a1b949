"""The scan tick: limit alarms and report-by-exception over the point table, one store transaction.

Runs on the event loop thread at `gateway.scan_interval`. The kernels only touch preallocated arrays;
the Python here turns their few outputs into events and a sample block.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gatewayd.points import PointTable
from gatewayd.types import Event, Priority
from rules.limits import LIMIT_NAMES, RAISE, evaluate_limits
from rules.report import select_reports
from store import SampleBlock, Store

PRIORITY_NAMES = {"low": Priority.LOW, "medium": Priority.MEDIUM, "high": Priority.HIGH,
                  "critical": Priority.CRITICAL}


@dataclass
class ScanStats:
    scans: int = 0
    samples: int = 0
    events: int = 0
    last_rules_seconds: float = 0.0
    last_scan_seconds: float = 0.0


class Scanner:
    def __init__(self, table: PointTable, tag_ids: np.ndarray, store: Store):
        self.table, self.tag_ids, self.store = table, tag_ids, store
        size = len(table)
        self.limits = np.full((size, 4), np.nan)
        self.alarm_deadband = np.zeros(size)
        self.alarm_priority = np.full(size, Priority.MEDIUM, dtype=np.int64)
        for row, tag in enumerate(table.tags):
            if tag.alarms is not None:
                for column, key in enumerate(("hh", "h", "l", "ll")):
                    limit = getattr(tag.alarms, key)
                    self.limits[row, column] = np.nan if limit is None else limit
                self.alarm_deadband[row] = tag.alarms.deadband
                self.alarm_priority[row] = PRIORITY_NAMES[tag.alarms.priority]
        self.active = np.zeros((size, 4), dtype=np.uint8)
        self._transition_row = np.zeros(size * 4, dtype=np.int64)
        self._transition_limit = np.zeros(size * 4, dtype=np.int64)
        self._transition_kind = np.zeros(size * 4, dtype=np.int64)

        self.deadband = np.array([tag.deadband for tag in table.tags], dtype=np.float64)
        self.max_interval = np.array([tag.max_interval for tag in table.tags], dtype=np.float64)
        self.last_value = np.full(size, np.nan)
        self.last_quality = np.full(size, 255, dtype=np.uint8)
        self.last_time = np.full(size, -np.inf)
        self.last_update = np.full(size, -np.inf)
        self._report_rows = np.zeros(size, dtype=np.int64)
        self._report_fresh = np.zeros(size, dtype=np.bool_)
        self.stats = ScanStats()

    def tick(self) -> None:
        """One scan: evaluate, select, and commit samples and events in one transaction."""
        started = time.perf_counter()
        now_wall, now_mono = time.time(), time.monotonic()
        table = self.table
        transitions = evaluate_limits(table.value, table.quality, self.limits, self.alarm_deadband, self.active,
                                      self._transition_row, self._transition_limit, self._transition_kind)
        count = select_reports(table.value, table.quality, table.gateway_ts, now_mono, self.deadband,
                               self.max_interval, self.last_value, self.last_quality, self.last_time,
                               self.last_update, self._report_rows, self._report_fresh)
        self.stats.last_rules_seconds = time.perf_counter() - started
        events = table.take_events() + self._alarm_events(transitions, now_wall)
        samples = None
        if count:
            rows = self._report_rows[:count].copy()
            timestamps = np.where(self._report_fresh[:count], table.gateway_ts[rows], now_wall)
            samples = SampleBlock(self.tag_ids[rows], timestamps, table.value[rows].copy(),
                                  table.quality[rows].copy(), table.source_ts[rows].copy())
        if samples is not None or events:
            self.store.append(samples, events)
        self.stats.scans += 1
        self.stats.samples += count
        self.stats.events += len(events)
        self.stats.last_scan_seconds = time.perf_counter() - started

    def _alarm_events(self, count: int, now: float) -> list[Event]:
        events = []
        for index in range(count):
            row = int(self._transition_row[index])
            limit = int(self._transition_limit[index])
            raised = self._transition_kind[index] == RAISE
            tag = self.table.tags[row]
            value, setpoint = float(self.table.value[row]), float(self.limits[row, limit])
            name = LIMIT_NAMES[limit]
            state = "active" if raised else "return"
            message = (f"{tag.name} {name} alarm {'raised' if raised else 'returned'}: "
                       f"{value:g} {tag.unit} (limit {setpoint:g})").replace("  ", " ")
            events.append(Event("alarm", now, tag.name, message, Priority(int(self.alarm_priority[row])),
                                {"limit": name, "state": state, "value": value, "setpoint": setpoint,
                                 "unit": tag.unit}))
        return events
