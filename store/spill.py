"""Keep the scan turning when the disk is full: hold the ticks' rows in memory until the store takes them.

`Spill` stands between the scan and `Store.append`. While appends fail with a full or failing disk
(`is_disk_full`), each tick's samples and events wait here and the store is retried every
`retry_interval` seconds; alarms keep being evaluated because the scan never sees the error. Memory is
bounded: past `max_samples` the oldest waiting samples are dropped, and a `gap` event accounts for
them per tag. Events are never dropped. The outage itself is recorded as a `store_full` event (with
the time it began) and a `store_resumed` event; both are committed, in order, with everything that
waited, in the first transaction that succeeds. Any other store error is raised, as before.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


from core.types import Event, Priority
from store.outbox import Store, is_disk_full
from store.records import SampleBlock
from store.retention import gap_event

log = logging.getLogger("gatewayd.store")

MAX_SAMPLES = 500_000  # ~17 MB of arrays: 10 minutes of 1,000 tags changing every 1.2 s
RETRY_INTERVAL = 1.0


@dataclass
class SpillStats:
    """For metrics: whether the store is failing now, what waits in memory, what was dropped in total."""

    failing: bool = False
    failures: int = 0
    waiting_samples: int = 0
    waiting_events: int = 0
    dropped_samples: int = 0


class Spill:
    def __init__(self, store: Store, max_samples: int = MAX_SAMPLES, retry_interval: float = RETRY_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.store, self.max_samples, self.retry_interval = store, max_samples, retry_interval
        self._monotonic, self._wall = monotonic, wall
        self._blocks: deque[SampleBlock] = deque()
        self._events: list[Event] = []
        self._dropped: dict[int, list[float]] = {}  # tag id -> [count, first ts, last ts]
        self._failed_at: tuple[float, float] | None = None  # (wall, monotonic) of the first failure
        self._cause = ""
        self._next_retry = 0.0
        self.stats = SpillStats()

    def append(self, samples: SampleBlock | None, events: Sequence[Event]) -> None:
        """Commit this tick (and whatever waits) or keep it for later; raises only non-disk errors."""
        if samples is not None and len(samples):
            self._blocks.append(samples)
        self._events.extend(events)
        if self._failed_at is not None and self._monotonic() < self._next_retry:
            self._bound()
            return
        self.flush()

    def flush(self) -> bool:
        """Try to commit everything waiting now; True when nothing waits any more."""
        if not self._blocks and not self._events:
            return True
        samples = SampleBlock.concat(self._blocks) if self._blocks else None
        events = self._events
        if self._failed_at is not None:
            events = [self._outage_event(), *events, *self._gap(), self._resumed_event(samples)]
        try:
            self.store.append(samples, events)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            self._failed(exc)
            self._bound()
            return False
        if self._failed_at is not None:
            log.warning("store writing again after %.1f s; %d samples and %d events that waited in memory "
                        "are committed", self._monotonic() - self._failed_at[1], len(samples or ()),
                        len(self._events))
        self._blocks.clear()
        self._events = []
        self._dropped = {}
        self._failed_at = None
        self._update_stats()
        return True

    def _failed(self, exc: sqlite3.Error) -> None:
        self.stats.failures += 1
        self._next_retry = self._monotonic() + self.retry_interval
        if self._failed_at is None:
            self._failed_at = (self._wall(), self._monotonic())
            self._cause = str(exc)
            log.error("store cannot write (%s); scanning and alarms go on, up to %d samples wait in memory",
                      exc, self.max_samples)

    def _bound(self) -> None:
        """Drop the oldest waiting samples beyond max_samples, remembering per tag what went."""
        waiting = sum(len(block) for block in self._blocks)
        while waiting > self.max_samples and self._blocks:
            block = self._blocks.popleft()
            waiting -= len(block)
            self.stats.dropped_samples += len(block)
            for tag_id, ts in zip(block.tag_id.tolist(), block.ts.tolist()):
                entry = self._dropped.get(tag_id)
                if entry is None:
                    self._dropped[tag_id] = [1, ts, ts]
                else:
                    entry[0] += 1
                    entry[1], entry[2] = min(entry[1], ts), max(entry[2], ts)
        self._update_stats()

    def _update_stats(self) -> None:
        self.stats.failing = self._failed_at is not None
        self.stats.waiting_samples = sum(len(block) for block in self._blocks)
        self.stats.waiting_events = len(self._events)

    def _gap(self) -> list[Event]:
        if not self._dropped:
            return []
        per_tag = [(tag_id, int(count), first, last) for tag_id, (count, first, last) in self._dropped.items()]
        return [gap_event(self._wall(), per_tag, self.store.tag_names(list(self._dropped)), "dropped",
                          f"disk full: more than {self.max_samples} samples waited in memory")]

    def _outage_event(self) -> Event:
        wall, _ = self._failed_at
        return Event("store_full", wall, "store", f"store cannot write: {self._cause}; samples wait in memory",
                     Priority.HIGH, {"error": self._cause, "max_samples_in_memory": self.max_samples})

    def _resumed_event(self, samples: SampleBlock | None) -> Event:
        wall, mono = self._failed_at
        seconds = round(self._monotonic() - mono, 3)
        dropped = int(sum(count for count, _, _ in self._dropped.values()))
        return Event("store_resumed", self._wall(), "store",
                     f"store writing again after {seconds:g} s: {len(samples or ())} samples kept, {dropped} dropped",
                     Priority.INFO, {"seconds": seconds, "kept": len(samples or ()), "dropped": dropped,
                                     "failures": self.stats.failures})
