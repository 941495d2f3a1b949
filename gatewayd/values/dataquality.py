"""Data-quality figures per tag and per device: online share, completeness, timeliness, accuracy flags.

Provincial platforms rate an enterprise's data on how much of the time its devices answered (online
share), how many of the expected reads arrived (completeness), how old values are when they reach the
platform (timeliness) and whether they can be true (accuracy: inside the instrument range, not frozen,
no impossible steps). This module computes those figures; it does no I/O and reads no clock, so every
figure is tested on explicit time (tests/test_dataquality.py).

    quality = DataQuality(checks, start=time.monotonic(), start_wall=time.time(), interval=3600.0)
    events = quality.observe(now, now_wall, table.value, table.quality, table.updated, table.reads)
    quality.device_event(event, now, now_wall)      # device_down / device_up
    quality.sent(rows, ages)                        # samples handed to the broker, their ages
    if quality.due(now):
        events += quality.report(now, now_wall)     # one data_quality event per device

`observe` runs every scan tick: a handful of vectorised numpy operations over the table, plus the rows
that have a range, a rate limit or frozen detection; nothing per tag in Python. `report` (once per
interval) and `figures` (a status or a scrape) may loop over tags.

Windows: `period` is the current reporting period (from the last data_quality event, at most
`interval` long); `since_start` is since the daemon started. Only the period is updated on the hot
path; it is folded into the since-start totals when a report closes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import drivers
from gatewayd.config.model import DeviceConfig, TagConfig
from core.types import QUALITY_BAD_MIN, Event, Priority, Quality

# timeliness histogram: bucket k holds ages in (AGE_EDGES[k-1], AGE_EDGES[k]] seconds, bucket 0 ages up
# to 1 ms; ten buckets a decade (each edge 1.26 times the one before), ages above 100,000 s count there
AGE_EDGES = 10.0 ** (np.arange(81) / 10.0 - 3.0)
AGE_CELLS_WAITING = 100_000  # samples whose age waits to be counted (a few seconds' worth at 10,000 tags)
TAGS_PER_EVENT = 500  # like tag_metadata: one event stays a reasonable size at 10,000 tags
FROZEN_PRIORITY = Priority.MEDIUM
QUANTILES = (("age_p50", 0.5), ("age_p95", 0.95))


@dataclass(frozen=True)
class TagChecks:
    """Per-row settings of the point table, as arrays: what to expect of each tag and what to check.

    `device` indexes `devices` (-1: a virtual tag no device reads); `interval` is the seconds between
    expected reads (NaN: none expected); the bounds are NaN when the tag has no range; `frozen_after`
    and `max_rate` are inf when off.
    """

    devices: tuple[str, ...]
    names: tuple[str, ...]
    device: np.ndarray
    interval: np.ndarray
    range_low: np.ndarray
    range_high: np.ndarray
    frozen_after: np.ndarray
    max_rate: np.ndarray

    @classmethod
    def build(cls, devices: Sequence[DeviceConfig], tags: Sequence[TagConfig]) -> TagChecks:
        names = tuple(device.name for device in devices)
        index = {name: i for i, name in enumerate(names)}
        intervals = {device.name: device for device in devices}

        def interval(tag: TagConfig) -> float:
            device = intervals.get(tag.device)
            return expected_interval(device, tag) if device is not None else math.nan

        def off(value: float | None) -> float:
            return math.inf if value is None else value

        def bound(value: float | None) -> float:
            return math.nan if value is None else value

        return cls(
            devices=names, names=tuple(tag.name for tag in tags),
            device=np.array([index.get(tag.device, -1) for tag in tags], dtype=np.int64),
            interval=np.array([interval(tag) for tag in tags], dtype=np.float64),
            range_low=np.array([bound(tag.range_low) for tag in tags], dtype=np.float64),
            range_high=np.array([bound(tag.range_high) for tag in tags], dtype=np.float64),
            frozen_after=np.array([off(tag.frozen_after) for tag in tags], dtype=np.float64),
            max_rate=np.array([off(tag.max_rate) for tag in tags], dtype=np.float64))


def expected_interval(device: DeviceConfig, tag: TagConfig) -> float:
    """Seconds between the reads a healthy tag gets: what its driver's `staleness` hook names as the
    longest gap between two refreshes (for a subscribed OPC UA item the keep-alive period, since every
    publish, data or keep-alive, confirms it), else the device's poll interval."""
    hook = getattr(drivers.schema(device.driver), "staleness", None)
    if hook is None or device.settings is None:
        return float(device.poll_interval)
    return float(hook(device.poll_interval, device.settings, tag.address)[0])


