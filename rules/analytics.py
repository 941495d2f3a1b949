"""Alarm analytics (ISA-18.2 / EEMUA 191): chattering, stale, flood, alarm rates, priority distribution.

Fed by the engine with the annunciations of each scan (a few, so plain Python); times are monotonic
seconds for windows, wall seconds for event stamps. Emits `analytics` events and keeps metrics named
after the OPC UA AlarmMetrics fields where one exists.

- chattering: `chatter_count` (3) or more activations of one alarm within `chatter_window` (60 s);
  ends when the window holds fewer again.
- flood: more than `flood_start` (10) activations within `flood_window` (10 min) starts a flood,
  fewer than `flood_end` (5) ends it; counted gateway-wide (`scope: gateway`, source `alarms`) and per
  production unit (`scope: unit`, source the unit) over the alarms whose tags belong to one.
- stale: active `stale_after` (24 h) or more (detected in the state kernel, reported here).
- rates against EEMUA 191: an average of 1 per 10 minutes is manageable; peaks of 15 per hour and
  2 per minute; a priority split of about 5 % high / 15 % medium / 80 % low.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

from core.types import Event, Priority
from rules.model import AnalyticsConfig

EEMUA = {
    "average_per_10min": 1.0,
    "peak_per_hour": 15.0,
    "peak_per_minute": 2.0,
    "priority_split": {"high": 0.05, "medium": 0.15, "low": 0.80},
}


def eemua_band(level: int) -> str:
    """EEMUA's three priority bands from our priority levels."""
    if level >= Priority.HIGH:
        return "high"
    return "medium" if level == Priority.MEDIUM else "low"


