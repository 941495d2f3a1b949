"""The scan tick: the rule engine and report-by-exception over the point table, one store transaction.

Runs on the event loop thread at `gateway.scan_interval` and right after polls. The rule engine
(`rules.engine.RuleEngine`, numba kernels over preallocated arrays) turns the table into alarm,
bypass and analytics events; each interlock's in-service state is written into its virtual row
`IL.<id>` of the table, so it travels upstream as an ordinary monitored value through the same
report-by-exception as a polled tag.

The scanner also owns the engine's persistence: its state (`engine.state_dict()`) is saved in the
store after every operator action (`commit`), at most every STATE_SAVE_SPACING seconds after a tick
that changed an alarm or bypass state or recorded a trip, and at shutdown; it is restored at start.
"""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gatewayd.config.model import Config
from gatewayd.values.dataquality import DataQuality, TagChecks, rows_by_tag_id
from gatewayd.values.points import PointTable
from core.types import QUALITY_BAD_MIN, Event
from rules.engine import RuleEngine
from rules.kernels.load import kernels
from store import SampleBlock, Store, is_disk_full
from store.retention import gap_event

log = logging.getLogger("gatewayd.scan")

STATE_NAME = "rules"
STATE_SAVE_SPACING = 10.0  # seconds; a crash loses at most this much alarm-state history (not events)
RULE_EVENT_KINDS = frozenset({"alarm", "gas_alarm", "bypass", "trip"})  # events that change saved state
DEVICE_STATE_EVENTS = frozenset({"device_down", "device_up"})


def build_engine(config: Config, table: PointTable) -> RuleEngine:
    """The rule engine over `table` (whose rows include the interlock tags), from the config."""
    return RuleEngine.build(config.rules, table.rows, len(table),
                            tag_alarms=[tag.alarms for tag in config.tags if tag.alarms is not None],
                            tag_info={tag.name: tag for tag in config.tags})


def build_data_quality(config: Config, table: PointTable, start: float, start_wall: float) -> DataQuality:
    """The data-quality accumulator over `table`, its figures starting at `start` (monotonic)."""
    return DataQuality(TagChecks.build(config.devices, table.tags), start, start_wall,
                       config.data_quality.interval, table.reads)


@dataclass
class ScanStats:
    scans: int = 0
    samples: int = 0
    events: int = 0
    last_rules_seconds: float = 0.0
    last_scan_seconds: float = 0.0
    state_saves: int = 0
    stale: int = 0  # STALE transitions
    reads_dropped: int = 0  # reads of every_read rows the full read log dropped