class Window:
    """What one window (the period, or everything before it) has accumulated, per row and per device."""

    def __init__(self, rows: int, devices: int, start: float, reads: np.ndarray):
        self.start = start
        self.reads_base = reads.astype(np.int64, copy=True)  # the table's read counters when it began
        self.online_seconds = np.zeros(rows)  # per row: seconds with a quality that is not bad
        self.out_of_range = np.zeros(rows, dtype=np.int64)  # reads outside [range_low, range_high]
        self.rate_violations = np.zeros(rows, dtype=np.int64)  # reads that moved faster than max_rate
        self.ages = np.zeros((rows, len(AGE_EDGES)), dtype=np.uint32)  # timeliness histogram
        self.up_seconds = np.zeros(devices)  # per device: seconds up


class DataQuality:
    """The accumulator over one point table; see the module docstring for how it is driven."""

    def __init__(self, checks: TagChecks, start: float, start_wall: float, interval: float,
                 reads: np.ndarray | None = None):
        self.checks, self.interval = checks, interval
        size, devices = len(checks.names), len(checks.devices)
        reads = np.zeros(size, dtype=np.int64) if reads is None else reads
        self.start, self.start_wall = start, start_wall
        self.period = Window(size, devices, start, reads)
        self.total = Window(size, devices, start, reads)  # folded periods; its reads_base stays at start
        self.period_start_wall = start_wall
        self.last_now = start
        self.seen_reads = reads.astype(np.int64, copy=True)
        self.was_ok = np.zeros(size, dtype=np.bool_)
        self.outside_range = np.zeros(size, dtype=np.bool_)  # the latest read was outside the range
        self.device_up = np.ones(devices, dtype=np.bool_)  # a driver starts up until it declares down
        self.device_mark = np.full(devices, start)  # up time is counted up to here
        self.device_index = {name: i for i, name in enumerate(checks.devices)}
        # the checks run over whole columns: a few vector operations cost less than gathering and
        # scattering a subset of rows, and an unset bound or limit (+-inf) never fires
        self.low = np.nan_to_num(checks.range_low, nan=-np.inf)
        self.high = np.nan_to_num(checks.range_high, nan=np.inf)
        self.checks_range = bool(np.isfinite(self.low).any() or np.isfinite(self.high).any())
        self.checks_rate = bool(np.isfinite(checks.max_rate).any())
        self.checks_frozen = bool(np.isfinite(checks.frozen_after).any())
        self.rate_value = np.full(size, np.nan)  # last good value and its read time, for the rate check
        self.rate_time = np.full(size, np.nan)
        self.frozen_value = np.full(size, np.nan)
        self.changed_at = np.full(size, np.inf)  # read time of the last change; inf before the first read
        self.frozen = np.zeros(size, dtype=np.bool_)
        self._cells = np.empty(AGE_CELLS_WAITING, dtype=np.int64)  # timeliness cells not yet counted
        self._waiting = 0

    # ------------------------------------------------------------------------------ reloads

    ROW_STATE = ("seen_reads", "was_ok", "outside_range", "rate_value", "rate_time", "frozen_value",
                 "changed_at", "frozen")
    WINDOW_ROWS = ("reads_base", "online_seconds", "out_of_range", "rate_violations", "ages")

    def adopt(self, old: DataQuality, old_rows: np.ndarray, new_rows: np.ndarray) -> None:
        """Take over the figures and state of the tags and devices that remain after a reload (rows of
        the old table, rows of the new one): the period and since-start windows go on where they were.
        A tag or device the reload added counts from the reload on, within windows that began before."""
        old._count_ages()
        self.start, self.start_wall, self.last_now = old.start, old.start_wall, old.last_now
        self.period_start_wall = old.period_start_wall
        for name in self.ROW_STATE:
            getattr(self, name)[new_rows] = getattr(old, name)[old_rows]
        self.frozen &= np.isfinite(self.checks.frozen_after)  # detection switched off by the reload
        devices = [(old.device_index[name], index) for name, index in self.device_index.items()
                   if name in old.device_index]
        old_devices = np.array([pair[0] for pair in devices], dtype=np.int64)
        new_devices = np.array([pair[1] for pair in devices], dtype=np.int64)
        self.device_up[new_devices] = old.device_up[old_devices]
        self.device_mark[:] = old.last_now
        self.device_mark[new_devices] = old.device_mark[old_devices]
        for mine, theirs in ((self.period, old.period), (self.total, old.total)):
            mine.start = theirs.start
            for name in self.WINDOW_ROWS:
                getattr(mine, name)[new_rows] = getattr(theirs, name)[old_rows]
            mine.up_seconds[new_devices] = theirs.up_seconds[old_devices]

    # ------------------------------------------------------------------------------ every scan tick

    def observe(self, now: float, now_wall: float, value: np.ndarray, quality: np.ndarray,
                read_at: np.ndarray, reads: np.ndarray) -> list[Event]:
        """Account for the time since the last call and check the reads made since then.

        `now` and `read_at` are monotonic seconds; `reads` counts each row's completed reads (the point
        table's counter). Returns the frozen and unfrozen transitions as events.
        """
        period = self.period
        np.add(period.online_seconds, max(0.0, now - self.last_now), out=period.online_seconds,
               where=self.was_ok)
        self.last_now = now
        ok = quality < QUALITY_BAD_MIN
        self.was_ok = ok
        fresh = reads != self.seen_reads
        np.copyto(self.seen_reads, reads)
        fresh &= ok
        if self.checks_range:
            outside = (value < self.low) | (value > self.high)
            period.out_of_range += fresh & outside
            np.copyto(self.outside_range, outside, where=fresh)
        if self.checks_rate:
            self._check_rate(fresh, value, read_at)
        if self.checks_frozen:
            return self._check_frozen(now, now_wall, fresh, quality, value, read_at)
        return []

    def _check_rate(self, fresh: np.ndarray, value: np.ndarray, read_at: np.ndarray) -> None:
        elapsed = read_at - self.rate_time
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.abs(value - self.rate_value) / elapsed
        # NaN (no earlier read) compares False; a tag without max_rate has an infinite limit
        self.period.rate_violations += fresh & (elapsed > 0) & (rate > self.checks.max_rate)
        np.copyto(self.rate_value, value, where=fresh)
        np.copyto(self.rate_time, read_at, where=fresh)

    def _check_frozen(self, now: float, now_wall: float, fresh: np.ndarray, quality: np.ndarray,
                      value: np.ndarray, read_at: np.ndarray) -> list[Event]:
        np.copyto(self.changed_at, read_at, where=fresh & (value != self.frozen_value))
        np.copyto(self.frozen_value, value, where=fresh)
        # judged only while the value is good: a stale or failed tag is not being read, so not frozen news;
        # a tag without frozen_after (inf) or never read (changed_at inf) is never frozen
        good = quality == Quality.GOOD
        frozen = np.where(good, now - self.changed_at >= self.checks.frozen_after, self.frozen)
        flipped = np.flatnonzero(frozen != self.frozen)
        if not flipped.size:
            return []
        self.frozen = frozen
        return [self._frozen_event(int(row), now, now_wall, float(value[row])) for row in flipped]

    def _frozen_event(self, row: int, now: float, now_wall: float, value: float) -> Event:
        name, checks = self.checks.names[row], self.checks
        device = checks.devices[checks.device[row]] if checks.device[row] >= 0 else ""
        since_wall = now_wall - (now - float(self.changed_at[row]))
        if self.frozen[row]:
            return Event("frozen", now_wall, name,
                         f"{name} unchanged at {value:g} for {now - self.changed_at[row]:.0f} s "
                         f"(frozen_after {checks.frozen_after[row]:g} s)", FROZEN_PRIORITY,
                         {"tag": name, "device": device, "value": value, "unchanged_since": since_wall,
                          "frozen_after": float(checks.frozen_after[row])})
        return Event("unfrozen", now_wall, name, f"{name} changes again ({value:g})", Priority.INFO,
                     {"tag": name, "device": device, "value": value, "changed_at": since_wall})

    # ------------------------------------------------------------------------------ device state

    def device_event(self, event: Event, now: float, now_wall: float) -> None:
        """A `device_down` or `device_up` event; its wall time is taken back onto the monotonic clock
        (the scan sees it a little after the driver raised it). Other events and unknown devices are ignored."""
        index = self.device_index.get(event.source)
        if index is None or event.kind not in ("device_down", "device_up"):
            return
        at = min(now, max(float(self.device_mark[index]), now - (now_wall - event.ts)))
        self._count_up(index, at)
        self.device_up[index] = event.kind == "device_up"

    def _count_up(self, index: int | np.ndarray, at: float) -> None:
        self.period.up_seconds[index] += np.where(self.device_up[index], at - self.device_mark[index], 0.0)
        self.device_mark[index] = at

    # ------------------------------------------------------------------------------ timeliness

    def sent(self, rows: np.ndarray, ages: np.ndarray) -> None:
        """Samples of `rows` handed to the broker `ages` seconds after their gateway timestamp.

        Their histogram cells wait in a buffer and are counted in one `bincount` when it fills or the
        figures are read: fifteen times cheaper than adding each batch into the histogram at once."""
        buckets = np.minimum(np.searchsorted(AGE_EDGES, np.maximum(ages, 0.0)), len(AGE_EDGES) - 1)
        cells = rows * len(AGE_EDGES) + buckets
        if self._waiting + len(cells) > len(self._cells):
            self._count_ages()
        if len(cells) > len(self._cells):
            self._add_cells(cells)
            return
        self._cells[self._waiting:self._waiting + len(cells)] = cells
        self._waiting += len(cells)

    def _count_ages(self) -> None:
        if self._waiting:
            self._add_cells(self._cells[:self._waiting])
            self._waiting = 0

    def _add_cells(self, cells: np.ndarray) -> None:
        histogram = self.period.ages.reshape(-1)
        np.add(histogram, np.bincount(cells, minlength=histogram.size), out=histogram, casting="unsafe")

    # ------------------------------------------------------------------------------ reports

    def due(self, now: float) -> bool:
        return now - self.period.start >= self.interval

    def report(self, now: float, now_wall: float, reads: np.ndarray) -> list[Event]:
        """Close the period: one `data_quality` event per device (its tags in parts of TAGS_PER_EVENT),
        then fold the period into the since-start totals and begin the next one."""
        self._count_up(np.arange(len(self.checks.devices)), now)
        self._count_ages()
        figures = self.figures(now, reads, tags=True)
        events = []
        for device in figures["devices"]:
            tags = device.pop("tags")
            parts = max(1, math.ceil(len(tags) / TAGS_PER_EVENT))
            for part in range(parts):
                data = {**device, "period_start": self.period_start_wall, "period_end": now_wall,
                        "part": part + 1, "parts": parts,
                        "tags": tags[part * TAGS_PER_EVENT:(part + 1) * TAGS_PER_EVENT]}
                events.append(Event("data_quality", now_wall, device["device"], _summary(device), Priority.INFO,
                                    data))
        self._fold(now, reads)
        self.period_start_wall = now_wall
        return events

    def _fold(self, now: float, reads: np.ndarray) -> None:
        period, total = self.period, self.total
        for name in ("online_seconds", "out_of_range", "rate_violations", "ages", "up_seconds"):
            getattr(total, name)[...] += getattr(period, name)
        self.period = Window(len(self.checks.names), len(self.checks.devices), now, reads)

    def figures(self, now: float, reads: np.ndarray, tags: bool = False) -> dict[str, Any]:
        """The figures of the current period and since start, per device (and per tag with `tags`)."""
        self._count_ages()
        checks = self.checks
        up_now = np.where(self.device_up, now - self.device_mark, 0.0)
        period_up = self.period.up_seconds + up_now
        windows = {"period": (self.period, now - self.period.start, period_up,
                              (self.period.online_seconds, self.period.out_of_range, self.period.rate_violations,
                               self.period.ages)),
                   "since_start": (self.total, now - self.start, self.total.up_seconds + period_up,
                                   tuple(getattr(self.total, name) + getattr(self.period, name)
                                         for name in ("online_seconds", "out_of_range", "rate_violations",
                                                      "ages")))}
        per_row = {key: _row_figures(checks, reads - window.reads_base, duration, *arrays, quantiles=tags)
                   for key, (window, duration, _, arrays) in windows.items()}
        devices = []
        for index, name in enumerate(checks.devices):
            rows = np.flatnonzero(checks.device == index)
            device: dict[str, Any] = {"device": name, "up": bool(self.device_up[index]),
                                      "frozen_tags": int(self.frozen[rows].sum()),
                                      "outside_range_tags": int(self.outside_range[rows].sum())}
            for key, (_, duration, up_seconds, _) in windows.items():
                device[key] = _device_figures(per_row[key], rows, duration, float(up_seconds[index]))
            if tags:
                device["tags"] = [self._tag_figures(int(row), per_row) for row in rows]
            devices.append(device)
        return {"interval": self.interval, "period_seconds": now - self.period.start,
                "since_start_seconds": now - self.start, "devices": devices}

    def _tag_figures(self, row: int, per_row: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
        figures: dict[str, Any] = {"tag": self.checks.names[row], "frozen": bool(self.frozen[row]),
                                   "outside_range": bool(self.outside_range[row])}
        for window, arrays in per_row.items():
            figures[window] = {key: _plain(values[row]) for key, values in arrays.items() if key != "ages"}
        return figures

    def flagged(self) -> list[dict[str, Any]]:
        """Tags frozen or outside their range right now (for `gatewayd status`)."""
        rows = np.flatnonzero(self.frozen | self.outside_range)
        return [{"tag": self.checks.names[row], "frozen": bool(self.frozen[row]),
                 "outside_range": bool(self.outside_range[row])} for row in rows.tolist()]


def _row_figures(checks: TagChecks, reads: np.ndarray, duration: float, online_seconds: np.ndarray,
                 out_of_range: np.ndarray, rate_violations: np.ndarray, ages: np.ndarray,
                 quantiles: bool) -> dict[str, np.ndarray]:
    """Per-row figures of one window, vectorised: the report and a scrape compute them once for all tags
    (a scrape, which needs device figures only, skips the per-tag age quantiles)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = duration / checks.interval  # NaN where no read is expected
        completeness = np.minimum(1.0, reads / expected)
        online = online_seconds / duration if duration > 0 else np.full(len(reads), np.nan)
    figures = {"online": online, "reads": reads, "expected_reads": expected, "completeness": completeness,
               "sent": ages.sum(axis=1, dtype=np.int64), "out_of_range": out_of_range,
               "rate_violations": rate_violations, "ages": ages}
    if quantiles:
        figures.update({key: age_quantile(ages, q) for key, q in QUANTILES})
    return figures


def _device_figures(per_row: dict[str, np.ndarray], rows: np.ndarray, duration: float,
                    up_seconds: float) -> dict[str, Any]:
    reads = int(per_row["reads"][rows].sum())
    expected = float(np.nansum(per_row["expected_reads"][rows]))
    ages = per_row["ages"][rows].sum(axis=0, dtype=np.int64)[None, :]
    return {"online": up_seconds / duration if duration > 0 else None, "reads": reads,
            "expected_reads": expected, "completeness": min(1.0, reads / expected) if expected > 0 else None,
            "sent": int(ages.sum()), **{key: _plain(age_quantile(ages, q)[0]) for key, q in QUANTILES},
            "out_of_range": int(per_row["out_of_range"][rows].sum()),
            "rate_violations": int(per_row["rate_violations"][rows].sum())}


def age_quantile(ages: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile age of each histogram row (nearest rank), as the upper edge of the bucket holding
    that sample: never below the exact value, at most one bucket (x1.26) above; NaN for an empty row."""
    counts = ages.sum(axis=1, dtype=np.int64)
    rank = np.maximum(1, np.ceil(q * counts)).astype(np.int64)
    bucket = (np.cumsum(ages, axis=1, dtype=np.int64) < rank[:, None]).sum(axis=1)
    return np.where(counts > 0, AGE_EDGES[np.minimum(bucket, len(AGE_EDGES) - 1)], np.nan)


def _plain(value: Any) -> Any:
    """A JSON-ready number: NaN (nothing to measure) becomes None, integers stay integers."""
    if isinstance(value, (np.integer, int)):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


def _summary(device: dict[str, Any]) -> str:
    period = device["period"]

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f} %"

    return (f"{device['device']}: online {share(period['online'])}, complete {share(period['completeness'])}, "
            f"age p95 {period['age_p95'] if period['age_p95'] is not None else '-'} s, "
            f"{device['frozen_tags']} frozen, {device['outside_range_tags']} outside range")


def rows_by_tag_id(tag_ids: np.ndarray) -> np.ndarray:
    """A lookup from store tag id to point-table row (-1: not in the table), for `DataQuality.sent`."""
    lookup = np.full(int(tag_ids.max(initial=-1)) + 1, -1, dtype=np.int64)
    lookup[tag_ids] = np.arange(len(tag_ids))
    return lookup