class UnitFlood:
    """Flood counting of one production unit: its activations within the flood window."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque()
        self.flood = False
        self.since = 0.0
        self.floods = 0


class AlarmAnalytics:
    def __init__(self, config: AnalyticsConfig, now_mono: float, now_wall: float,
                 units: Mapping[str, str] | None = None):
        """`units` maps an alarm id to the production unit it belongs to (alarms not in it belong to none)."""
        self.config = config
        self.unit_of = dict(units or {})
        self.units = {unit: UnitFlood() for unit in sorted(set(self.unit_of.values()))}
        self.start_mono, self.start_wall = now_mono, now_wall
        self.per_alarm: dict[str, deque[float]] = {}
        self.chattering: set[str] = set()
        self.recent: deque[float] = deque()  # activations within the last hour
        self.flood = False
        self.flood_since = 0.0
        self.flood_seconds = 0.0
        self.last_mono = now_mono
        self.count = 0
        self.bands: Counter[str] = Counter()
        self.realarms: Counter[str] = Counter()
        self.peak_10min = self.peak_hour = self.peak_minute = 0
        self.max_active = self.max_unack = 0
        self.floods = 0
        self.next_report = now_mono + config.report_interval if config.report_interval > 0 else float("inf")

    def update(self, now_mono: float, now_wall: float, activations: Iterable[tuple[str, int]],
               realarms: Iterable[str] = (), stale: Iterable[tuple[str, int]] = (), active: int = 0,
               unack: int = 0) -> list[Event]:
        """Take one scan's annunciations: (alarm id, priority level) of each activation, re-alarms, and
        alarms just found stale. Returns the analytics events of this scan, in order."""
        config = self.config
        events: list[Event] = []
        if self.flood:
            self.flood_seconds += now_mono - self.last_mono
        self.last_mono = now_mono
        self.max_active = max(self.max_active, active)
        self.max_unack = max(self.max_unack, unack)
        for alarm_id in realarms:
            self.realarms[alarm_id] += 1
        for alarm_id, level in activations:
            unit = self.unit_of.get(alarm_id)
            if unit is not None:
                self.units[unit].recent.append(now_mono)
            self.count += 1
            self.bands[eemua_band(level)] += 1
            self.recent.append(now_mono)
            times = self.per_alarm.setdefault(alarm_id, deque())
            times.append(now_mono)
            while times and times[0] <= now_mono - config.chatter_window:
                times.popleft()
            if len(times) >= config.chatter_count and alarm_id not in self.chattering:
                self.chattering.add(alarm_id)
                events.append(self._event(now_wall, alarm_id, "chattering", Priority.LOW,
                                          f"{alarm_id} is chattering: {len(times)} activations within "
                                          f"{config.chatter_window:g} s", {"activations": len(times)}))
        for alarm_id in sorted(self.chattering):
            times = self.per_alarm[alarm_id]
            while times and times[0] <= now_mono - config.chatter_window:
                times.popleft()
            if len(times) < config.chatter_count:
                self.chattering.discard(alarm_id)
                events.append(self._event(now_wall, alarm_id, "chattering_end", Priority.INFO,
                                          f"{alarm_id} no longer chattering", {"activations": len(times)}))
        quiet_since = now_mono - config.chatter_window
        for alarm_id in [key for key, times in self.per_alarm.items()
                         if key not in self.chattering and (not times or times[-1] <= quiet_since)]:
            del self.per_alarm[alarm_id]
        for alarm_id, _level in stale:
            events.append(self._event(now_wall, alarm_id, "stale", Priority.LOW,
                                      f"{alarm_id} has been active for {config.stale_after / 3600:g} h or more "
                                      f"(stale alarm)", {"active_for": config.stale_after}))
        while self.recent and self.recent[0] <= now_mono - 3600.0:
            self.recent.popleft()
        in_window = self._within(now_mono, config.flood_window)
        self.peak_10min = max(self.peak_10min, self._within(now_mono, 600.0))
        self.peak_hour = max(self.peak_hour, len(self.recent))
        self.peak_minute = max(self.peak_minute, self._within(now_mono, 60.0))
        if not self.flood and in_window > config.flood_start:
            self.flood, self.flood_since = True, now_mono
            self.floods += 1
            events.append(self._flood_event(now_wall, "alarms", True, in_window, 0.0, {"scope": "gateway"}))
        elif self.flood and in_window < config.flood_end:
            self.flood = False
            events.append(self._flood_event(now_wall, "alarms", False, in_window, now_mono - self.flood_since,
                                            {"scope": "gateway"}))
        for name, unit in self.units.items():
            while unit.recent and unit.recent[0] <= now_mono - config.flood_window:
                unit.recent.popleft()
            count = len(unit.recent)
            if not unit.flood and count > config.flood_start:
                unit.flood, unit.since = True, now_mono
                unit.floods += 1
                events.append(self._flood_event(now_wall, name, True, count, 0.0, {"scope": "unit", "unit": name}))
            elif unit.flood and count < config.flood_end:
                unit.flood = False
                events.append(self._flood_event(now_wall, name, False, count, now_mono - unit.since,
                                                {"scope": "unit", "unit": name}))
        if now_mono >= self.next_report:
            self.next_report = now_mono + config.report_interval
            metrics = self.metrics(now_mono, now_wall)
            events.append(self._event(now_wall, "alarms", "rates", Priority.INFO,
                                      f"alarm rates: {metrics['average_per_10min']:.2f} per 10 min on average, "
                                      f"peak {metrics['peak_per_hour']} per hour", {"metrics": metrics}))
        return events

    def _flood_event(self, now_wall: float, source: str, starts: bool, count: int, lasted: float,
                     scope: dict[str, str]) -> Event:
        where = f" in unit {scope['unit']}" if "unit" in scope else ""
        minutes = self.config.flood_window / 60
        if starts:
            return self._event(now_wall, source, "flood", Priority.HIGH,
                               f"alarm flood{where}: {count} alarms within {minutes:g} min", {"count": count, **scope})
        return self._event(now_wall, source, "flood_end", Priority.LOW,
                           f"alarm flood{where} over after {lasted:.0f} s: {count} alarms within {minutes:g} min",
                           {"count": count, "duration": lasted, **scope})

    def _within(self, now: float, window: float) -> int:
        count = 0
        for t in reversed(self.recent):
            if t <= now - window:
                break
            count += 1
        return count

    def _event(self, now_wall: float, source: str, analysis: str, priority: Priority, message: str,
               data: dict[str, Any]) -> Event:
        return Event("analytics", now_wall, source, message, priority, {"analysis": analysis, **data})

    def metrics(self, now_mono: float, now_wall: float | None = None) -> dict[str, Any]:
        hours = max((now_mono - self.start_mono) / 3600.0, 1e-9)
        total = sum(self.bands.values())
        split = {band: (self.bands[band] / total if total else 0.0) for band in ("high", "medium", "low")}
        elapsed = now_mono - self.start_mono
        flood_seconds = self.flood_seconds + (now_mono - self.last_mono if self.flood else 0.0)
        average_10 = self.count / hours / 6.0
        return {
            "alarm_count": self.count,  # OPC UA AlarmCount
            "start_time": self.start_wall,  # StartTime
            "maximum_active": self.max_active,  # MaximumActiveState
            "maximum_unack": self.max_unack,  # MaximumUnAck
            "current_per_10min": self._within(now_mono, 600.0),  # CurrentAlarmRate
            "maximum_per_10min": self.peak_10min,  # MaximumAlarmRate
            "average_per_10min": average_10,  # AverageAlarmRate
            "average_per_hour": self.count / hours,
            "peak_per_hour": self.peak_hour,
            "peak_per_minute": self.peak_minute,
            "maximum_realarm_count": max(self.realarms.values(), default=0),  # MaximumReAlarmCount
            "chattering": sorted(self.chattering),
            "flood": self.flood,
            "floods": self.floods,
            "units": {name: {"flood": unit.flood, "floods": unit.floods, "in_window": len(unit.recent)}
                      for name, unit in self.units.items()},
            "flood_fraction": flood_seconds / elapsed if elapsed > 0 else 0.0,
            "priority_split": split,
            "eemua": EEMUA,
            "within_eemua": {
                "average": average_10 <= EEMUA["average_per_10min"],
                "peak_per_hour": self.peak_hour <= EEMUA["peak_per_hour"],
                "peak_per_minute": self.peak_minute <= EEMUA["peak_per_minute"],
                "flood_fraction": (flood_seconds / elapsed if elapsed > 0 else 0.0) < 0.01,
            },
        }
