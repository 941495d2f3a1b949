"""Trip demand capture: what an in-service interlock's trip looked like, for the investigation after it.

When an interlock's trip condition becomes true while it is in service (`rules.interlocks` sets
`trip`), the engine records, at the scan that sees it:

- a `trip` event: the value, quality and read time of every tag of the interlock (its trip and cause
  tags, the tags it protects, its final element), and the first-out order of its causes: the causes
  true at the trip, earliest first, each stamped with the read time of the newest reading of its tags
  at the scan it became true (so two causes seen true in one scan are still ordered by their reads);
- `after` seconds later, a `trip_history` event: every distinct read of those tags from `before`
  seconds before the trip to `after` seconds after it, from a ring buffer sampled at most once per
  `interval` seconds of read time (`_sample`), holding only the tags of interlocks with a history;
- with a `final_element`, a `final_element` event: `failed` (priority of `final_element_failed`) when
  its `expect` condition is not true within `within` seconds of the trip (unknown counts as not
  true: nobody can confirm the valve closed), `ok` (info) when it is, with the response time, and
  `failed_cleared` (info) when a failed element acts late;
- with `consequential`, the start of the suppression by design of the listed alarms (the engine).

Every read time these events carry on the wall clock is the point table's own stamp of that read when
the caller passes it (`read_walls`, the table's `gateway_ts`): the very number the read's sample carries
upstream, so a reading in a trip record can be matched to its sample exactly. Converting the monotonic
read time again here would not do: a wall/monotonic pair is two clock calls, and a thread preempted
between them (a loaded machine) shifts the conversion by the time it waited.

A trip while another capture of the same interlock is still collecting its history is recorded as
a trip event (with its own values and first-out) whose history is the one being collected. The
ring and the captures in progress are not saved across a restart: a trip within `after` seconds of
a stop loses its `trip_history` event (its `trip` event was committed with its scan).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.types import Event, Priority
from rules.compile import TripCapturePlan
from rules.expr import UNKNOWN
from rules.model import Interlock, jsonable


@dataclass
class _Capture:
    """One trip whose history is still being collected."""

    interlock: int
    trip_id: str
    mono: float
    wall: float
    until: float  # monotonic: when the history is complete


@dataclass
class _FinalCheck:
    interlock: int
    trip_id: str
    mono: float
    deadline: float
    failed: bool = False


def read_wall_times(rows: Any, read_mono: np.ndarray | None, read_walls: np.ndarray | None, now: float,
                    wall: float) -> np.ndarray:
    """The wall-clock read time of each of `rows`: the point table's stamp when the caller has it, else the
    monotonic read time converted with this scan's clock pair, else (no read times at all) the scan time."""
    if read_walls is not None:
        return np.asarray(read_walls[rows], dtype=np.float64)
    if read_mono is None:
        return np.full(np.shape(rows), wall)
    return wall - (now - read_mono[rows])


