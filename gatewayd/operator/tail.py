"""`gatewayd tail`: live samples and events, fanned out to each follower as the scan commits them.

The scanner hands every committed tick to `Fanout.publish` (through `Operate.on_commit`), which copies
the matching lines into each subscriber's bounded buffer; a reader slower than the plant loses lines
(and is told how many), never the scan its time.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gatewayd.operator.control import CommandError
from core.types import Event
from core.waits import wait_set

TAIL_CAPACITY = 2000  # lines buffered per subscriber before lines are dropped
MAX_SUBSCRIBERS = 8  # each costs the scan a filter per tick


@dataclass(frozen=True)
class TailFilter:
    """Which lines a subscriber wants: tags matching a glob, tags of one device, events only."""

    tag: str | None = None
    device: str | None = None
    events_only: bool = False

    @classmethod
    def from_request(cls, request: dict[str, Any], devices: Sequence[str]) -> TailFilter:
        tag, device = request.get("tag"), request.get("device")
        for key, value in (("tag", tag), ("device", device)):
            if value is not None and (not isinstance(value, str) or not value):
                raise CommandError(f"{key!r} is a non-empty text")
        if device is not None and device not in devices:
            raise CommandError(f"no device {device!r}; devices: {', '.join(devices) or 'none'}")
        return cls(tag, device, bool(request.get("events_only")))

    def tag_matches(self, tag: Any) -> bool:
        """`tag` is a TagConfig."""
        return ((self.tag is None or fnmatch.fnmatchcase(tag.name, self.tag))
                and (self.device is None or tag.device == self.device))

    def rows(self, table: Any) -> np.ndarray:
        """A mask over the table's rows: the tags whose samples this subscriber wants."""
        if self.events_only:
            return np.zeros(len(table), dtype=np.bool_)
        return np.fromiter((self.tag_matches(tag) for tag in table.tags), dtype=np.bool_, count=len(table))

    def event_matches(self, event: Event, table: Any) -> bool:
        """An event concerns the filter when its source (or the tag it names) is a matching tag, or, for
        a device filter, the device itself."""
        if self.tag is None and self.device is None:
            return True
        names = {event.source}
        tag = event.data.get("tag") if isinstance(event.data, dict) else None
        if isinstance(tag, str):
            names.add(tag)
        if self.device is not None and event.source == self.device and self.tag is None:
            return True
        for name in names:
            row = table.rows.get(name)
            if row is not None and self.tag_matches(table.tags[row]):
                return True
            if row is None and self.device is None and fnmatch.fnmatchcase(name, self.tag):
                return True  # an interlock or unit named by the pattern
        return False


class Subscriber:
    """One tail reader's buffer: at most `capacity` lines; what does not fit is counted, and the count is
    delivered as a `dropped` line right after the lines that did fit."""

    def __init__(self, filter: TailFilter, capacity: int = TAIL_CAPACITY):
        self.filter, self.capacity = filter, capacity
        self.lines: deque[dict[str, Any]] = deque()
        self.dropped = self.dropped_total = 0
        self.ready = asyncio.Event()
        self._mask: np.ndarray | None = None
        self._mask_of: Any = None  # the table the mask was computed for (a reload makes a new one)

    def mask(self, table: Any) -> np.ndarray:
        if self._mask_of is not table:
            self._mask, self._mask_of = self.filter.rows(table), table
        return self._mask

    @property
    def room(self) -> int:
        return max(0, self.capacity - len(self.lines))

    def offer(self, lines: Sequence[dict[str, Any]], more: int = 0) -> None:
        """Queue what fits of `lines`; the rest and `more` lines not even built count as dropped."""
        fitting = lines[:self.room]
        self.lines.extend(fitting)
        lost = len(lines) - len(fitting) + more
        self.dropped += lost
        self.dropped_total += lost
        if fitting or lost:
            self.ready.set()

    def take(self) -> list[dict[str, Any]]:
        lines = list(self.lines)
        self.lines.clear()
        if self.dropped:
            lines.append({"type": "dropped", "count": self.dropped})
            self.dropped = 0
        self.ready.clear()
        return lines

    async def next(self, timeout: float) -> list[dict[str, Any]]:
        """The lines queued since the last call; an empty list after `timeout` seconds without any."""
        if not self.lines and not self.dropped and not await wait_set(self.ready, timeout):
            return []
        return self.take()


def sample_line(table: Any, row: int, samples: Any, index: int) -> dict[str, Any]:
    tag = table.tags[row]
    value = float(samples.value[index])
    return {"type": "sample", "tag": tag.name, "device": tag.device, "ts": float(samples.ts[index]),
            "value": None if math.isnan(value) else value, "unit": tag.unit,
            "quality": int(samples.quality[index])}


def event_line(event: Event) -> dict[str, Any]:
    return {"type": "event", "kind": event.kind, "source": event.source, "ts": event.ts,
            "priority": int(event.priority), "message": event.message}


class Fanout:
    """Delivers each committed tick to the tail subscribers. Called on the scan's path: with nobody
    subscribed it costs one test; with subscribers, one mask lookup each and at most `room` lines built."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def subscribe(self, filter: TailFilter, capacity: int = TAIL_CAPACITY) -> Subscriber:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise CommandError(f"already {MAX_SUBSCRIBERS} tails follow this gateway; end one first")
        subscriber = Subscriber(filter, capacity)
        self.subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)

    def publish(self, table: Any, rows: np.ndarray | None, samples: Any, events: Sequence[Event]) -> None:
        built: dict[int, dict[str, Any]] = {}  # a line is built once, however many subscribers want it
        for subscriber in self.subscribers:
            lines = [event_line(event) for event in events if subscriber.filter.event_matches(event, table)]
            more = 0
            if rows is not None and len(rows) and not subscriber.filter.events_only:
                picked = np.nonzero(subscriber.mask(table)[rows])[0].tolist()
                room = max(0, subscriber.room - len(lines))
                for i in picked[:room]:
                    line = built.get(i)
                    if line is None:
                        line = built[i] = sample_line(table, int(rows[i]), samples, i)
                    lines.append(line)
                more = max(0, len(picked) - room)
            if lines or more:
                subscriber.offer(lines, more)