class Scanner:
    def __init__(self, table: PointTable, tag_ids: np.ndarray, store: Store, engine: RuleEngine,
                 data_quality: DataQuality | None = None):
        self.table, self.tag_ids, self.store, self.engine = table, tag_ids, store, engine
        self.data_quality = data_quality
        self._rows_by_tag_id = rows_by_tag_id(tag_ids)
        self.outbox = store  # what ticks append to; the daemon puts the spill and clock guard here
        # called as tap(table, rows, samples, events) after each commit: `gatewayd tail` and status
        # (gatewayd.operator.operate); it must only copy, never block
        self.tap: Callable[[PointTable, np.ndarray | None, SampleBlock | None, Sequence[Event]], None] | None = None
        size = len(table)
        self.interlock_rows = table.rows_of([il.state_tag for il in engine.rules.interlocks])
        self.deadband = np.array([tag.deadband for tag in table.tags], dtype=np.float64)
        self.max_interval = np.array([tag.max_interval for tag in table.tags], dtype=np.float64)
        self.last_value = np.full(size, np.nan)
        self.last_quality = np.full(size, 255, dtype=np.uint8)
        self.last_time = np.full(size, -np.inf)
        self.last_update = np.full(size, -np.inf)
        self._report_rows = np.zeros(size, dtype=np.int64)
        self._state_dirty = False
        self._state_saved = -np.inf
        self.stats = ScanStats()

    def warm(self) -> None:
        """Run the scan's kernels once on scratch copies of the engine and the arrays, so that they are
        ready now (built ahead of time they are, at once; numba's load from its cache, or compile). The
        daemon calls this before any driver starts: loaded at the first real scan instead, numba's hold
        the event loop for half a second or more (longer on a busy machine) while devices are connecting,
        and connect timeouts fire without any device having been slow."""
        table = self.table
        scratch = copy.deepcopy(self.engine)
        scratch.evaluate(table.value.copy(), table.quality.copy(), time.monotonic(), time.time(),
                         table.updated.copy(), table.gateway_ts.copy())
        kernels().select_reports(table.value.copy(), table.quality.copy(), table.updated.copy(), time.monotonic(),
                       self.deadband, self.max_interval, table.every_read, self.last_value.copy(),
                       self.last_quality.copy(), self.last_time.copy(), self.last_update.copy(),
                       self._report_rows.copy())

    def tick(self, stale_as_of: float | None = None) -> None:
        """One scan: staleness, rules, interlock states, selection; samples and events commit in one
        transaction. Staleness comes first so that the rules see the qualities that go upstream.

        `stale_as_of` (monotonic) judges staleness at an earlier moment: the last scan at a stop passes
        the moment the stop began, so that tags are not reported STALE because the drivers were stopped."""
        started = time.perf_counter()
        now_wall, now_mono = time.time(), time.monotonic()
        table = self.table
        self.stats.stale += table.mark_stale(now_mono if stale_as_of is None else min(stale_as_of, now_mono))
        events = table.take_events()
        if self.data_quality is not None:
            events += self._observe_quality(events, now_mono, now_wall)
        rule_events = self.engine.evaluate(table.value, table.quality, now_mono, now_wall, table.updated,
                                           table.gateway_ts)
        self._forward_interlocks(now_wall, now_mono)
        self.stats.last_rules_seconds = time.perf_counter() - started
        count = kernels().select_reports(table.value, table.quality, table.updated, now_mono, self.deadband,
                               self.max_interval, table.every_read, self.last_value, self.last_quality,
                               self.last_time, self.last_update, self._report_rows)
        events += rule_events
        rows = self._report_rows[:count].copy() if count else None
        # each row's own read time, also for a heartbeat re-report: never the scan time
        samples = None if rows is None else self._samples(rows, table.gateway_ts[rows], table.value[rows],
                                                          table.quality[rows], table.source_ts[rows])
        if table.read_log is not None:
            samples, rows, dropped = self._every_read(samples, rows, now_wall)
            events += dropped
        if samples is not None or events:
            self.outbox.append(samples, events)  # a full disk never raises here (store.spill)
            if self.tap is not None:
                self.tap(table, rows, samples, events)
        self.stats.scans += 1
        self.stats.samples += 0 if samples is None else len(samples)
        self.stats.events += len(events)
        if any(event.kind in RULE_EVENT_KINDS for event in rule_events):
            self._state_dirty = True
        if self._state_dirty and now_mono - self._state_saved >= STATE_SAVE_SPACING:
            self.save_state()
        self.stats.last_scan_seconds = time.perf_counter() - started

    def _observe_quality(self, events: Sequence[Event], now_mono: float, now_wall: float) -> list[Event]:
        """Device states, the reads since the last tick, and the data_quality events when one is due."""
        quality, table = self.data_quality, self.table
        for event in events:
            if event.kind in DEVICE_STATE_EVENTS:
                quality.device_event(event, now_mono, now_wall)
        found = quality.observe(now_mono, now_wall, table.value, table.quality, table.updated, table.reads)
        if quality.due(now_mono):
            found += quality.report(now_mono, now_wall, table.reads)
        return found

    def samples_sent(self, samples: SampleBlock, sent_wall: float) -> None:
        """A batch carrying `samples` is being handed to the broker at `sent_wall`: their ages count for
        timeliness. Samples of tags no longer in the table (a reload, an earlier run) are left out."""
        if self.data_quality is None or not len(samples):
            return
        lookup = self._rows_by_tag_id
        ids = samples.tag_id
        known = ids < len(lookup)
        rows = lookup[ids[known]]
        mine = rows >= 0
        self.data_quality.sent(rows[mine], sent_wall - samples.ts[known][mine])

    def _samples(self, rows: np.ndarray, ts: np.ndarray, value: np.ndarray, quality: np.ndarray,
                 source_ts: np.ndarray) -> SampleBlock:
        """Samples of table rows; a bad quality's value is null (NaN), an uncertain one keeps it."""
        value = np.where(quality >= QUALITY_BAD_MIN, np.nan, value)
        return SampleBlock(self.tag_ids[rows], ts, value, quality.copy(), source_ts.copy())

    def _every_read(self, samples: SampleBlock | None, rows: np.ndarray | None,
                    now_wall: float) -> tuple[SampleBlock | None, np.ndarray | None, list[Event]]:
        """Append every logged read of the every_read rows, in arrival order, after the exception samples;
        reads the full log had to drop become one `gap` event."""
        log_ = self.table.read_log
        reads = log_.take()
        dropped = log_.take_dropped()
        events = []
        if dropped:
            self.stats.reads_dropped += sum(int(count) for count, _, _ in dropped.values())
            per_tag = [(int(self.tag_ids[row]), int(count), first, last)
                       for row, (count, first, last) in dropped.items()]
            names = {int(self.tag_ids[row]): self.table.tags[row].name for row in dropped}
            events.append(gap_event(now_wall, per_tag, names, "dropped",
                                    f"more than {log_.limit} every_read readings waited for the scan"))
        if reads is None:
            return samples, rows, events
        logged = self._samples(reads.rows, reads.gateway_ts, reads.value, reads.quality, reads.source_ts)
        if samples is None:
            return logged, reads.rows, events
        return SampleBlock.concat([samples, logged]), np.concatenate([rows, reads.rows]), events

    def _forward_interlocks(self, now_wall: float, now_mono: float) -> None:
        """Write each interlock's in-service value and quality into its row, as read at this tick (the
        scan is what evaluates it): report-by-exception then sends a change at once and the unchanged
        state every max_interval, stamped with the latest evaluation."""
        rows = self.interlock_rows
        if not len(rows):
            return
        table = self.table
        table.value[rows] = self.engine.in_service
        table.quality[rows] = self.engine.in_service_quality
        table.gateway_ts[rows] = now_wall
        table.updated[rows] = now_mono

    def commit(self, events: Sequence[Event]) -> None:
        """Store the events of an operator action like a scan's (forwarded upstream), then the new state."""
        if events:
            self.outbox.append(None, events)
            self.stats.events += len(events)
            if self.tap is not None:
                self.tap(self.table, None, None, events)
        self.save_state()

    def save_state(self) -> None:
        try:
            self.store.save_state(STATE_NAME, json.dumps(self.engine.state_dict()))
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            log.warning("rule state not saved (%s); retried in %.0f s", exc, STATE_SAVE_SPACING)
            self._state_saved = time.monotonic()
            return
        self._state_dirty = False
        self._state_saved = time.monotonic()
        self.stats.state_saves += 1

    def restore_state(self) -> None:
        """Bring back alarm states, shelves, latches, bypass states and authorizations saved by a
        previous run; what no longer matches the config is dropped and logged."""
        saved = self.store.load_state(STATE_NAME)
        if saved is None:
            return
        for note in self.engine.restore(json.loads(saved)):
            log.warning("rule state: %s", note)
        log.info("rule state restored: %d alarms not in NORM, %d bypass authorizations",
                 sum(1 for item in self.engine.alarms() if item["state"] != "NORM"),
                 len(self.engine.bypass_list()))