class TripRecorder:
    """The trip bookkeeping of one engine; `scan` is called once per evaluation after the kernels."""

    def __init__(self, plan: TripCapturePlan, interlocks: tuple[Interlock, ...],
                 level: Callable[[str], int]):
        self.plan, self.interlocks, self.level = plan, interlocks, level
        k = len(interlocks)
        self.seen = np.zeros(k, np.uint8)  # the trip state at the previous scan
        self.known = np.zeros(k, np.bool_)  # the trip condition has been decided at least once
        self.cause_state = np.zeros(len(plan.cause_slot), np.uint8)
        self.cause_since = np.full(len(plan.cause_slot), math.nan)  # wall read time it became true
        # causes are followed scan by scan, but for a cause that is the trip itself (its only cause), which
        # becomes true at the trip
        own = plan.cause_slot != np.repeat(plan.trip_slot, np.diff(plan.cause_start))
        self.followed = np.flatnonzero(own)
        self.followed_slot = plan.cause_slot[self.followed]
        self.undecided = np.flatnonzero(plan.trip_slot >= 0)  # interlocks whose trip was never decided yet
        self.consequences_until = np.full(k, -math.inf)  # monotonic
        longest = max((before + after for before, after in plan.history), default=0.0)
        # room for the longest window sampled every interval, twice over: trips and completed histories
        # take extra samples of their own
        slots = 2 * int(math.ceil(longest / plan.interval)) + 4 if len(plan.history_rows) else 0
        n = len(plan.history_rows)
        self.ring_value = np.full((slots, n), np.nan)
        self.ring_quality = np.zeros((slots, n), np.uint8)
        self.ring_read = np.full((slots, n), np.nan)  # monotonic time of each sampled read: exact, so equal once read
        self.ring_wall = np.full((slots, n), np.nan)  # the same read's wall-clock time, as the history reports it
        self.ring_next = 0
        self.ring_count = 0
        self.sampled_cell = -math.inf  # the interval of the read-time grid the newest sampled read fell in
        self.column = {int(row): c for c, row in enumerate(plan.history_rows)}
        self.captures: list[_Capture] = []
        self.checks: list[_FinalCheck] = []
        self.count = 0

    def restored(self, trip: np.ndarray) -> None:
        """After a restore: the trip states already known are no new demand."""
        self.seen[:] = trip
        self.known[:] = True
        self.undecided = self.undecided[:0]

    def consequences_active(self, now: float) -> np.ndarray:
        """Per (slot, interlock) pair of the plan: whether the interlock's consequences are suppressed now."""
        return now < self.consequences_until[self.plan.consequential_interlock]

    def scan(self, values: np.ndarray, quality: np.ndarray, read_mono: np.ndarray | None, expr_out: np.ndarray,
             trip: np.ndarray, bypassed: np.ndarray, now: float, wall: float,
             read_walls: np.ndarray | None = None) -> list[Event]:
        """`read_mono` is each row's read time on the monotonic clock (None: the scan time), `read_walls`
        the same reads on the wall clock as the point table stamped them (see `read_wall_times`)."""
        plan = self.plan

        def read_wall(rows: Any) -> np.ndarray:
            return read_wall_times(rows, read_mono, read_walls, now, wall)

        if len(self.followed):
            state = expr_out[self.followed_slot]
            before = self.cause_state[self.followed]
            for c in self.followed[(state == 1) & (before != 1)].tolist():
                self._came_true(c, read_wall, wall)
            self.cause_state[self.followed] = np.where(state == UNKNOWN, before, state)
        tripped = [k for k in np.flatnonzero(trip > self.seen).tolist() if not bypassed[k]]
        due = any(now >= capture.until for capture in self.captures)
        if self.ring_value.shape[0]:
            rows = plan.history_rows
            reads = np.full(len(rows), now) if read_mono is None else read_mono[rows]
            cell = math.floor(float(reads.max()) / plan.interval)
            if cell > self.sampled_cell or tripped or due:
                self._sample(values, quality, reads, read_wall(rows), cell)
        events = []
        for k in tripped:
            events += self._trip(k, values, quality, read_mono, read_walls, read_wall, now, wall)
        self.seen[:] = trip
        if len(self.undecided):
            decided = expr_out[plan.trip_slot[self.undecided]] != UNKNOWN
            self.known[self.undecided[decided]] = True
            self.undecided = self.undecided[~decided]
        events += self._final_elements(expr_out, values, quality, now, wall)
        events += self._histories(now, wall)
        return events

    def _came_true(self, c: int, read_wall: Callable[[Any], np.ndarray], wall: float) -> None:
        """Cause c is true from the newest read of its tags on."""
        rows = list(self.plan.cause_rows[c])
        self.cause_state[c] = 1
        self.cause_since[c] = float(np.max(read_wall(rows))) if rows else wall

    def _sample(self, values: np.ndarray, quality: np.ndarray, reads: np.ndarray, walls: np.ndarray,
                cell: int) -> None:
        """One ring slot: the current reads of the history rows. Sampled when the newest of them falls in a
        later interval of a fixed grid on the read clock than the last sample's (at most one per interval),
        and at trips and completed histories. The grid is on read times, not scan times: a late scan
        followed by a prompt one must not make the second skip a read that came an interval later."""
        slot, rows = self.ring_next, self.plan.history_rows
        self.ring_value[slot], self.ring_quality[slot], self.ring_read[slot] = values[rows], quality[rows], reads
        self.ring_wall[slot] = walls
        self.ring_next = (slot + 1) % self.ring_value.shape[0]
        self.ring_count = min(self.ring_count + 1, self.ring_value.shape[0])
        self.sampled_cell = max(self.sampled_cell, cell)

    def readings(self, k: int, values: np.ndarray, quality: np.ndarray, read_mono: np.ndarray | None, now: float,
                 wall: float, read_walls: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
        """Value, quality and read time (wall clock) of each tag of interlock k, as of this scan."""
        plan = self.plan
        rows = list(plan.rows[k])
        read_at = read_wall_times(rows, read_mono, read_walls, now, wall).tolist()
        return {name: {"value": jsonable(float(values[row])), "quality": int(quality[row]),
                       "read_at": jsonable(at)} for name, row, at in zip(plan.tags[k], rows, read_at)}

    def _trip(self, k: int, values, quality, read_mono, read_walls, read_wall, now: float, wall: float) -> list[Event]:
        il, plan = self.interlocks[k], self.plan
        self.count += 1
        trip_id = f"{il.id}/{self.count}@{wall:.3f}"
        readings = self.readings(k, values, quality, read_mono, now, wall, read_walls)
        causes = range(int(plan.cause_start[k]), int(plan.cause_start[k + 1]))
        if len(causes) == 1 and causes[0] not in self.followed:
            self._came_true(causes[0], read_wall, wall)
        order = sorted((c for c in causes if self.cause_state[c] == 1), key=lambda c: (self.cause_since[c], c))
        first_out = [{"cause": plan.cause_sources[c], "since": jsonable(float(self.cause_since[c]))} for c in order]
        before, after = plan.history[k]
        pending = next((capture for capture in self.captures if capture.interlock == k), None)
        history_id = trip_id
        if pending is not None:
            history_id = pending.trip_id
        elif before > 0 or after > 0:
            self.captures.append(_Capture(k, trip_id, now, wall, now + after))
        data: dict[str, Any] = {
            "interlock": il.id, "unit": il.unit, "trip_id": trip_id, "trip": il.trip.source if il.trip else "",
            "values": readings, "first_out": first_out, "protects": list(il.protects),
            "found_at_start": not bool(self.known[k])}
        if before > 0 or after > 0:
            data["history"] = {"trip_id": history_id, "before": before, "after": after, "interval": plan.interval}
        if il.final_element is not None:
            final = il.final_element
            data["final_element"] = {"tag": final.tag, "expect": final.expect.source, "within": final.within}
            self.checks.append(_FinalCheck(k, trip_id, now, now + final.within))
        if il.consequential is not None:
            self.consequences_until[k] = now + il.consequential.duration
            data["consequential"] = {"alarms": list(il.consequential.alarms),
                                     "until": wall + il.consequential.duration}
        cause = first_out[0]["cause"] if first_out else (il.trip.source if il.trip else "")
        message = f"interlock {il.id} tripped: {cause}" + (f" (first out of {len(first_out)})"
                                                           if len(first_out) > 1 else "")
        return [Event("trip", wall, il.id, message, Priority(self.level("trip")), data)]

    def _final_elements(self, expr_out, values, quality, now: float, wall: float) -> list[Event]:
        events, keep = [], []
        for check in self.checks:
            il = self.interlocks[check.interlock]
            final = il.final_element
            slot = int(self.plan.final_slot[check.interlock])
            acted = expr_out[slot] == 1
            row_value = self._final_reading(check.interlock, values, quality)
            data = {"interlock": il.id, "trip_id": check.trip_id, "tag": final.tag, "expect": final.expect.source,
                    "within": final.within, **row_value}
            if acted:
                took = now - check.mono
                event = "failed_cleared" if check.failed else "ok"
                message = (f"interlock {il.id}: final element {final.tag} acted {took:.1f} s after the trip"
                           + (f", later than the {final.within:g} s allowed" if check.failed else ""))
                events.append(Event("final_element", wall, il.id, message, Priority.INFO,
                                    {**data, "event": event, "acted_after": took}))
                continue
            if not check.failed and now >= check.deadline:
                check.failed = True
                unknown = expr_out[slot] == UNKNOWN
                message = (f"interlock {il.id}: final element {final.tag} did not act within {final.within:g} s "
                           f"of the trip ({final.expect.source} is {'unknown' if unknown else 'false'})")
                events.append(Event("final_element", wall, il.id, message,
                                    Priority(self.level("final_element_failed")),
                                    {**data, "event": "failed", "unknown": bool(unknown)}))
            keep.append(check)
        self.checks = keep
        return events

    def _final_reading(self, k: int, values, quality) -> dict[str, Any]:
        row = self.plan.rows[k][self.plan.tags[k].index(self.interlocks[k].final_element.tag)]
        return {"value": jsonable(float(values[row])), "quality": int(quality[row])}

    def _histories(self, now: float, wall: float) -> list[Event]:
        events, keep = [], []
        for capture in self.captures:
            if now < capture.until:
                keep.append(capture)
                continue
            events.append(self._history_event(capture, wall))
        self.captures = keep
        return events

    def _history_event(self, capture: _Capture, wall: float) -> Event:
        k, plan = capture.interlock, self.plan
        il = self.interlocks[k]
        before, after = plan.history[k]
        start, end = capture.mono - before, capture.mono + after
        size = self.ring_value.shape[0]
        order = (self.ring_next - self.ring_count + np.arange(self.ring_count)) % size  # oldest sample first
        series: dict[str, list[list[Any]]] = {}
        for name, row in zip(plan.tags[k], plan.rows[k]):
            c = self.column[row]
            reads = self.ring_read[order, c]
            inside = (reads >= start) & (reads <= end)  # a NaN (never sampled) read is outside
            inside[1:] &= reads[1:] != reads[:-1]  # the same read sampled twice is one point
            slots = order[inside]
            series[name] = [[read_at, jsonable(value), int(quality)] for read_at, value, quality in zip(
                self.ring_wall[slots, c].tolist(), self.ring_value[slots, c].tolist(),
                self.ring_quality[slots, c].tolist())]
        samples = sum(len(points) for points in series.values())
        message = (f"interlock {il.id}: history of trip {capture.trip_id}, {before:g} s before to {after:g} s "
                   f"after, {samples} readings of {len(series)} tags")
        return Event("trip_history", wall, il.id, message, Priority.INFO,
                     {"interlock": il.id, "trip_id": capture.trip_id, "trip_at": capture.wall, "before": before,
                      "after": after, "interval": plan.interval, "columns": ["read_at", "value", "quality"],
                      "tags": series})
